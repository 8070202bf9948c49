"""The web UI's weight and time to interactive.

    .venv/bin/python bench/ui.py [--loads 5]

1. Weight: the built JavaScript (`ui/dist/assets/*.js`) gzipped as the platform API sends
   it (level 9): the sum, the largest chunk, and the CSS beside them.
2. Time to interactive of the chat page in headless Chromium (Debian's, through
   Playwright): from navigation start to the moment the composer is enabled, read with
   `performance.now()` by a MutationObserver the page gets before any of its scripts;
   the median of N loads, each in a fresh browser context (empty HTTP cache, the same
   logged-in storage), plus the median of N reloads in one context (warm cache). The
   baseline, measured in the same process the same way: a bare static page holding an
   enabled composer, served by the same server (the platform API, from a copy of the
   build); the ratio is chat / baseline.
The platform API runs in-process (uvicorn on a free loopback port, SQLite, no serving:
the composer needs none). One run; prints figures, never fails on time.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from orchard.settings import Settings  # noqa: E402
from platform_api.app import create_app  # noqa: E402
from testkit.browser import chromium, missing_browser  # noqa: E402
from testkit.platform import FAST_ARGON2, PASSWORD, Api, LiveServer  # noqa: E402
from testkit.stack import REPO  # noqa: E402

UI_DIST = REPO / "ui" / "dist"
BASELINE = "bench-baseline.html"
BASELINE_PAGE = (
    "<!doctype html><html><head><meta charset=utf-8><title>baseline</title></head>"
    '<body><textarea data-testid="composer"></textarea></body></html>'
)
# Runs before the page's own scripts: notes when the composer is first enabled.
WATCH_COMPOSER = """(() => {
  const ready = () => {
    const c = document.querySelector('[data-testid="composer"]');
    return c && !c.disabled && !c.hasAttribute("aria-disabled");
  };
  const check = () => {
    if (window.__tti === undefined && ready()) {
      window.__tti = performance.now();
      observer.disconnect();
    }
  };
  const observer = new MutationObserver(check);
  observer.observe(document, { subtree: true, childList: true, attributes: true });
  document.addEventListener("DOMContentLoaded", check);
})();"""


def weight(dist: Path) -> None:
    def sizes(pattern: str) -> list[tuple[str, int, int]]:
        return sorted(
            (
                (p.name, p.stat().st_size, len(gzip.compress(p.read_bytes(), 9)))
                for p in (dist / "assets").glob(pattern)
            ),
            key=lambda item: -item[2],
        )

    scripts, styles = sizes("*.js"), sizes("*.css")
    kib = 1024
    print(f"JavaScript: {len(scripts)} files")
    if scripts:
        total, total_raw = sum(s[2] for s in scripts), sum(s[1] for s in scripts)
        name, raw, packed = scripts[0]
        print(f"  gzipped sum      {total / kib:8.1f} KiB  ({total_raw / kib:.1f} raw)")
        print(f"  largest chunk    {packed / kib:8.1f} KiB  ({raw / kib:.1f} raw)  {name}")
    if styles:
        print(
            f"CSS gzipped sum    {sum(s[2] for s in styles) / kib:8.1f} KiB  ({len(styles)} files)"
        )


def tti(browser, url: str, loads: int, storage_state=None) -> tuple[float, float]:
    """Median ms to an enabled composer: cold (a fresh context each load), warm (reloads)."""

    def measure(page) -> float:
        page.wait_for_function("() => window.__tti !== undefined", timeout=60_000)
        return page.evaluate("window.__tti")

    cold = []
    for _ in range(loads):
        context = browser.new_context(storage_state=storage_state)
        context.add_init_script(WATCH_COMPOSER)
        page = context.new_page()
        page.goto(url)
        cold.append(measure(page))
        context.close()
    context = browser.new_context(storage_state=storage_state)
    context.add_init_script(WATCH_COMPOSER)
    page = context.new_page()
    page.goto(url)
    measure(page)
    warm = []
    for _ in range(loads):
        page.reload()
        warm.append(measure(page))
    context.close()
    return statistics.median(cold), statistics.median(warm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    if not (UI_DIST / "index.html").is_file():
        raise SystemExit(f"{UI_DIST} has no build: run `make install`")
    weight(UI_DIST)
    if reason := missing_browser():
        raise SystemExit(f"no time to interactive: {reason}")

    root = Path(tempfile.mkdtemp(prefix="orchard-bench-ui-"))
    try:
        dist = shutil.copytree(UI_DIST, root / "dist")
        (dist / BASELINE).write_text(BASELINE_PAGE)
        settings = Settings(
            home=root / "home",
            database_url=f"sqlite:///{root / 'platform.db'}",
            serving_url="http://127.0.0.1:9",
            ui_dir=dist,
            rate_limit_auth_ip="100000/minute",
            rate_limit_user="100000/minute",
            rate_limit_ip="100000/minute",
        )
        server = LiveServer(create_app(settings, FAST_ARGON2))
        server.start()
        import httpx

        with httpx.Client(base_url=f"{server.url}/api/v1", timeout=60) as http:
            account = Api(http, server.url, settings, settings.database_url).register("bench")
        with chromium() as browser:
            context = browser.new_context()
            page = context.new_page()
            page.goto(f"{server.url}/login")
            page.get_by_test_id("email").fill(account.email)
            page.get_by_test_id("password").fill(PASSWORD)
            page.get_by_test_id("login-submit").click()
            page.wait_for_url(f"{server.url}/")
            state = context.storage_state()
            context.close()
            base_cold, base_warm = tti(browser, f"{server.url}/{BASELINE}", args.loads)
            chat_cold, chat_warm = tti(browser, f"{server.url}/", args.loads, state)
        server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"Time to interactive (navigation start -> composer enabled), median of {args.loads}:")
    print(f"  {'':18}{'chat page':>12}{'bare page':>12}{'ratio':>9}")
    for label, chat, base in (
        ("cold cache", chat_cold, base_cold),
        ("warm (reload)", chat_warm, base_warm),
    ):
        print(f"  {label:18}{chat:9.0f} ms{base:9.0f} ms{chat / base:8.1f}x")


if __name__ == "__main__":
    main()
