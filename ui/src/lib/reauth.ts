// Confirming a sensitive action (deleting the account, turning 2FA off, changing or setting
// the password; platform_api/reauth.py): an account with a password gives it; one without
// (made by an OAuth sign-in) needs a sign-in at its provider in the last few minutes, and
// the server answers 403 `reauth_required` saying so.
import { ApiError } from "./api";
import type { OAuthProvider } from "./oauth";
import type { User } from "./types";

/** Whether the account confirms with its password (an older server does not say: yes). */
export const hasPassword = (user: Pick<User, "has_password">) => user.has_password !== false;

export type ConfirmNeed =
  /** sign in again at a provider, then retry: `message` is the server's */
  | { kind: "reauth"; message: string }
  /** the account has a password after all (set in another tab): ask for it */
  | { kind: "password"; message: string };

/** What a refused confirmation asks for; null for any other error. */
export function confirmNeed(error: unknown): ConfirmNeed | null {
  if (!(error instanceof ApiError) || error.status !== 403) return null;
  if (error.code === "reauth_required") return { kind: "reauth", message: error.detail };
  if (error.code === "password_required")
    return { kind: "password", message: "This account has a password: enter it to confirm." };
  return null;
}

/** The providers to sign in again with: the account's linked ones (last used first) with
 * the server's labels; every configured one when none of those is configured. */
export function reauthProviders(linked: string[] | undefined, configured: OAuthProvider[]): OAuthProvider[] {
  const byName = new Map(configured.map((p) => [p.name, p]));
  const mine = (linked ?? []).flatMap((name) => byName.get(name) ?? []);
  return mine.length ? mine : configured;
}
