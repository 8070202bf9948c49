import { useState, type FormEvent } from "react";
import { client, describeError, unwrap } from "../../lib/api";
import { copyText } from "../../lib/clipboard";
import type { TotpSetup } from "../../lib/types";
import { Button } from "../../components/ui/button";
import { Field, Input } from "../../components/ui/input";
import { Badge, Card, ErrorBanner } from "../../components/ui/misc";
import { QrCode } from "../../components/QrCode";
import { ConfirmNotice, useConfirmation } from "../../components/ReauthNotice";
import { useSession } from "../../store/session";
import { toast } from "../../store/toasts";

const CODE = /^\d{6}$/;

export function SecurityPage() {
  const user = useSession((s) => s.user)!;
  const setUser = useSession((s) => s.setUser);
  const [setup, setSetup] = useState<TotpSetup | null>(null);
  const [code, setCode] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const confirmation = useConfirmation(user);

  async function start() {
    setError(null);
    try {
      setSetup(await unwrap(client.POST("/api/v1/auth/totp/setup")));
    } catch (e) {
      setError(describeError(e));
    }
  }

  async function enable(e: FormEvent) {
    e.preventDefault();
    if (!CODE.test(code.trim())) return setError("Enter the 6 digits your authenticator app shows.");
    try {
      setUser(await unwrap(client.POST("/api/v1/auth/totp/enable", { body: { code: code.trim() } })));
      setSetup(null);
      setCode("");
      setError(null);
      toast("Two-factor authentication is on.", "success");
    } catch (err) {
      setError(describeError(err));
    }
  }

  async function disable(e: FormEvent) {
    e.preventDefault();
    setError(null);
    confirmation.clear();
    if (confirmation.askPassword && !password) return setError("Enter your password.");
    if (!CODE.test(code.trim())) return setError("Enter the 6 digits your authenticator app shows.");
    try {
      const body = { ...(confirmation.askPassword ? { password } : {}), code: code.trim() };
      setUser(await unwrap(client.POST("/api/v1/auth/totp/disable", { body })));
      setCode("");
      setPassword("");
      toast("Two-factor authentication is off.", "success");
    } catch (err) {
      if (!confirmation.handle(err)) setError(describeError(err));
    }
  }

  return (
    <Card
      title="Two-factor authentication (TOTP)"
      actions={<Badge data-testid="totp-status">{user.totp_enabled ? "On" : "Off"}</Badge>}
    >
      <div className="space-y-4">
        <ErrorBanner message={error} />
        {!user.totp_enabled && !setup && (
          <>
            <p className="text-sm text-muted-foreground">
              With two-factor authentication, logging in needs a code from an authenticator app as well as your password.
            </p>
            <Button onClick={start} data-testid="totp-setup">
              Set up two-factor authentication
            </Button>
          </>
        )}
        {!user.totp_enabled && setup && (
          <form onSubmit={enable} className="space-y-3" noValidate>
            <p className="text-sm">Scan the QR code with your authenticator app (or enter the secret by hand), then enter the code it shows.</p>
            <div className="flex flex-col gap-4 sm:flex-row sm:items-start">
              <QrCode text={setup.otpauth_uri} label="QR code of the otpauth URI for your authenticator app" />
              <div className="min-w-0 flex-1 space-y-3">
                <div className="space-y-1">
                  <div className="text-sm font-medium">Secret</div>
                  <div className="flex items-center gap-2">
                    <code data-testid="totp-secret" className="rounded bg-muted px-2 py-1 font-mono text-sm break-all">
                      {setup.secret}
                    </code>
                    <Button size="sm" variant="outline" onClick={() => copyText(setup.secret).then((ok) => ok && toast("Secret copied."))}>
                      Copy
                    </Button>
                  </div>
                </div>
                <div className="space-y-1">
                  <div className="text-sm font-medium">otpauth URI</div>
                  <code data-testid="totp-uri" className="block rounded bg-muted px-2 py-1 font-mono text-xs break-all">
                    {setup.otpauth_uri}
                  </code>
                </div>
              </div>
            </div>
            <Field label="Code from the app">
              {(p) => (
                <Input {...p} data-testid="totp-enable-code" inputMode="numeric" maxLength={6} autoComplete="one-time-code" value={code} onChange={(e) => setCode(e.target.value)} />
              )}
            </Field>
            <Button type="submit" data-testid="totp-enable">
              Turn on
            </Button>
          </form>
        )}
        {user.totp_enabled && (
          <form onSubmit={disable} className="space-y-3" noValidate>
            <ConfirmNotice need={confirmation.need} user={user} />
            <p className="text-sm text-muted-foreground">
              {confirmation.askPassword
                ? "To turn two-factor authentication off, confirm with your password and a code."
                : "To turn two-factor authentication off, enter a code; your account has no password, so this also needs a recent sign-in with your provider."}
            </p>
            {confirmation.askPassword && (
              <Field label="Password">
                {(p) => <Input {...p} type="password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.target.value)} />}
              </Field>
            )}
            <Field label="Code from the app">
              {(p) => <Input {...p} inputMode="numeric" maxLength={6} autoComplete="one-time-code" value={code} onChange={(e) => setCode(e.target.value)} />}
            </Field>
            <Button type="submit" variant="destructive">
              Turn off
            </Button>
          </form>
        )}
      </div>
    </Card>
  );
}
