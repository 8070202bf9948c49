"""A real HTTP server for crawler tests: pages from a dict, plus misbehaving paths.

`serve(pages)` yields a `Site` on 127.0.0.1 with an ephemeral port; every request is
logged (path, time and headers) so tests can prove what a crawler never asked for.

`pages` maps a request path (with its query, exactly as requested) to a `Page`
`(status, headers, body)` or to a callable returning one, called per request in the
server's thread: that is how the special behaviours below work, and how other tests
(curation: planted duplicates, PII, foreign pages) add their own. `directory(root)` turns
a site written to disk (e.g. `testkit.corpus.write_site`) into pages. The dict may be
changed while the site is served.
"""

from __future__ import annotations

import mimetypes
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

Page = tuple[int, dict[str, str], bytes]
Pages = dict[str, Page | Callable[[], Page]]


def html(body: str, status: int = 200) -> Page:
    return status, {"Content-Type": "text/html; charset=utf-8"}, body.encode()


def links_page(*links: str, text: str = "", rel: str | None = None) -> Page:
    """An HTML page of `<a href>` links (with `rel` on each when given) after `text`."""
    attr = f' rel="{rel}"' if rel else ""
    anchors = "".join(f'<a href="{link}"{attr}>{link}</a> ' for link in links)
    return html(f"<html><body>{text}{anchors}</body></html>")


def robots(rules: str) -> Page:
    return 200, {"Content-Type": "text/plain"}, rules.encode()


def redirect(location: str, status: int = 301) -> Page:
    """A redirect to a path or to a full (possibly offsite) URL."""
    return status, {"Location": location}, b""


def typed(content_type: str, body: bytes = b"\x89PNG\r\n\x1a\n") -> Page:
    return 200, {"Content-Type": content_type}, body


def large(size: int, declare_length: bool = True) -> Page:
    """An HTML body of `size` bytes; without a declared length it ends when the server
    closes the connection, so a crawler must count bytes as it reads."""
    headers = {"Content-Type": "text/html"}
    if not declare_length:
        headers["Connection"] = "close"
    return 200, headers, b"<p>" + b"x" * max(0, size - 3)


def flaky(page: Page, failures: int, status: int = 503) -> Callable[[], Page]:
    """`status` for the first `failures` requests, then `page`."""
    left = [failures]
    lock = threading.Lock()

    def respond() -> Page:
        with lock:
            left[0] -= 1
            failing = left[0] >= 0
        return html("busy", status) if failing else page

    return respond


def slow(page: Page, seconds: float) -> Callable[[], Page]:
    """`page` after `seconds`: longer than the crawler's timeout, it times out."""

    def respond() -> Page:
        time.sleep(seconds)
        return page

    return respond


def blocking(page: Page, limit_s: float = 30.0) -> tuple[Callable[[], Page], threading.Event]:
    """`page`, but the first request hangs until the returned event is set (a crawler
    caught mid-page, e.g. to be killed there); later requests answer at once."""
    release = threading.Event()
    first = threading.Lock()

    def respond() -> Page:
        if first.acquire(blocking=False):
            release.wait(limit_s)
        return page

    return respond, release


def directory(root: Path) -> dict[str, Page]:
    """Every file under `root` as a page at its relative path (`/index.html` also `/`)."""
    pages: dict[str, Page] = {}
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if kind.startswith("text/"):
                kind += "; charset=utf-8"
            url_path = "/" + path.relative_to(root).as_posix()
            pages[url_path] = (200, {"Content-Type": kind}, path.read_bytes())
    if "/index.html" in pages:
        pages.setdefault("/", pages["/index.html"])
    return pages


@dataclass
class Site:
    url: str
    pages: Pages
    requests: list[tuple[str, float]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self) -> list[str]:
        with self.lock:
            return [path for path, _ in self.requests]

    def count(self, path: str) -> int:
        return self.paths().count(path)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a crawler that hangs up (timeout, size limit) is expected here


@contextmanager
def serve(pages: Pages) -> Iterator[Site]:
    site = Site(url="", pages=pages)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            with site.lock:
                site.requests.append((self.path, time.monotonic()))
                site.headers.append(dict(self.headers.items()))
            page = site.pages.get(self.path)
            if callable(page):
                page = page()
            status, headers, body = page if page else html("<h1>not found</h1>", 404)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if headers.get("Connection") != "close":
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    site.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
