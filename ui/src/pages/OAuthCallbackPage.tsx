import { useEffect, useState, type FormEvent } from "react";
import { Link, useNavigate } from "react-router";
import { ApiError, describeError } from "../lib/api";
import { describeOAuthError, exchangeCode, fragmentParam, takeReturn } from "../lib/oauth";
import { Button } from "../components/ui/button";
import { ErrorBanner, Spinner } from "../components/ui/misc";
import { useSession } from "../store/session";
import { AuthShell, TotpField } from "./AuthPages";

/** Reads the code once and drops it from the address bar (and so from the history). */
function takeCode(): string | null {
  const code = fragmentParam(window.location.hash, "code");
  if (window.location.hash) window.history.replaceState(window.history.state, "", window.location.pathname);
  return code;
}

/** /oauth/callback#code=…: the provider flow's end. The one-time code becomes a session,
 * after a TOTP code when the account has two-factor authentication on. */
export default function OAuthCallbackPage() {
  const navigate = useNavigate();
  const login = useSession((s) => s.login);
  const [code] = useState(takeCode);
  const [needTotp, setNeedTotp] = useState(false);
  const [totp, setTotp] = useState("");
  const [error, setError] = useState<string | null>(code ? null : "This page needs a sign-in code: sign in with the provider again.");
  const [busy, setBusy] = useState(false);

  async function exchange(totpCode?: string) {
    if (!code) return;
    setBusy(true);
    try {
      await login(await exchangeCode(code, totpCode));
      navigate(takeReturn(), { replace: true });
    } catch (err) {
      if (err instanceof ApiError && err.code === "totp_required") {
        setNeedTotp(true);
        setError(null);
      } else if (err instanceof ApiError && (err.code === "invalid_oauth_code" || err.code === "oauth_code_reused")) {
        setNeedTotp(false);
        setError(describeOAuthError(err.code));
      } else if (err instanceof ApiError && err.code.startsWith("account_")) {
        setError(describeOAuthError(err.code));
      } else setError(describeError(err));
    } finally {
      setBusy(false);
    }
  }

  useEffect(() => {
    void exchange();
    // once, for the code this page was opened with
  }, []);

  function submit(e: FormEvent) {
    e.preventDefault();
    if (!/^\d{6}$/.test(totp.trim())) return setError("Enter the 6 digits from your authenticator app.");
    setError(null);
    void exchange(totp.trim());
  }

  return (
    <AuthShell
      title="Signing in"
      footer={
        <Link to="/login" className="text-primary underline">
          Back to log in
        </Link>
      }
    >
      <div className="space-y-4">
        <ErrorBanner message={error} />
        {needTotp ? (
          <form onSubmit={submit} className="space-y-4" noValidate>
            <TotpField value={totp} onChange={setTotp} />
            <Button type="submit" className="w-full" disabled={busy} data-testid="oauth-totp-submit">
              {busy ? "Signing in…" : "Sign in"}
            </Button>
          </form>
        ) : (
          busy && <Spinner label="Signing you in" />
        )}
      </div>
    </AuthShell>
  );
}
