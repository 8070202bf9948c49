import { afterEach, describe, expect, it, vi } from "vitest";
import { ApiError, client, describeError, publicClient, refreshTokens, setAuthLostHandler, tokens, unwrap } from "./api";

function json(status: number, body: unknown, headers: Record<string, string> = {}) {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });
}

afterEach(() => vi.unstubAllGlobals());

describe("api client", () => {
  it("sends the typed call's path, query and JSON body with the bearer token", async () => {
    tokens.set({ access_token: "a", refresh_token: "r" });
    const fetchMock = vi.fn(async (_url: string, _init: RequestInit) => json(200, { id: "c1", title: "Renamed" }));
    vi.stubGlobal("fetch", fetchMock);
    const chat = await unwrap(
      client.PATCH("/api/v1/chats/{chat_id}", { params: { path: { chat_id: "c 1" } }, body: { title: "Renamed" } }),
    );
    expect(chat.title).toBe("Renamed");
    const [url, init] = fetchMock.mock.calls[0];
    expect(url).toBe("/api/v1/chats/c%201");
    expect(init.method).toBe("PATCH");
    expect(JSON.parse(init.body as string)).toEqual({ title: "Renamed" });
    const headers = new Headers(init.headers);
    expect(headers.get("Authorization")).toBe("Bearer a");
    expect(headers.get("Content-Type")).toBe("application/json");

    await client.GET("/api/v1/chats", { params: { query: { limit: 500, folder_id: undefined } } });
    expect(fetchMock.mock.calls[1][0]).toBe("/api/v1/chats?limit=500");
  });

  it("sends no token from the public client", async () => {
    tokens.set({ access_token: "a", refresh_token: "r" });
    const fetchMock = vi.fn(async (_url: string, _init: RequestInit) =>
      json(200, { title: "t", messages: [] }),
    );
    vi.stubGlobal("fetch", fetchMock);
    await publicClient.GET("/api/v1/shared/{token}", { params: { path: { token: "x" } } });
    expect(new Headers(fetchMock.mock.calls[0][1].headers).has("Authorization")).toBe(false);
  });

  it("an abort stops the request", async () => {
    tokens.set({ access_token: "a", refresh_token: "r" });
    vi.stubGlobal(
      "fetch",
      vi.fn(
        (_url: string, init: RequestInit) =>
          new Promise<Response>((_resolve, reject) =>
            init.signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError"))),
          ),
      ),
    );
    const controller = new AbortController();
    const call = client.GET("/api/v1/chats", { signal: controller.signal });
    controller.abort();
    await expect(call).rejects.toMatchObject({ name: "AbortError" });
  });

  it("refreshes once on an expired token and retries with the new one", async () => {
    tokens.set({ access_token: "old", refresh_token: "r1" });
    const fetchMock = vi.fn(async (url: string, init: RequestInit) => {
      const auth = new Headers(init.headers).get("Authorization");
      if (url.endsWith("/auth/refresh")) {
        expect(JSON.parse(init.body as string)).toEqual({ refresh_token: "r1" });
        return json(200, { access_token: "new", refresh_token: "r2", token_type: "bearer", expires_in: 900 });
      }
      return auth === "Bearer new" ? json(200, { ok: true }) : json(401, { detail: "expired", code: "invalid_token" });
    });
    vi.stubGlobal("fetch", fetchMock);
    await expect(unwrap(client.GET("/api/v1/users/me"))).resolves.toEqual({ ok: true });
    expect(fetchMock).toHaveBeenCalledTimes(3);
    expect(tokens.access).toBe("new");
    expect(tokens.refresh).toBe("r2");
  });

  it("spends the refresh token once for concurrent callers", async () => {
    tokens.set({ access_token: "a", refresh_token: "r" });
    let refreshes = 0;
    vi.stubGlobal(
      "fetch",
      vi.fn(async () => {
        refreshes++;
        await new Promise((r) => setTimeout(r, 5));
        return json(200, { access_token: "b", refresh_token: "s", token_type: "bearer", expires_in: 900 });
      }),
    );
    await Promise.all([refreshTokens(), refreshTokens(), refreshTokens()]);
    expect(refreshes).toBe(1);
  });

  it("goes to login when the refresh fails", async () => {
    tokens.set({ access_token: "old", refresh_token: "spent" });
    const lost = vi.fn();
    setAuthLostHandler(lost);
    vi.stubGlobal(
      "fetch",
      vi.fn(async (url: string) =>
        url.endsWith("/auth/refresh")
          ? json(401, { detail: "reused", code: "refresh_token_reused" })
          : json(401, { detail: "expired", code: "invalid_token" }),
      ),
    );
    await expect(client.GET("/api/v1/chats")).rejects.toBeInstanceOf(ApiError);
    expect(lost).toHaveBeenCalledTimes(1);
    expect(tokens.access).toBeNull();
  });

  it("explains 429 with the wait from Retry-After, and 402", async () => {
    tokens.set({ access_token: "a", refresh_token: "r" });
    vi.stubGlobal("fetch", vi.fn(async () => json(429, { detail: "too many requests, retry in 12 s", code: "rate_limited" }, { "Retry-After": "12" })));
    const error = (await client.GET("/api/v1/chats").catch((e: unknown) => e)) as ApiError;
    expect(error.retryAfter).toBe(12);
    expect(describeError(error)).toBe("Too many requests: wait 12 s and try again.");
    expect(describeError(new ApiError(402, "insufficient_quota", "balance 0"))).toMatch(/out of credits/);
  });
});
