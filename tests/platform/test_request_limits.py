"""What a request may cost is bounded at the edge, on every route: a body nested deeper
than `request_max_json_depth` is 400 `json_too_deep`, one larger than `request_max_bytes`
413 `body_too_large`, before anything parses it, in the route's error shape (OpenAI's under
/v1); and a body that gets through is read unchanged."""

from __future__ import annotations

import json
import random

import httpx
import pytest

from platform_api.request_limits import nesting_exceeds
from tests.platform.conftest import Api
from tests.platform.test_chat_socket import socket
from tests.platform.test_gateway import grant, new_key

TWENTY_MB = 20 * 1024 * 1024


def deep_bodies(depth: int) -> dict[str, bytes]:
    """A chat request nested `depth` levels deep in the three places a JSON body nests."""
    return {
        "arrays": b"[" * depth + b"]" * depth,
        "objects": b'{"a":' * depth + b"1" + b"}" * depth,
        "content": b'{"model": "champion", "messages": [{"role": "user", "content": '
        + b"[" * depth
        + b"]" * depth
        + b"}]}",
    }


def _bearer(token: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    return headers | ({"Authorization": f"Bearer {token}"} if token else {})


def _openai_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", code)


def _api_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


def test_deep_and_huge_bodies_are_refused_on_the_gateway_and_the_api(api: Api):
    alice = api.user("alice")
    grant(api, alice, 1000)
    key = new_key(api, alice)
    gateway = f"{api.root}/v1/chat/completions"
    for depth in (10_000, 100_000):
        for shape, body in deep_bodies(depth).items():
            response = httpx.post(gateway, content=body, headers=_bearer(key), timeout=60)
            _openai_error(response, 400, "json_too_deep")
            assert "64 levels" in response.json()["error"]["message"], shape
            for path, token in (("/chats", alice.tokens["access_token"]), ("/auth/register", None)):
                response = api.http.post(path, content=body, headers=_bearer(token))
                _api_error(response, 400, "json_too_deep")

    huge = b'{"model": "champion", "messages": [{"role": "user", "content": "%s"}]}' % (
        b"a" * TWENTY_MB
    )
    _openai_error(
        httpx.post(gateway, content=huge, headers=_bearer(key), timeout=60), 413, "body_too_large"
    )
    _api_error(
        api.http.post("/chats", content=huge, headers=_bearer(alice.tokens["access_token"])),
        413,
        "body_too_large",
    )
    # Without a Content-Length (chunked): refused once the limit is read, not at the end.
    chunks = (b"a" * 1024 * 1024 for _ in range(20))
    chunked = api.http.post("/chats", content=chunks, headers=_bearer(alice.tokens["access_token"]))
    _api_error(chunked, 413, "body_too_large")
    assert api.http.get("/credits", headers=alice.headers).json()["balance"] == 1000


def test_bodies_within_the_limits_pass_unchanged(api: Api, serving):
    alice = api.user("alice")
    grant(api, alice, 1000)
    key = new_key(api, alice)
    # 64 levels is allowed: the edge passes it on and the route answers it.
    nested: object = "x"
    for _ in range(62):
        nested = [nested]
    request = {
        "model": "champion",
        "messages": [{"role": "user", "content": "[{ brackets in text are text"}],
        "metadata": {"deep": nested},  # 64 levels with the body and this object
        "max_tokens": 5,
    }
    response = httpx.post(f"{api.root}/v1/chat/completions", json=request, headers=_bearer(key))
    assert response.status_code == 200, response.text
    assert serving.requests[-1]["metadata"] == {"deep": nested}
    assert serving.requests[-1]["messages"] == request["messages"]
    too_deep = {**request, "metadata": {"deep": [nested]}}
    response = httpx.post(f"{api.root}/v1/chat/completions", json=too_deep, headers=_bearer(key))
    _openai_error(response, 400, "json_too_deep")


def test_a_websocket_frame_is_held_to_the_same_limits(api: Api, serving):
    alice = api.user("alice")
    chat = api.chat(alice)
    with socket(api, chat, alice.tokens["access_token"]) as ws:
        ws.connection.send(
            '{"type": "send", "content": "hi", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
        )
        error = ws.recv()
        assert (error["type"], error["code"]) == ("error", "json_too_deep")
        ws.send(type="send", content="still here")  # the socket stays open
        assert ws.turn()[-1]["status"] == "complete"


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


def _random_json(rng: random.Random, depth: int) -> object:
    if depth == 0 or rng.random() < 0.2:
        return rng.choice([1, None, 2.5, 'a[b]{c}\\"[[', "é[", "}"])
    if rng.random() < 0.5:
        return [_random_json(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {f'k{i}["{{': _random_json(rng, depth - 1) for i in range(rng.randint(0, 3))}


def test_nesting_is_measured_exactly_on_valid_json_with_brackets_in_strings():
    rng = random.Random(24)
    for _ in range(500):
        value = _random_json(rng, rng.randint(0, 9))
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
        for limit in range(11):
            assert nesting_exceeds(text, limit) == (_depth(value) > limit), (text, limit)


@pytest.mark.parametrize(
    "body, deeper_than_3",
    [
        (b"[[[[", True),  # never closed: the parser would recurse into each
        (b'[[["\\', False),  # a string never closed ends the body
        (b'["' + b'\\"' * 10_000 + b"[[[[", False),  # one unclosed string, not 10,000
        (b"]]]][[[", False),  # closers first: the parser fails at once
        (b'{"a": [1, 2', False),
    ],
)
def test_invalid_json_is_measured_at_least_as_deep_as_a_parser_gets(body, deeper_than_3):
    assert nesting_exceeds(body, 3) is deeper_than_3


# 20 errors of (80-character field + 240-character message), and the detail joining the
# messages: about 12,000 characters, whatever the request (docs/platform-api.md, Errors).
ERROR_BODY_MAX = 12_500


def test_a_validation_error_stays_small_whatever_the_request(api: Api):
    alice = api.user("alice")
    unknown = {f"unknown_field_{i:05d}": i for i in range(20_000)}
    unknown["x" * 10_000] = "a field name longer than any message"
    body = json.dumps({"title": 5, **unknown}).encode()
    assert len(body) > 400_000
    response = api.http.post("/chats", content=body, headers=_bearer(alice.tokens["access_token"]))
    assert response.status_code == 422
    assert len(response.content) < ERROR_BODY_MAX
    error = response.json()
    assert len(error["errors"]) == 20
    assert error["errors_not_shown"] == 20_002 - 20
    assert error["errors"][0]["field"] == "title"  # the first errors, in the body's order
    assert error["detail"].endswith("and 19982 more (fix these first)")
    assert all(len(e["field"]) <= 80 and len(e["message"]) <= 240 for e in error["errors"])

    # The gateway: 1,000 malformed messages, a 10,000-character model name.
    key = new_key(api, alice)
    messages = [{"role": "nobody", "content": {"x": i}} for i in range(1000)]
    for request in ({"model": "champion", "messages": messages}, {"model": "m" * 10_000}):
        response = httpx.post(
            f"{api.root}/v1/chat/completions", json=request, headers=_bearer(key), timeout=30
        )
        assert 400 <= response.status_code < 500, response.text
        assert len(response.content) < 2_500
