"""A fuzz pass with schemathesis over the platform API's own OpenAPI schema: every
operation, with generated (valid and invalid) parameters and bodies, signed in as an
administrator (the OpenAI gateway's `/v1` operations with the administrator's API key and
their OpenAI schemas), must never answer a 500. Bounded: a few examples per operation.
And every field of a gateway request, given a value of another JSON type, is a 400 that
names it."""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from orchard.settings import Settings
from platform_api.app import create_app
from platform_api.manage import make_admin
from testkit.serving_stub import ServingStub
from tests.conftest import free_port
from tests.platform.conftest import FAST_ARGON2, PASSWORD, LiveServer, grant_credits

pytestmark = pytest.mark.slow
EXAMPLES_PER_OPERATION = 20
# Ending the fuzzer's own login would only make every later case a 401.
SKIPPED = {("POST", "/api/v1/auth/logout"), ("DELETE", "/api/v1/users/me")}


@pytest.fixture(scope="module")
def platform() -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    """The API on SQLite in front of the serving stand-in, rate limits out of the way, an
    administrator's token (so admin operations are fuzzed past the role check) and API key
    (with credits, so gateway requests get past the balance to serving)."""
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
            registered = http.post("/auth/register", json=body)
            assert registered.status_code == 201
            make_admin(settings_.database_url, body["email"])
            grant_credits(settings_.database_url, registered.json()["id"], 10**9)
            token = http.post("/auth/login", json=body).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            assert http.post("/chats", json={}, headers=headers).status_code == 201
            key = http.post("/api-keys", json={"name": "fuzz"}, headers=headers).json()["key"]
        yield server.url, headers, {"Authorization": f"Bearer {key}"}
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


def fuzz(http: httpx.Client, url: str, operation, mode, headers: dict[str, str]) -> None:
    """EXAMPLES_PER_OPERATION generated requests to `operation`, each sent with `headers`."""

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # the same examples every run: a failure is reproducible
        database=None,
    )
    @given(case=operation.as_strategy(mode))
    def examples(case) -> None:
        send(http, case.as_transport_kwargs(base_url=url, headers=headers))

    examples()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_operation_answers_a_server_error(platform, mode):
    url, token_headers, key_headers = platform
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    failures: list[str] = []
    operations = gateway_operations = 0
    http = httpx.Client(timeout=30)
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue
        operations += 1
        gateway = operation.path.startswith("/v1/")
        gateway_operations += gateway
        try:
            fuzz(http, url, operation, mode, key_headers if gateway else token_headers)
        except Unsatisfiable:
            continue  # no invalid input exists (an operation without parameters)
        except Exception as error:  # noqa: BLE001 - collected, reported together below
            failures.append(f"{operation.label}: {str(error)[:600]}")
    http.close()
    assert operations > 40  # the whole API was fuzzed, not an empty schema
    assert (
        gateway_operations == 4
    )  # GET /v1/models, POST /v1/{chat/completions,completions,embeddings}
    assert not failures, "\n\n".join(failures)


# A value of each JSON type; each field gets those its schema does not allow.
CONFUSED = [0, -1, 1.5, "", "x", True, None, [], [1], {}, {"a": 1}]
# Valid, with every nested object present (the fields are varied in the first message and
# the first item of each list), so that the field made wrong is the only mistake.
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
VALID_CHAT = {
    "model": "champion",
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}], "tool_calls": [CALL]}
    ],
    "max_tokens": 5,
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
}


def _fields(schema: dict, path: tuple = ()) -> Iterator[tuple[tuple, dict]]:
    """Every field of a request under `schema`, nested ones and list items (index 0)
    included, with its own schema."""
    if path:
        yield path, schema
    for option in schema.get("anyOf", [schema]):
        for name, field in option.get("properties", {}).items():
            yield from _fields(field, (*path, name))
        if option.get("type") == "array" and "items" in option:
            yield from _fields(option["items"], (*path, 0))


def _with(request: dict, path: tuple, value: Any) -> dict:
    request = copy.deepcopy(request)
    parent: Any = request
    for part, after in zip(path, path[1:], strict=False):
        if isinstance(parent, dict) and not isinstance(parent.get(part), (dict, list)):
            parent[part] = [] if isinstance(after, int) else {}
        if isinstance(parent, list) and part >= len(parent):
            parent.append([] if isinstance(after, int) else {})
        parent = parent[part]
    if isinstance(parent, list) and path[-1] >= len(parent):
        parent.append(value)
    else:
        parent[path[-1]] = value
    return request


def test_every_gateway_field_of_another_type_is_a_400_naming_it(platform):
    url, _, key_headers = platform
    openapi = httpx.get(f"{url}/openapi.json").json()
    operation = openapi["paths"]["/v1/chat/completions"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    fields = dict(_fields(schema))
    assert {"model", "messages", "stream_options", "n", "stream", "max_tokens"} <= {
        path[0] for path in fields
    }
    assert ("messages", 0, "content", 0, "text") in fields
    assert ("stream_options", "include_usage") in fields
    wrong: list[str] = []
    with httpx.Client(base_url=url, headers=key_headers, timeout=30) as http:
        assert http.post("/v1/chat/completions", json=VALID_CHAT).status_code == 200
        for path, field_schema in fields.items():
            name = ".".join(map(str, path))
            for value in CONFUSED:
                if jsonschema.Draft202012Validator(field_schema).is_valid(value):
                    continue
                response = http.post("/v1/chat/completions", json=_with(VALID_CHAT, path, value))
                error = response.json().get("error") or {}
                param = error.get("param") or ""
                if response.status_code != 400 or not (
                    param == name or param.startswith(f"{name}.")
                ):
                    wrong.append(f"{name}={value!r}: {response.status_code} {response.text[:200]}")
                elif name not in error["message"]:
                    wrong.append(f"{name}={value!r}: the message does not name it: {error}")
    assert not wrong, "\n".join(wrong)
