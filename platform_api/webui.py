"""The web UI: the static build of `ui/` (`ui/dist`, made by `make install`) served at `/`.

- `/assets/*`: Vite's content-hashed files, `Cache-Control: public, max-age=31536000,
  immutable`, gzipped when the client accepts it (compressed once, kept in memory).
- Any other GET or HEAD outside the API's own paths (/api, /v1, /docs, /redoc,
  /openapi.json, /metrics, /healthz) that accepts text/html gets `index.html` (the SPA
  fallback: the client-side router reads the path), `no-cache`, with a strict
  Content-Security-Policy. Other files at the top of the build (favicon, robots.txt)
  are served as they are, `no-cache`.
- Every answer carries `X-Content-Type-Options: nosniff`; a path with a `..`, a
  backslash, a NUL or a dot-file segment is refused (404) before the disk is touched,
  and a resolved file must lie inside the build directory.
- Without a build (`Settings.ui_dir` has no `index.html`) these paths answer 503 with
  what to run, in HTML or JSON by the request's Accept; the API works regardless. The
  directory is looked at per request, so a build made after start-up is served at once.

The UI is mounted as the app's last route, so every API route matches first and the API's
own 404 and 405 answers (JSON) are untouched.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

# Paths the UI never answers: the API's own (its 404s stay JSON).
API_PATHS = ("/api", "/v1", "/docs", "/redoc", "/openapi.json", "/metrics", "/healthz")
ASSETS = "/assets/"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# React sets inline styles through the CSSOM (element.style), which style-src does not
# govern; Vite's build has no inline script or <style>, so nothing here is 'unsafe-*'.
CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HTML_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": REVALIDATE,
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
NOT_BUILT = "the web UI is not built: run `make install`"
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8",
}
_COMPRESSIBLE = {".js", ".mjs", ".css", ".html", ".json", ".map", ".svg", ".txt", ".webmanifest"}
_GZIP_MAX_BYTES = 8 << 20  # larger files are sent as they are
_CACHE_FILES = 512


def _media_type(path: Path) -> str:
    return (
        _TYPES.get(path.suffix.lower())
        or mimetypes.guess_type(path.name)[0]
        or ("application/octet-stream")
    )


def _accepts(headers: Headers, what: str) -> bool:
    return any(
        part.split(";")[0].strip().lower() == what for part in headers.get("accept", "").split(",")
    )


def _accepts_gzip(headers: Headers) -> bool:
    for part in headers.get("accept-encoding", "").split(","):
        name, _, params = part.partition(";")
        if name.strip().lower() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _safe_parts(path: str) -> list[str] | None:
    """The path's segments, or None for one that could leave (or peek into) the build."""
    if "\\" in path or "\x00" in path:
        return None
    parts = [part for part in path.split("/") if part]
    if any(part.startswith(".") for part in parts):  # `..`, `.`, dot-files
        return None
    return parts


@dataclass(frozen=True)
class _File:
    body: bytes
    gzipped: bytes | None
    etag: str
    media_type: str


class WebUI:
    """Reads files of one build directory, with an in-memory cache keyed by their stat."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self._cache: dict[Path, tuple[tuple[int, int], _File]] = {}

    @property
    def built(self) -> bool:
        return (self.root / "index.html").is_file()

    def find(self, parts: list[str]) -> Path | None:
        """The regular file at `parts` inside the build, or None."""
        if not parts:
            return None
        candidate = self.root.joinpath(*parts)
        try:
            resolved = candidate.resolve(strict=True)
            root = self.root.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not resolved.is_relative_to(root) or not resolved.is_file():
            return None
        return resolved

    def load(self, path: Path) -> _File:
        info = path.stat()
        key = (info.st_mtime_ns, info.st_size)
        cached = self._cache.get(path)
        if cached and cached[0] == key:
            return cached[1]
        body = path.read_bytes()
        compress = path.suffix.lower() in _COMPRESSIBLE and 256 < len(body) <= _GZIP_MAX_BYTES
        loaded = _File(
            body=body,
            gzipped=gzip.compress(body, compresslevel=9, mtime=0) if compress else None,
            etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
            media_type=_media_type(path),
        )
        if len(self._cache) >= _CACHE_FILES:  # a rebuild's old hashed files: start over
            self._cache.clear()
        self._cache[path] = (key, loaded)
        return loaded

    def respond(self, request: Request, path: Path, headers: dict[str, str]) -> Response:
        file = self.load(path)
        common = {
            **headers,
            "ETag": file.etag,
            "X-Content-Type-Options": "nosniff",
            "Vary": "Accept-Encoding",
        }
        if file.etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
            return Response(status_code=304, headers=common)
        body = file.body
        if file.gzipped is not None and _accepts_gzip(request.headers):
            body, common["Content-Encoding"] = file.gzipped, "gzip"
        if request.method == "HEAD":
            common["Content-Length"] = str(len(body))
            return Response(status_code=200, headers=common, media_type=file.media_type)
        return Response(body, headers=common, media_type=file.media_type)


def _not_built(request: Request) -> Response:
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
    if _accepts(request.headers, "text/html"):
        page = (
            "<!doctype html><meta charset=utf-8><title>Orchard: web UI not built</title>"
            "<h1>Web UI not built</h1><p>The web UI is not built: run <code>make install</code>"
            " (it builds <code>ui/</code> into <code>ui/dist</code>), or point "
            "<code>ORCHARD_UI_DIR</code> at a build. The API is up: <a href=/docs>/docs</a>.</p>"
        )
        return HTMLResponse(page, status_code=503, headers={**headers, **HTML_HEADERS})
    return JSONResponse({"detail": NOT_BUILT, "code": "ui_not_built"}, 503, headers=headers)


class WebUIRoute(BaseRoute):
    """The app's last route: GET/HEAD of any path outside `API_PATHS`."""

    path = "/{ui_path}"  # the metrics label of every request it answers
    name = "web_ui"
    include_in_schema = False

    def __init__(self, ui: WebUI) -> None:
        self.ui = ui

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            return Match.NONE, {}
        path = scope["path"]
        if any(path == prefix or path.startswith(prefix + "/") for prefix in API_PATHS):
            return Match.NONE, {}
        return Match.FULL, {"endpoint": self.endpoint}

    def url_path_for(self, name: str, /, **path_params):
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint(Request(scope, receive))
        await response(scope, receive, send)

    async def endpoint(self, request: Request) -> Response:
        path = request.url.path
        parts = _safe_parts(path)
        if parts is None:
            raise HTTPException(404, "not found")
        if not self.ui.built:
            return _not_built(request)
        if path.startswith(ASSETS):
            found = self.ui.find(parts)
            if found is None:  # never index.html for a missing script: a clear 404
                raise HTTPException(404, f"no such asset: {path}")
            return self.ui.respond(request, found, {"Cache-Control": IMMUTABLE})
        found = self.ui.find(parts)
        if found is not None and found.name != "index.html":
            return self.ui.respond(request, found, {"Cache-Control": REVALIDATE})
        if found is not None or _accepts(request.headers, "text/html") or path == "/":
            return self.ui.respond(request, self.ui.root / "index.html", HTML_HEADERS)
        raise HTTPException(404, "not found")


def mount_webui(app: FastAPI, ui_dir: Path) -> None:
    """Serve the built UI from `ui_dir`; call after every API router is included."""
    app.router.routes.append(WebUIRoute(WebUI(ui_dir)))
