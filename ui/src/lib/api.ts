// The platform API client. `client` is openapi-fetch over the paths and types generated
// from the API's OpenAPI document (src/api/, `make ui-client`): a path, its parameters,
// its body and its answer are checked by tsc. Underneath, one transport: bearer tokens
// kept in localStorage, one refresh (single-flight: refresh tokens rotate and a reused one
// revokes the session) and one retry on an expired access token, then back to /login; any
// answer that is not 2xx throws ApiError, so a call's `data` is its success body.

import createClient from "openapi-fetch";
import type { paths } from "../api/schema";
import { formatWait } from "./billing";
import type { TokenPair } from "./types";

const ACCESS_KEY = "orchard.access_token";
const REFRESH_KEY = "orchard.refresh_token";

export interface FieldError {
  field: string;
  message: string;
}

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly detail: string;
  readonly errors: FieldError[];
  /** Seconds to wait, from a 429's Retry-After header. */
  readonly retryAfter: number | null;
  /** The rest of the JSON body (a 502 serving_failed carries the saved `message`). */
  readonly body: Record<string, unknown>;

  constructor(
    status: number,
    code: string,
    detail: string,
    errors: FieldError[] = [],
    retryAfter: number | null = null,
    body: Record<string, unknown> = {},
  ) {
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.errors = errors;
    this.retryAfter = retryAfter;
    this.body = body;
  }
}

// -- tokens ------------------------------------------------------------------------------
export const tokens = {
  get access(): string | null {
    return localStorage.getItem(ACCESS_KEY);
  },
  get refresh(): string | null {
    return localStorage.getItem(REFRESH_KEY);
  },
  set(pair: Pick<TokenPair, "access_token" | "refresh_token">) {
    localStorage.setItem(ACCESS_KEY, pair.access_token);
    localStorage.setItem(REFRESH_KEY, pair.refresh_token);
  },
  clear() {
    localStorage.removeItem(ACCESS_KEY);
    localStorage.removeItem(REFRESH_KEY);
  },
};

let onAuthLost: () => void = () => {
  if (typeof window !== "undefined" && window.location.pathname !== "/login") {
    window.location.assign("/login");
  }
};

/** The app registers how to go to /login (a router navigation) when the session ends. */
export function setAuthLostHandler(handler: () => void) {
  onAuthLost = handler;
}

function jwtExpiry(token: string): number | null {
  try {
    const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return typeof payload.exp === "number" ? payload.exp * 1000 : null;
  } catch {
    return null;
  }
}

let refreshing: Promise<boolean> | null = null;

/** Spend the refresh token for a new pair; concurrent callers share one request. */
export function refreshTokens(): Promise<boolean> {
  if (!refreshing) {
    refreshing = (async () => {
      const refresh = tokens.refresh;
      if (!refresh) return false;
      try {
        tokens.set(await unwrap(publicClient.POST("/api/v1/auth/refresh", { body: { refresh_token: refresh } })));
        return true;
      } catch {
        return false;
      }
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

export async function errorFrom(response: Response): Promise<ApiError> {
  let body: Record<string, unknown> = {};
  try {
    body = (await response.json()) as Record<string, unknown>;
  } catch {
    /* not JSON */
  }
  const header = response.headers.get("Retry-After");
  let retryAfter = header !== null && /^\d+$/.test(header.trim()) ? Number(header) : null;
  if (retryAfter === null && response.status === 429 && typeof body.detail === "string") {
    const m = /(\d+)\s*s\b/.exec(body.detail);
    if (m) retryAfter = Number(m[1]);
  }
  const detail =
    typeof body.detail === "string"
      ? body.detail
      : `${response.status} ${response.statusText || "request failed"}`.trim();
  const errors = Array.isArray(body.errors) ? (body.errors as FieldError[]) : [];
  const code = typeof body.code === "string" ? body.code : `http_${response.status}`;
  return new ApiError(response.status, code, detail, errors, retryAfter, body);
}

const REFRESHABLE = new Set(["invalid_token", "not_authenticated", "token_expired"]);

/** fetch with the bearer token (unless `anonymous`: login, register, shared links); on an
 * expired token, refresh once and retry. Returns the Response when it is OK; throws
 * ApiError otherwise. */
async function apiFetch(url: string, init: RequestInit, anonymous: boolean): Promise<Response> {
  const build = (): RequestInit => {
    const h = new Headers(init.headers);
    const access = tokens.access;
    if (!anonymous && access) h.set("Authorization", `Bearer ${access}`);
    return { ...init, headers: h };
  };

  if (!anonymous && tokens.access && tokens.refresh) {
    const exp = jwtExpiry(tokens.access);
    if (exp !== null && exp - Date.now() < 5_000) await refreshTokens();
  }
  let response = await fetch(url, build());
  if (response.status === 401 && !anonymous && tokens.refresh) {
    const error = await errorFrom(response.clone());
    if (REFRESHABLE.has(error.code)) {
      if (await refreshTokens()) {
        response = await fetch(url, build());
      } else {
        tokens.clear();
        onAuthLost();
        throw error;
      }
    }
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    if (
      response.status === 401 &&
      !anonymous &&
      ["invalid_token", "session_revoked", "refresh_token_reused", "account_deleted", "not_authenticated"].includes(
        error.code,
      )
    ) {
      tokens.clear();
      onAuthLost();
    }
    throw error;
  }
  return response;
}

/** openapi-fetch's fetch: the Request it built, sent through apiFetch (same-origin URLs
 * as paths, so a test's fetch sees `/api/v1/...`). */
function transport(anonymous: boolean) {
  return async (request: Request): Promise<Response> => {
    const url = new URL(request.url);
    const target = url.origin === origin() ? `${url.pathname}${url.search}` : request.url;
    const body = request.body === null ? undefined : await request.text();
    const init: RequestInit = {
      method: request.method,
      headers: request.headers,
      body,
      signal: request.signal,
      keepalive: request.keepalive,
    };
    return apiFetch(target, init, anonymous);
  };
}

function origin(): string {
  return typeof window !== "undefined" ? window.location.origin : "http://localhost";
}

/** The platform API, signed in: `client.GET("/api/v1/chats/{chat_id}", { params: { path: { chat_id } } })`. */
export const client = createClient<paths>({ baseUrl: origin(), fetch: transport(false) });
/** The same without the Authorization header (login, register, OAuth, shared links). */
export const publicClient = createClient<paths>({ baseUrl: origin(), fetch: transport(true) });

/** A call's success body. Every other answer has already thrown ApiError (see apiFetch),
 * so this drops the `undefined` of openapi-fetch's error branch. */
export async function unwrap<T>(call: Promise<{ data?: T }>): Promise<T> {
  return (await call).data as T;
}

/** Save a downloaded file (exports, fetched with `parseAs: "blob"`) under the name the
 * server gives. */
export async function saveDownload(
  call: Promise<{ data?: Blob; response: Response }>,
  fallbackName: string,
): Promise<void> {
  const { data, response } = await call;
  const disposition = response.headers.get("Content-Disposition") ?? "";
  const match = /filename="?([^";]+)"?/.exec(disposition);
  const url = URL.createObjectURL(data ?? new Blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = match?.[1] ?? fallbackName;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1_000);
}

/** A human sentence for an error, with the cases the chat must explain. */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) {
    switch (error.status) {
      case 429: {
        const wait = error.retryAfter ?? null;
        // a token limit's own sentence says which limit, what was used and how to go on
        if (error.code === "token_limit")
          return `Token limit reached: ${error.detail}.${wait !== null ? ` You can send again in ${formatWait(wait)}.` : ""}`;
        return wait !== null
          ? `Too many requests: wait ${wait} s and try again.`
          : `Too many requests: ${error.detail}`;
      }
      case 402:
        return error.code === "insufficient_credits"
          ? `Not enough credits (you are out of credits for this answer): ${error.detail}.`
          : `You are out of credits: ${error.detail}. Ask an administrator for more.`;
      case 502:
        return `The model could not answer: ${error.detail}`;
      case 503:
        return `The model is unavailable right now: ${error.detail}`;
      default:
        if (error.code === "chat_busy")
          return "An answer is still streaming in this chat: wait for it to finish or press Stop.";
        return error.detail;
    }
  }
  if (error instanceof DOMException && error.name === "AbortError") return "Stopped.";
  if (error instanceof TypeError) return "Could not reach the server: check your connection and try again.";
  return error instanceof Error ? error.message : String(error);
}
