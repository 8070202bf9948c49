import { useState, type FormEvent } from "react";
import { useNavigate } from "react-router";
import { client, describeError, saveDownload, unwrap } from "../../lib/api";
import { Button } from "../../components/ui/button";
import { Field, Input } from "../../components/ui/input";
import { Card, ErrorBanner } from "../../components/ui/misc";
import { ConfirmNotice, useConfirmation } from "../../components/ReauthNotice";
import { AccountSwitch } from "../../components/AccountSwitch";
import { useSession } from "../../store/session";

/** "Use my feedback to improve the model": on by default, one click turns it off. */
function FeedbackConsentCard() {
  const user = useSession((s) => s.user)!;
  const setUser = useSession((s) => s.setUser);
  return (
    <Card title="Improve the model">
      <AccountSwitch
        testId="feedback-consent"
        on={user.feedback_for_training ?? true}
        label="Use my feedback to improve the model"
        description="Your thumbs up and down, comments, regenerated answers and edited questions may train the next model, with e-mail addresses and phone numbers removed. Off: none of it is used, including what you gave before."
        save={async (next) =>
          setUser(
            await unwrap(
              client.PUT("/api/v1/users/me/feedback-consent", { body: { feedback_for_training: next } }),
            ),
          )
        }
      />
    </Card>
  );
}

export function DataPage() {
  const user = useSession((s) => s.user)!;
  const reset = useSession((s) => s.reset);
  const navigate = useNavigate();
  const [password, setPassword] = useState("");
  const [code, setCode] = useState("");
  const [confirm, setConfirm] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [exportError, setExportError] = useState<string | null>(null);
  const confirmation = useConfirmation(user);

  async function erase(e: FormEvent) {
    e.preventDefault();
    setError(null);
    confirmation.clear();
    if (confirmation.askPassword && !password) return setError("Enter your password.");
    if (user.totp_enabled && !/^\d{6}$/.test(code.trim())) return setError("Enter the 6-digit code from your authenticator app.");
    if (confirm !== "DELETE") return setError("Type DELETE to confirm.");
    try {
      await client.DELETE("/api/v1/users/me", {
        body: {
          ...(confirmation.askPassword ? { password } : {}),
          ...(user.totp_enabled ? { totp_code: code.trim() } : {}),
        },
      });
      reset();
      navigate("/login", { replace: true });
    } catch (err) {
      if (!confirmation.handle(err)) setError(describeError(err));
    }
  }

  return (
    <div className="space-y-4">
      <FeedbackConsentCard />
      <Card title="Export your data">
        <p className="mb-3 text-sm text-muted-foreground">
          One JSON file with everything held about you: account, folders, chats and messages, feedback, share links, API
          keys (no secrets), credits and usage.
        </p>
        <ErrorBanner message={exportError} />
        <Button
          data-testid="export-data"
          onClick={() => saveDownload(client.GET("/api/v1/users/me/export", { parseAs: "blob" }), "orchard-data.json").catch((e) => setExportError(describeError(e)))}
        >
          Download my data
        </Button>
      </Card>
      <Card title="Delete account" className="border-destructive/40">
        <p className="mb-3 text-sm text-muted-foreground">
          This erases your chats, folders, API keys and profile at once and cannot be undone. The credit ledger and usage
          counts stay, without personal data.
        </p>
        <form onSubmit={erase} className="space-y-3" noValidate>
          <ErrorBanner message={error} />
          <ConfirmNotice need={confirmation.need} user={user} />
          {confirmation.askPassword ? (
            <Field label="Password">
              {(p) => <Input {...p} type="password" autoComplete="current-password" data-testid="delete-password" value={password} onChange={(e) => setPassword(e.target.value)} />}
            </Field>
          ) : (
            <p className="text-sm text-muted-foreground" data-testid="delete-no-password">
              Your account has no password, so deleting it needs a recent sign-in with your provider.
            </p>
          )}
          {user.totp_enabled && (
            <Field label="Authenticator code">
              {(p) => <Input {...p} inputMode="numeric" maxLength={6} data-testid="delete-totp" value={code} onChange={(e) => setCode(e.target.value)} />}
            </Field>
          )}
          <Field label="Type DELETE to confirm">
            {(p) => <Input {...p} data-testid="delete-confirm" value={confirm} onChange={(e) => setConfirm(e.target.value)} />}
          </Field>
          <Button type="submit" variant="destructive" data-testid="delete-account">
            Delete my account
          </Button>
        </form>
      </Card>
    </div>
  );
}
