import { useEffect, useState } from "react";
import { useLocation } from "react-router";
import { loadProviders, oauthLoginUrl, rememberReturn, type OAuthProvider } from "../lib/oauth";
import { confirmNeed, hasPassword, reauthProviders, type ConfirmNeed } from "../lib/reauth";
import type { Me } from "../lib/types";
import { useSession } from "../store/session";
import { ErrorBanner } from "./ui/misc";

/** A sensitive form's confirmation: whether to ask for the password, and what a refused
 * confirmation said. `handle(error)` is true when the error was that (and is now shown). */
export function useConfirmation(user: Me) {
  const loadMe = useSession((s) => s.loadMe);
  const [need, setNeed] = useState<ConfirmNeed | null>(null);
  return {
    need,
    askPassword: hasPassword(user) || need?.kind === "password",
    clear: () => setNeed(null),
    handle(error: unknown): boolean {
      const found = confirmNeed(error);
      setNeed(found);
      if (found?.kind === "password") void loadMe(); // a password was set elsewhere
      return found !== null;
    },
  };
}

/** What `useConfirmation` found, shown above the form. */
export function ConfirmNotice({ need, user }: { need: ConfirmNeed | null; user: Me }) {
  if (!need) return null;
  if (need.kind === "password") return <ErrorBanner message={need.message} />;
  return <ReauthNotice message={need.message} linked={user.oauth_providers} />;
}

/** The server's "sign in again" message with a button per linked provider; the sign-in
 * comes back to this page, where the action can be retried. */
export function ReauthNotice({ message, linked }: { message: string; linked: string[] | undefined }) {
  const location = useLocation();
  const [configured, setConfigured] = useState<OAuthProvider[]>([]);
  useEffect(() => {
    let live = true;
    void loadProviders().then((list) => live && setConfigured(list));
    return () => {
      live = false;
    };
  }, []);
  const providers = reauthProviders(linked, configured);
  return (
    <div role="alert" data-testid="reauth-required" className="space-y-2 rounded-md border border-amber-500/40 bg-amber-500/10 p-3 text-sm">
      <p>{message}</p>
      <div className="flex flex-wrap gap-2">
        {providers.map((p) => (
          <a
            key={p.name}
            href={oauthLoginUrl(p.name)}
            onClick={() => rememberReturn(location.pathname)}
            data-testid={`reauth-${p.name}`}
            className="inline-flex h-8 items-center rounded-md border border-border bg-background px-3 font-medium hover:bg-accent focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-ring"
          >
            Sign in again with {p.label}
          </a>
        ))}
      </div>
    </div>
  );
}
