"""A fuzz pass with schemathesis over the platform API's own OpenAPI schema: every
operation, with generated (valid and invalid) parameters and bodies, signed in as an
administrator, must never answer a 500. Bounded: a few examples per operation."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from orchard.settings import Settings
from platform_api.app import create_app
from platform_api.manage import make_admin
from tests.conftest import free_port
from tests.platform.conftest import FAST_ARGON2, PASSWORD, LiveServer
from tests.platform.serving_stub import ServingStub

pytestmark = pytest.mark.slow
EXAMPLES_PER_OPERATION = 25
# Ending the fuzzer's own login would only make every later case a 401.
SKIPPED = {("POST", "/api/v1/auth/logout"), ("DELETE", "/api/v1/users/me")}


@pytest.fixture(scope="module")
def platform() -> Iterator[tuple[str, dict[str, str]]]:
    """The API on SQLite in front of the serving stand-in, rate limits out of the way, and
    an administrator's token (so admin operations are fuzzed past the role check)."""
    root = Path(tempfile.mkdtemp(prefix="orchard-fuzz-"))
    stub = ServingStub()
    unthrottled = "1000000/minute"
    settings_ = Settings(
        home=root / "home",
        database_url=f"sqlite:///{root / 'platform.db'}",
        serving_url=stub.url,
        # No registry: admin model pages must say so (503), not hang or crash.
        mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}",
        rate_limit_user=unthrottled,
        rate_limit_api_key=unthrottled,
        rate_limit_ip=unthrottled,
        rate_limit_auth_ip=unthrottled,
    )
    server = LiveServer(create_app(settings_, FAST_ARGON2))
    server.start()
    try:
        with httpx.Client(base_url=f"{server.url}/api/v1") as http:
            body = {"email": "fuzz@example.org", "password": PASSWORD}
            assert http.post("/auth/register", json=body).status_code == 201
            make_admin(settings_.database_url, body["email"])
            token = http.post("/auth/login", json=body).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            assert http.post("/chats", json={}, headers=headers).status_code == 201
        yield server.url, headers
    finally:
        server.stop()
        stub.stop()


def send(http: httpx.Client, kwargs: dict) -> None:
    """One generated request, sent with httpx (schemathesis' own `requests` transport trips
    over the urllib3-future that another dependency installs); a 5xx fails the example."""
    request = {k: kwargs[k] for k in ("method", "url", "headers", "params", "cookies")}
    if "json" in kwargs:
        request["json"] = kwargs["json"]
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        request["content"] = data.encode() if isinstance(data, str) else data
    try:
        response = http.request(**request)
    except (httpx.LocalProtocolError, httpx.InvalidURL, UnicodeEncodeError):
        return  # a request no HTTP client can send (e.g. a control character in a header)
    # A deliberate 502/503 (a dependency down, here the registry) names its cause; an
    # unhandled error is a 500 `internal_error`.
    deliberate = response.status_code in (502, 503) and "internal_error" not in response.text
    assert response.status_code < 500 or deliberate, (
        f"{request['method']} {request['url']} -> {response.status_code}: {response.text[:300]}"
    )


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_operation_answers_a_server_error(platform, mode):
    url, headers = platform
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    failures: list[str] = []
    operations = 0
    http = httpx.Client(timeout=30)
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue
        operations += 1

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,  # the same examples every run: a failure is reproducible
            database=None,
        )
        @given(case=operation.as_strategy(mode))
        def fuzz(case) -> None:
            send(http, case.as_transport_kwargs(base_url=url, headers=headers))

        try:
            fuzz()
        except Unsatisfiable:
            continue  # no invalid input exists (an operation without parameters)
        except Exception as error:  # noqa: BLE001 - collected, reported together below
            failures.append(f"{operation.label}: {str(error)[:600]}")
    http.close()
    assert operations > 40  # the whole API was fuzzed, not an empty schema
    assert not failures, "\n\n".join(failures)
