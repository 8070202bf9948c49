// Orchard's service worker (the installable PWA). Built into ui/dist/sw.js by the
// `orchard-sw` plugin of vite.config.ts, which fills in the two placeholders below; served
// at /sw.js (`no-cache`, so a new build's worker is seen on the next visit), scope "/".
//
// What it keeps: the app shell (index.html, the entry script and CSS, theme-init.js, the
// manifest and icons) and Vite's content-hashed /assets/* files. Never the API (/api,
// /v1), server-sent events, or any request carrying an Authorization header: those pass
// straight to the network, untouched. Nothing user-specific is ever cached.
//
// - /assets/*: cache first (a hashed name never changes content), stored on first fetch.
// - pages (navigations) and the other build files: network first, the cached copy when
//   offline; every navigation is the same index.html, cached under "/".
// - the cache is named by the build: activating a new worker deletes older caches.
// Plain script, no imports: a classic worker runs everywhere.

const VERSION = "__ORCHARD_SW_VERSION__";
const PRECACHE = __ORCHARD_SW_PRECACHE__;
const PREFIX = "orchard-shell-";
const CACHE = PREFIX + VERSION;
const API_PATHS = ["/api", "/v1", "/docs", "/redoc", "/openapi.json", "/metrics", "/healthz"];

/** "asset", "page", "static" or null (null: not ours, let the network answer). */
function policy(request) {
  if (request.method !== "GET") return null;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return null;
  if (request.headers.has("Authorization")) return null;
  if ((request.headers.get("Accept") || "").includes("text/event-stream")) return null;
  const path = url.pathname;
  if (API_PATHS.some((p) => path === p || path.startsWith(p + "/"))) return null;
  if (path === "/sw.js") return null;
  if (path.startsWith("/assets/")) return "asset";
  if (request.mode === "navigate") return "page";
  return "static";
}

function cacheable(response) {
  return response && response.ok && response.type === "basic" && !response.headers.has("Set-Cookie");
}

async function cacheFirst(request) {
  const cache = await caches.open(CACHE);
  const hit = await cache.match(request);
  if (hit) return hit;
  const response = await fetch(request);
  if (cacheable(response)) await cache.put(request, response.clone());
  return response;
}

async function networkFirst(request, key) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (cacheable(response)) await cache.put(key, response.clone());
    return response;
  } catch (error) {
    const hit = await cache.match(key);
    if (hit) return hit;
    throw error;
  }
}

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(PRECACHE)));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith(PREFIX) && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const kind = policy(event.request);
  if (kind === "asset") event.respondWith(cacheFirst(event.request));
  else if (kind === "page") event.respondWith(networkFirst(event.request, "/"));
  else if (kind === "static") event.respondWith(networkFirst(event.request, event.request));
});
