import { useEffect, useState, type FormEvent, type ReactNode } from "react";
import { Link, useNavigate } from "react-router";
import { DISPLAY_NAME_MAX, PASSWORD_MAX, PASSWORD_MIN } from "../api/limits";
import { ApiError, describeError, publicClient, unwrap } from "../lib/api";
import { Button } from "../components/ui/button";
import { Field, Input } from "../components/ui/input";
import { ErrorBanner } from "../components/ui/misc";
import { describeOAuthError, fragmentParam, loadProviders, oauthLoginUrl, type OAuthProvider } from "../lib/oauth";
import { useSession } from "../store/session";

export function AuthShell({ title, children, footer }: { title: string; children: ReactNode; footer: ReactNode }) {
  return (
    <main className="grid min-h-dvh place-items-center p-4">
      <div className="w-full max-w-sm space-y-6">
        <div className="flex flex-col items-center gap-2">
          <img src="/icons/icon.svg" alt="" className="size-12" />
          <h1 className="text-2xl font-semibold">{title}</h1>
        </div>
        <div className="rounded-lg border border-border bg-card p-5 shadow-sm">{children}</div>
        <p className="text-center text-sm text-muted-foreground">{footer}</p>
      </div>
    </main>
  );
}

/** "Continue with …" per configured provider: a full-page navigation to the API, which
 * sends the browser on to the provider. Nothing shows when none is configured. */
export function OAuthButtons() {
  const [providers, setProviders] = useState<OAuthProvider[]>([]);
  useEffect(() => {
    let live = true;
    void loadProviders().then((list) => live && setProviders(list));
    return () => {
      live = false;
    };
  }, []);
  if (!providers.length) return null;
  return (
    <div className="mt-4 space-y-2" data-testid="oauth-providers">
      <div className="flex items-center gap-2 text-xs text-muted-foreground" aria-hidden>
        <span className="h-px flex-1 bg-border" />
        or
        <span className="h-px flex-1 bg-border" />
      </div>
      {providers.map((p) => (
        <a
          key={p.name}
          href={oauthLoginUrl(p.name)}
          data-testid={`oauth-${p.name}`}
          className="flex h-9 w-full items-center justify-center rounded-md border border-border bg-background text-sm font-medium hover:bg-accent focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-ring"
        >
          Continue with {p.label}
        </a>
      ))}
    </div>
  );
}

/** The `#oauth_error=<code>` a failed provider sign-in lands with, read once and dropped
 * from the address bar. */
function takeOAuthError(): string | null {
  const code = fragmentParam(window.location.hash, "oauth_error");
  if (code) window.history.replaceState(window.history.state, "", window.location.pathname + window.location.search);
  return code ? describeOAuthError(code) : null;
}

export function LoginPage() {
  const navigate = useNavigate();
  const login = useSession((s) => s.login);
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [totp, setTotp] = useState("");
  const [needTotp, setNeedTotp] = useState(false);
  const [error, setError] = useState<string | null>(takeOAuthError);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setError(null);
    if (needTotp && !/^\d{6}$/.test(totp.trim())) {
      setError("Enter the 6 digits from your authenticator app.");
      return;
    }
    setBusy(true);
    try {
      const pair = await unwrap(
        publicClient.POST("/api/v1/auth/login", {
          body: { email: email.trim(), password, ...(needTotp ? { totp_code: totp.trim() } : {}) },
        }),
      );
      await login(pair);
      navigate("/", { replace: true });
    } catch (err) {
      if (err instanceof ApiError && err.code === "totp_required") {
        setNeedTotp(true);
        setError(null);
      } else if (err instanceof ApiError && err.errors.length) {
        setError(err.errors.map((x) => `${x.field}: ${x.message}`).join("; "));
      } else {
        setError(describeError(err));
      }
    } finally {
      setBusy(false);
    }
  }

  return (
    <AuthShell
      title="Log in to Orchard"
      footer={
        <>
          No account?{" "}
          <Link to="/register" className="text-primary underline" data-testid="register-link">
            Register
          </Link>
        </>
      }
    >
      <form onSubmit={submit} className="space-y-4" noValidate>
        <ErrorBanner message={error} />
        <Field label="E-mail">
          {(p) => (
            <Input {...p} data-testid="email" type="email" autoComplete="email" required value={email} onChange={(e) => setEmail(e.target.value)} />
          )}
        </Field>
        <Field label="Password">
          {(p) => (
            <Input
              {...p}
              data-testid="password"
              type="password"
              autoComplete="current-password"
              required
              value={password}
              onChange={(e) => setPassword(e.target.value)}
            />
          )}
        </Field>
        {needTotp && (
          <TotpField value={totp} onChange={setTotp} />
        )}
        <Button type="submit" className="w-full" disabled={busy} data-testid="login-submit">
          {busy ? "Logging in…" : "Log in"}
        </Button>
      </form>
      <OAuthButtons />
    </AuthShell>
  );
}

/** The 6-digit code a sign-in asks for when the account has two-factor authentication. */
export function TotpField({ value, onChange }: { value: string; onChange: (value: string) => void }) {
  return (
    <Field label="Authenticator code" hint="Two-factor authentication is on: enter the 6-digit code.">
      {(p) => (
        <Input
          {...p}
          data-testid="totp-code"
          inputMode="numeric"
          autoComplete="one-time-code"
          pattern="\d{6}"
          maxLength={6}
          autoFocus
          value={value}
          onChange={(e) => onChange(e.target.value)}
        />
      )}
    </Field>
  );
}

export function RegisterPage() {
  const navigate = useNavigate();
  const login = useSession((s) => s.login);
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [name, setName] = useState("");
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setError(null);
    const local: Record<string, string> = {};
    if (!/^\S+@\S+\.\S+$/.test(email.trim())) local.email = "Enter a valid e-mail address.";
    if (password.length < PASSWORD_MIN) local.password = `The password needs at least ${PASSWORD_MIN} characters.`;
    else if (password.length > PASSWORD_MAX) local.password = `The password is at most ${PASSWORD_MAX} characters.`;
    if (name.trim().length > DISPLAY_NAME_MAX)
      local.display_name = `The display name is at most ${DISPLAY_NAME_MAX} characters.`;
    setErrors(local);
    if (Object.keys(local).length) return;
    setBusy(true);
    try {
      await publicClient.POST("/api/v1/auth/register", {
        body: { email: email.trim(), password, display_name: name.trim() },
      });
      const pair = await unwrap(publicClient.POST("/api/v1/auth/login", { body: { email: email.trim(), password } }));
      await login(pair);
      navigate("/", { replace: true });
    } catch (err) {
      if (err instanceof ApiError && err.errors.length) {
        setErrors(Object.fromEntries(err.errors.map((x) => [x.field, x.message])));
        setError(err.detail);
      } else setError(describeError(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <AuthShell
      title="Create an account"
      footer={
        <>
          Have an account?{" "}
          <Link to="/login" className="text-primary underline">
            Log in
          </Link>
        </>
      }
    >
      <form onSubmit={submit} className="space-y-4" noValidate>
        <ErrorBanner message={error} />
        <Field label="E-mail" error={errors.email}>
          {(p) => <Input {...p} data-testid="email" type="email" autoComplete="email" value={email} onChange={(e) => setEmail(e.target.value)} />}
        </Field>
        <Field label="Password" error={errors.password} hint={`${PASSWORD_MIN} to ${PASSWORD_MAX} characters.`}>
          {(p) => (
            <Input
              {...p}
              data-testid="password"
              type="password"
              autoComplete="new-password"
              value={password}
              onChange={(e) => setPassword(e.target.value)}
            />
          )}
        </Field>
        <Field label="Display name (optional)" error={errors.display_name}>
          {(p) => <Input {...p} data-testid="display-name" autoComplete="nickname" value={name} onChange={(e) => setName(e.target.value)} />}
        </Field>
        <Button type="submit" className="w-full" disabled={busy} data-testid="register-submit">
          {busy ? "Creating…" : "Create account"}
        </Button>
      </form>
    </AuthShell>
  );
}
