/// <reference types="vitest/config" />
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { defineConfig, type Plugin } from "vite";
import react from "@vitejs/plugin-react";
import tailwindcss from "@tailwindcss/vite";

const API = process.env.ORCHARD_API ?? "http://127.0.0.1:8000";

/** Emits dist/sw.js from src/sw/sw.js: its cache is named by a hash of the build's file
 * names (content-hashed, so any change renames one) and of the worker itself, and it
 * precaches the app shell: index.html, the entry chunk with what it imports statically,
 * their CSS, and the files of public/ a page loads first. Lazy chunks (admin pages) are
 * cached when first used, not installed up front. */
function serviceWorker(): Plugin {
  const template = new URL("./src/sw/sw.js", import.meta.url);
  return {
    name: "orchard-sw",
    apply: "build",
    generateBundle(_options, bundle) {
      const source = readFileSync(template, "utf8");
      const shell = new Set<string>();
      const visit = (name: string) => {
        const chunk = bundle[name];
        if (!chunk || chunk.type !== "chunk" || shell.has(name)) return;
        shell.add(name);
        chunk.viteMetadata?.importedCss.forEach((css) => shell.add(css));
        chunk.imports.forEach(visit);
      };
      Object.values(bundle).forEach((c) => c.type === "chunk" && c.isEntry && visit(c.fileName));
      const precache = ["/", "/theme-init.js", "/manifest.webmanifest", "/icons/icon.svg", ...[...shell].sort().map((f) => `/${f}`)];
      const version = createHash("sha256")
        .update(Object.keys(bundle).sort().join("\n"))
        .update(source)
        .digest("hex")
        .slice(0, 16);
      this.emitFile({
        type: "asset",
        fileName: "sw.js",
        source: source.replace("__ORCHARD_SW_VERSION__", version).replace("__ORCHARD_SW_PRECACHE__", JSON.stringify(precache)),
      });
    },
  };
}

export default defineConfig({
  base: "/",
  plugins: [react(), tailwindcss(), serviceWorker()],
  resolve: {
    // Radix dialogs' scroll lock writes a <style> element the CSP refuses: see the file
    alias: { "react-style-singleton": fileURLToPath(new URL("./src/lib/styleSingleton.ts", import.meta.url)) },
  },
  server: {
    proxy: {
      "/api": { target: API, changeOrigin: false },
      "/v1": { target: API, changeOrigin: false },
    },
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 600,
  },
  test: {
    environment: "jsdom",
    setupFiles: ["./src/test/setup.ts"],
    include: ["src/**/*.test.{ts,tsx}"],
    css: false,
    pool: "threads",
    maxWorkers: 1,
  },
});
