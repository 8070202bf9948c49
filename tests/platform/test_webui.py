"""The platform API serving the built web UI (`platform_api/webui.py`), over real HTTP,
from a small build directory made here: the SPA fallback, caching headers, the CSP, the
API's JSON 404s, path traversal, and the 503 of a missing build."""

from __future__ import annotations

import gzip
import http.client
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from orchard.settings import Settings
from platform_api.app import create_app
from platform_api.webui import CSP
from tests.platform.conftest import FAST_ARGON2, LiveServer

INDEX = (
    '<!doctype html><html><head><script type="module" src="/assets/index-Ab12Cd34.js">'
    '</script><link rel="stylesheet" href="/assets/index-Ef56Gh78.css"></head>'
    '<body><div id="root"></div></body></html>'
)
SCRIPT = "export const answer = 42;\n" * 200  # worth compressing
SECRET = "TOP-SECRET-OUTSIDE-THE-BUILD"
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@dataclass
class Site:
    url: str
    dist: Path
    http: httpx.Client

    def raw(self, path: str, accept: str = HTML["Accept"]) -> tuple[int, bytes]:
        """GET `path` exactly as written: no client normalizes the dots away."""
        host, port = self.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.putrequest("GET", path, skip_accept_encoding=True)
            connection.putheader("Accept", accept)
            connection.endheaders()
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def write_dist(root: Path) -> Path:
    dist = root / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "icons").mkdir()
    (dist / "index.html").write_text(INDEX)
    (dist / "assets" / "index-Ab12Cd34.js").write_text(SCRIPT)
    (dist / "assets" / "index-Ef56Gh78.css").write_text("body{margin:0}")
    (dist / "icons" / "icon.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    (dist / "robots.txt").write_text("User-agent: *\n")
    (dist / "sw.js").write_text('self.addEventListener("fetch", () => {});\n')
    (dist / ".env").write_text(SECRET)
    (root / "secret.txt").write_text(SECRET)
    (dist / "assets" / "leak.js").symlink_to(root / "secret.txt")
    return dist


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("webui")
    dist = write_dist(root)
    settings = Settings(
        home=root / "home",
        database_url=f"sqlite:///{root / 'platform.db'}",
        serving_url="http://127.0.0.1:9",  # never called here
        ui_dir=dist,
    )
    server = LiveServer(create_app(settings, FAST_ARGON2))
    server.start()
    http = httpx.Client(base_url=server.url, timeout=30)
    try:
        yield Site(url=server.url, dist=dist, http=http)
    finally:
        http.close()
        server.stop()


def assert_index(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.text == INDEX
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"


def test_the_root_is_index_html_with_a_strict_csp(site):
    response = site.http.get("/", headers=HTML)
    assert_index(response)
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'self'" and policy["script-src"] == "'self'"
    assert policy["object-src"] == "'none'" and policy["base-uri"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in policy["script-src"] and "unsafe-eval" not in CSP
    # revalidation is cheap: the same ETag answers 304 with no body
    again = site.http.get("/", headers={**HTML, "If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    head = site.http.head("/", headers=HTML)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) > 0


def test_client_side_routes_fall_back_to_index_html(site):
    for path in ("/c/01HZX7", "/admin/models", "/login", "/account/usage", "/index.html"):
        assert_index(site.http.get(path, headers=HTML))
    # not a page request: a script's fetch of a missing file is a JSON 404, never HTML
    missing = site.http.get("/c/01HZX7", headers={"Accept": "application/json"})
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert site.http.get("/nothing.js", headers={"Accept": "*/*"}).status_code == 404


def test_hashed_assets_are_immutable_and_gzipped(site):
    path = "/assets/index-Ab12Cd34.js"
    response = site.http.get(path, headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200 and response.text == SCRIPT
    assert response.headers["content-encoding"] == "gzip"
    assert int(response.headers["content-length"]) < len(SCRIPT) / 10
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["vary"] == "Accept-Encoding"
    with site.http.stream("GET", path, headers={"Accept-Encoding": "gzip"}) as stream:
        assert gzip.decompress(b"".join(stream.iter_raw())) == SCRIPT.encode()
    plain = site.http.get(path, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.text == SCRIPT
    css = site.http.get("/assets/index-Ef56Gh78.css")
    assert css.headers["content-type"].startswith("text/css")
    # a missing chunk (an old build's) is a 404, not index.html served as a script
    gone = site.http.get("/assets/index-Old00000.js", headers=HTML)
    assert gone.status_code == 404 and gone.json()["code"] == "not_found"


def test_other_files_of_the_build_are_served_and_revalidated(site):
    icon = site.http.get("/icons/icon.svg", headers=HTML)
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert icon.headers["cache-control"] == "no-cache"
    assert "content-security-policy" not in icon.headers
    robots = site.http.get("/robots.txt")
    assert (
        robots.text == "User-agent: *\n" and robots.headers["x-content-type-options"] == "nosniff"
    )


def test_the_service_worker_is_a_revalidated_script_at_the_root(site):
    # what a browser sends when it (re)fetches a worker: a JS type is required, and
    # no-cache makes a new build's worker (a new cache version) seen on the next visit;
    # served from "/", its default scope is the whole app (no Service-Worker-Allowed)
    sw = site.http.get("/sw.js", headers={"Accept": "*/*", "Service-Worker": "script"})
    assert sw.status_code == 200 and sw.text.startswith("self.addEventListener")
    assert sw.headers["content-type"].startswith("text/javascript")
    assert sw.headers["cache-control"] == "no-cache"
    assert "service-worker-allowed" not in sw.headers


def test_api_paths_keep_their_json_answers(site):
    for path in ("/api/v1/nope", "/api/v2", "/api", "/metrics/x", "/healthz/x"):
        response = site.http.get(path, headers=HTML)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/json", path
        assert response.json()["code"] == "not_found"
    openai = site.http.get("/v1/nope", headers=HTML)
    assert openai.status_code == 404 and openai.json()["error"]["code"] == "not_found"
    assert site.http.get("/healthz", headers=HTML).json()["status"] == "ok"
    assert site.http.get("/openapi.json", headers=HTML).json()["info"]["title"]
    docs = site.http.get("/docs", headers=HTML)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert "orchard_api_requests" in site.http.get("/metrics").text
    # a wrong method on an API route is still a 405, and POST to a page path a JSON 404
    wrong = site.http.get("/api/v1/auth/login", headers=HTML)
    assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"
    post = site.http.post("/c/01HZX7", headers=HTML)
    assert post.status_code == 404 and post.json()["code"] == "not_found"


def test_page_requests_are_one_bounded_metrics_label(site):
    site.http.get("/c/one", headers=HTML)
    site.http.get("/c/two", headers=HTML)
    metrics = site.http.get("/metrics").text
    assert 'route="/{ui_path}"' in metrics and "/c/one" not in metrics


@pytest.mark.parametrize(
    "path",
    [
        "/assets/../../etc/passwd",
        "/assets/../../secret.txt",
        "/assets/%2e%2e/%2e%2e/secret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/assets/..%5c..%5csecret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e/secret.txt",
        "/.env",
        "/assets/.%2e/.env",
        "/assets/leak.js",  # a symlink out of the build
        "/assets/index-Ab12Cd34.js%00.html",
    ],
)
def test_path_traversal_is_refused(site, path):
    for accept in (HTML["Accept"], "*/*"):
        status, body = site.raw(path, accept)
        assert status == 404, (path, status)
        assert SECRET.encode() not in body and b"root:" not in body


def test_without_a_build_pages_answer_503_and_the_api_works(site):
    index = site.dist / "index.html"
    index.rename(site.dist / "index.moved")
    try:
        page = site.http.get("/", headers=HTML)
        assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
        assert "make install" in page.text and "Traceback" not in page.text
        for path in ("/", "/c/01HZX7", "/assets/index-Ab12Cd34.js"):
            response = site.http.get(path, headers={"Accept": "application/json"})
            assert response.status_code == 503, path
            assert response.json() == {
                "detail": "the web UI is not built: run `make install`",
                "code": "ui_not_built",
            }
        registered = site.http.post(
            "/api/v1/auth/register",
            json={"email": "nobuild@example.org", "password": "correct horse battery"},
        )
        assert registered.status_code == 201, registered.text
        assert site.http.get("/healthz").json()["status"] == "ok"
    finally:
        (site.dist / "index.moved").rename(index)
    assert_index(site.http.get("/", headers=HTML))  # a build made later is served at once


def test_the_default_build_directory_is_the_repositorys_ui_dist(clean_env, monkeypatch):
    repo = Path(__file__).resolve().parents[2]
    assert Settings().ui_dir == repo / "ui" / "dist"
    monkeypatch.setenv("ORCHARD_UI_DIR", "elsewhere/dist")
    assert Settings().ui_dir == clean_env.parent / "elsewhere" / "dist"
