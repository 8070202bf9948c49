// Sign-in with an OAuth provider (platform_api/routes/oauth.py): the providers list, the
// one-time code the callback page exchanges, and what an `oauth_error` means to a person.
import type { paths } from "../api/schema";
import { publicClient, unwrap } from "./api";
import type { OAuthProvider, TokenPair } from "./types";

export type { OAuthProvider };

/** A full-page link (the provider redirects back), not a client call; the path is checked. */
const LOGIN_PATH = "/api/v1/auth/oauth/{name}/login" satisfies keyof paths;
export const oauthLoginUrl = (name: string) => LOGIN_PATH.replace("{name}", encodeURIComponent(name));

/** The configured providers; none (no buttons) when the server has none or cannot say. */
export async function loadProviders(): Promise<OAuthProvider[]> {
  try {
    const list = await unwrap(publicClient.GET("/api/v1/auth/oauth/providers"));
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

/** One exchange per code: the code is single use, and React's StrictMode runs effects
 * twice in development; a second POST of the same code would fail. */
const exchanges = new Map<string, Promise<TokenPair>>();
export function exchangeCode(code: string, totpCode?: string): Promise<TokenPair> {
  const key = `${code}\n${totpCode ?? ""}`;
  let pending = exchanges.get(key);
  if (!pending) {
    pending = unwrap(
      publicClient.POST("/api/v1/auth/oauth/exchange", { body: totpCode ? { code, totp_code: totpCode } : { code } }),
    );
    exchanges.set(key, pending);
    // a failed try (a wrong TOTP code) may be retried with another
    pending.catch(() => exchanges.delete(key));
  }
  return pending;
}

/** A value of the URL fragment (`#code=…&x=…`), which servers never see nor log. */
export function fragmentParam(hash: string, name: string): string | null {
  return new URLSearchParams(hash.replace(/^#/, "")).get(name);
}

const OAUTH_ERRORS: Record<string, string> = {
  access_denied: "The sign-in was cancelled at the provider.",
  invalid_state: "The sign-in took too long or was started in another tab. Please try again.",
  provider_unavailable: "The sign-in provider cannot be reached right now. Try again later, or log in with your password.",
  provider_error: "The sign-in provider answered with an error. Please try again.",
  invalid_id_token: "The sign-in provider's answer could not be verified. Please try again.",
  email_missing: "The provider did not share an e-mail address, which Orchard needs for your account.",
  email_unverified:
    "An account with this e-mail already exists, and the provider has not verified the address: log in with your password, or verify the e-mail at the provider first.",
  account_banned: "This account is banned: contact an administrator.",
  account_suspended: "This account is suspended: contact an administrator.",
  account_deleted: "This account was deleted.",
  invalid_oauth_code: "The sign-in link expired or was already used: sign in with the provider again.",
  oauth_code_reused:
    "This sign-in link had already been used, so the session it opened was ended to be safe: sign in with the provider again.",
};

export function describeOAuthError(code: string): string {
  return OAUTH_ERRORS[code] ?? `The sign-in with the provider failed (${code}). Please try again.`;
}

// Where the callback goes after a sign-in started to confirm an action (account pages):
// back to that page rather than to the chat. Only a path of this app is taken.
const RETURN_KEY = "orchard.oauth.return";

export function rememberReturn(path: string): void {
  try {
    sessionStorage.setItem(RETURN_KEY, path);
  } catch {
    /* storage off: the callback goes to / */
  }
}

export function takeReturn(): string {
  let path: string | null = null;
  try {
    path = sessionStorage.getItem(RETURN_KEY);
    sessionStorage.removeItem(RETURN_KEY);
  } catch {
    /* storage off */
  }
  return path && /^\/(?![/\\])/.test(path) ? path : "/";
}
