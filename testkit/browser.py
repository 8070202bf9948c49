"""Debian's Chromium (/usr/bin/chromium) driven by Playwright, for the web UI's end-to-end
tests and bench/ui.py. No tool downloads a browser here: `playwright install` is never
run, the Python package only brings its driver, and the browser is the Debian package
that `make test` installs (scripts/install-test-services)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
# Headless, as root, on a machine whose network reaches only the package registries:
# without the background-networking flags Chromium keeps opening refused connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-dev-shm-usage",
]


def missing_browser() -> str | None:
    """Why the browser cannot run here, or None."""
    if not CHROMIUM.is_file():
        return f"no {CHROMIUM}: install Debian's chromium package (make test does)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is missing: run `make install`"
    return None


def require_browser() -> None:
    """Skip the calling test, saying what to install, when the browser cannot run here;
    fail it instead under CI=true (CI must run the browser tests)."""
    import pytest

    if reason := missing_browser():
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)


@contextmanager
def chromium() -> Iterator:
    """A headless Chromium (a Playwright `Browser`), closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()
