/** Registers /sw.js (the PWA's offline shell) in production builds; the dev server has no
 * worker, so Vite's hot reload never meets a cached file. A failed registration only
 * costs the offline shell, so it is logged, not shown. */
export function registerServiceWorker() {
  if (!import.meta.env.PROD || !("serviceWorker" in navigator)) return;
  window.addEventListener("load", () => {
    navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch((e) => console.warn("service worker not registered:", e));
  });
}
