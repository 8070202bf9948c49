import { describe, expect, it, vi } from "vitest";
import template from "./sw.js?raw";

const ORIGIN = "https://orchard.test";
type Listener = (event: FakeEvent) => void;
interface FakeRequest {
  method: string;
  url: string;
  mode: string;
  headers: Headers;
}
interface FakeEvent {
  request?: FakeRequest;
  respondWith?: (r: Promise<Response>) => void;
  waitUntil?: (p: Promise<unknown>) => void;
}

/** Runs the real worker script against an in-memory Cache Storage and a fake network. */
function boot(version = "v1", store = new Map<string, Map<string, Response>>()) {
  const listeners: Record<string, Listener> = {};
  const key = (r: FakeRequest | string) => new URL(typeof r === "string" ? r : r.url, ORIGIN).href;
  const cacheOf = (name: string) => {
    if (!store.has(name)) store.set(name, new Map());
    const entries = store.get(name)!;
    return {
      match: async (r: FakeRequest | string) => entries.get(key(r))?.clone(),
      put: async (r: FakeRequest | string, response: Response) => void entries.set(key(r), response),
      addAll: async (urls: string[]) => {
        for (const url of urls) entries.set(key(url), await network(req(url)));
      },
    };
  };
  const caches = {
    open: async (name: string) => cacheOf(name),
    keys: async () => [...store.keys()],
    delete: async (name: string) => store.delete(name),
  };
  const network = vi.fn(async (r: FakeRequest) => {
    const response = new Response(`body of ${new URL(r.url).pathname}`, { status: 200 });
    Object.defineProperty(response, "type", { value: "basic" });
    return response;
  });
  const self = {
    location: { origin: ORIGIN },
    clients: { claim: vi.fn(async () => undefined) },
    addEventListener: (type: string, fn: Listener) => void (listeners[type] = fn),
  };
  const source = template
    .replace("__ORCHARD_SW_VERSION__", version)
    .replace("__ORCHARD_SW_PRECACHE__", JSON.stringify(["/", "/assets/index-abc.js"]));
  new Function("self", "caches", "fetch", source)(self, caches, network);

  /** The answer the worker gives, or null when it lets the request through untouched. */
  async function get(request: FakeRequest): Promise<Response | null> {
    let answer: Promise<Response> | null = null;
    listeners.fetch({ request, respondWith: (r) => void (answer = r) });
    return answer;
  }
  async function lifecycle(type: "install" | "activate") {
    let done: Promise<unknown> = Promise.resolve();
    listeners[type]({ waitUntil: (p) => void (done = p) });
    await done;
  }
  return { get, lifecycle, network, store, self };
}

function req(path: string, init: { method?: string; mode?: string; headers?: Record<string, string> } = {}): FakeRequest {
  const url = path.startsWith("http") ? path : ORIGIN + path;
  return { method: init.method ?? "GET", url, mode: init.mode ?? "cors", headers: new Headers(init.headers) };
}

describe("the service worker", () => {
  it("never answers the API, SSE, authorized, non-GET or cross-origin requests", async () => {
    const sw = boot();
    for (const request of [
      req("/api/v1/chats"),
      req("/api/v1/chats/c1/messages", { method: "POST", headers: { Accept: "text/event-stream" } }),
      req("/v1/chat/completions"),
      req("/v1"),
      req("/docs", { mode: "navigate" }),
      req("/healthz"),
      req("/assets/index-abc.js", { headers: { Authorization: "Bearer t" } }),
      req("/events", { headers: { Accept: "text/event-stream" } }),
      req("/assets/x.js", { method: "POST" }),
      req("https://elsewhere.example/assets/x.js"),
      req("/sw.js"),
    ])
      expect(await sw.get(request), `${request.method} ${request.url}`).toBeNull();
    expect(sw.network).not.toHaveBeenCalled();
    expect([...sw.store.values()].every((c) => c.size === 0)).toBe(true);
  });

  it("serves hashed assets cache-first: one network fetch, then the cache", async () => {
    const sw = boot();
    const first = await sw.get(req("/assets/Admin-123.js"));
    expect(await first!.text()).toBe("body of /assets/Admin-123.js");
    const again = await sw.get(req("/assets/Admin-123.js"));
    expect(await again!.text()).toBe("body of /assets/Admin-123.js");
    expect(sw.network).toHaveBeenCalledTimes(1);
  });

  it("loads pages network-first and falls back to the cached shell offline", async () => {
    const sw = boot();
    expect(await (await sw.get(req("/c/abc", { mode: "navigate" })))!.text()).toBe("body of /c/abc");
    sw.network.mockRejectedValue(new TypeError("offline"));
    // any route of the app is the same index.html, cached under "/"
    expect(await (await sw.get(req("/admin/users", { mode: "navigate" })))!.text()).toBe("body of /c/abc");
    expect(sw.network).toHaveBeenCalledTimes(2);
  });

  it("does not cache an error answer", async () => {
    const sw = boot();
    const notBuilt = new Response("not built", { status: 503 });
    Object.defineProperty(notBuilt, "type", { value: "basic" });
    sw.network.mockResolvedValueOnce(notBuilt);
    expect((await sw.get(req("/", { mode: "navigate" })))!.status).toBe(503);
    sw.network.mockRejectedValue(new TypeError("offline"));
    await expect(sw.get(req("/", { mode: "navigate" }))).rejects.toThrow("offline");
  });

  it("precaches the shell on install and deletes older versions' caches on activate", async () => {
    const store = new Map<string, Map<string, Response>>();
    const old = boot("v1", store);
    await old.lifecycle("install");
    expect([...store.get("orchard-shell-v1")!.keys()]).toEqual([`${ORIGIN}/`, `${ORIGIN}/assets/index-abc.js`]);
    store.set("someone-else", new Map());
    const next = boot("v2", store);
    await next.lifecycle("install");
    await next.lifecycle("activate");
    expect([...store.keys()].sort()).toEqual(["orchard-shell-v2", "someone-else"]);
    expect(next.self.clients.claim).toHaveBeenCalled();
  });
});
