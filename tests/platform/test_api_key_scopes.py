"""API keys reach what their scopes name and nothing more: `inference` (the /v1 gateway)
by default, `chats:read`, `chats:write`, `usage:read` when asked for at creation; any
other route is 403 naming the missing scope, and the account itself (profile, password,
2FA, keys, export, deletion, logout) and the admin pages are never reachable with a key.

The walk goes over the app's own routes, so a route added later is covered: it must name
a scope to be reachable with a key at all."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute

from platform_api.app import create_app
from platform_api.deps import API_KEY_SCOPES, bearer_token, get_principal
from tests.platform.conftest import FAST_ARGON2, Account, Api
from tests.platform.test_chat_socket import socket

SCOPE_REFUSALS = {"insufficient_scope", "login_required"}
# Routes that take no credential (and the chat WebSocket, whose credential is a frame).
PUBLIC = {
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
    ("GET", "/api/v1/auth/oauth/providers"),
    ("GET", "/api/v1/auth/oauth/{name}/login"),
    ("GET", "/api/v1/auth/oauth/{name}/callback"),
    ("POST", "/api/v1/auth/oauth/exchange"),
    ("GET", "/api/v1/shared/{token}"),
    ("WEBSOCKET", "/api/v1/chats/{chat_id}/ws"),
}
NEVER_WITH_A_KEY = {  # the account itself: no scope reaches these
    ("GET", "/api/v1/users/me"),
    ("PATCH", "/api/v1/users/me"),
    ("DELETE", "/api/v1/users/me"),
    ("POST", "/api/v1/users/me/password"),
    ("GET", "/api/v1/users/me/export"),
    ("GET", "/api/v1/api-keys"),
    ("POST", "/api/v1/api-keys"),
    ("POST", "/api/v1/auth/totp/setup"),
    ("POST", "/api/v1/auth/logout"),
}


def routes(api: Api) -> dict[tuple[str, str], str | None]:
    """Every route that takes a credential, with the one scope a key needs for it (None:
    no key may use it). The app's routes, read from a fresh app with the test's settings."""
    found: dict[tuple[str, str], str | None] = {}
    for route in create_app(api.settings, FAST_ARGON2).routes:
        if not isinstance(route, APIRoute | APIWebSocketRoute):
            continue
        methods = getattr(route, "methods", None) or {"WEBSOCKET"}
        authenticated, scopes, pending = False, set(), [route.dependant]
        while pending:
            dependant = pending.pop()
            # bearer_token: the route authenticates in its own worker-thread call
            authenticated |= dependant.call in (get_principal, bearer_token)
            scopes |= set(dependant.own_oauth_scopes or ())
            pending.extend(dependant.dependencies)
        for method in methods:
            if not authenticated:
                assert (method, route.path) in PUBLIC, f"{method} {route.path} takes no credential"
                continue
            assert len(scopes) <= 1 and scopes <= set(API_KEY_SCOPES), (route.path, scopes)
            found[(method, route.path)] = next(iter(scopes), None)
    return found


class Keys:
    """`account`'s key with `scopes`, rotated every 40 requests (rotation keeps the
    scopes): the walk sends more than the per-key rate limit allows in a minute."""

    def __init__(self, api: Api, account: Account, scopes: list[str]) -> None:
        self.api, self.account = api, account
        created = api.http.post(
            "/api-keys", json={"name": "walk", "scopes": scopes}, headers=account.headers
        )
        assert created.status_code == 201, created.text
        self.key, self.used = created.json(), 0
        assert self.key["scopes"] == scopes

    def headers(self) -> dict[str, str]:
        if self.used == 40:
            rotated = self.api.http.post(
                f"/api-keys/{self.key['id']}/rotate", headers=self.account.headers
            )
            assert rotated.json()["scopes"] == self.key["scopes"]
            self.key, self.used = rotated.json(), 0
        self.used += 1
        return {"Authorization": f"Bearer {self.key['key']}"}


def call(api: Api, keys: Keys, method: str, path: str) -> httpx.Response:
    url = api.root + re.sub(r"\{[^}]+\}", "1", path)
    body = {} if method in ("POST", "PUT", "PATCH", "DELETE") else None
    return httpx.request(method, url, json=body, headers=keys.headers(), timeout=30)


def refusal(response: httpx.Response) -> str | None:
    """The scope refusal's code, in either error shape; None when it is not one."""
    if response.status_code != 403:
        return None
    body = response.json()
    code = body["error"]["code"] if "error" in body else body["code"]
    return code if code in SCOPE_REFUSALS else None


@pytest.mark.parametrize("scopes", [None, ["chats:read"], ["chats:write"], ["usage:read"]])
def test_a_key_reaches_exactly_what_its_scopes_name(api: Api, serving, scopes):
    alice = api.user("alice")
    if scopes is None:  # a key made without asking: the gateway only
        created = api.http.post("/api-keys", json={"name": "sdk"}, headers=alice.headers)
        assert created.json()["scopes"] == ["inference"]
        scopes = ["inference"]
    keys = Keys(api, alice, scopes)
    table = routes(api)
    assert NEVER_WITH_A_KEY <= {route for route, scope in table.items() if scope is None}
    assert table[("POST", "/v1/chat/completions")] == "inference"
    wrong = []
    for (method, path), scope in sorted(table.items()):
        response = call(api, keys, method, path)
        assert response.status_code < 500, (method, path, response.text)
        code = refusal(response)
        if scope in scopes:
            if code is not None:
                wrong.append(f"{method} {path} ({scope}) refused: {response.text}")
        elif scope is None and code != "login_required":
            wrong.append(f"{method} {path} (no key) answered {response.status_code}")
        elif scope is not None and code != "insufficient_scope":
            wrong.append(f"{method} {path} ({scope}) answered {response.status_code}")
        elif scope is not None and repr(scope) not in response.text:
            wrong.append(f"{method} {path}: the refusal does not name {scope!r}")
    assert not wrong, "\n".join(wrong)


def test_a_missing_scope_is_named_in_each_error_shape(api: Api, serving):
    alice = api.user("alice")
    chat = api.chat(alice)
    sdk = Keys(api, alice, ["inference"])
    refused = httpx.get(f"{api.root}/api/v1/chats", headers=sdk.headers())
    assert refused.status_code == 403
    assert refused.json()["code"] == "insufficient_scope"
    assert "lacks the scope 'chats:read'" in refused.json()["detail"]
    assert 'scope="chats:read"' in refused.headers["WWW-Authenticate"]
    reader = Keys(api, alice, ["chats:read", "usage:read"])
    gateway = httpx.get(f"{api.root}/v1/models", headers=reader.headers())
    assert gateway.status_code == 403
    error = gateway.json()["error"]
    assert (error["type"], error["code"]) == ("permission_error", "insufficient_scope")
    assert "'inference'" in error["message"]
    # What the reader may do, it does.
    listed = httpx.get(f"{api.root}/api/v1/chats", headers=reader.headers())
    assert [c["id"] for c in listed.json()] == [chat["id"]]
    usage = httpx.get(f"{api.root}/api/v1/usage", headers=reader.headers())
    assert usage.status_code == 200
    # The chat WebSocket sends messages: chats:write.
    with socket(api, chat) as ws:
        error = ws.auth(reader.key["key"])
        assert (error["code"], "'chats:write'" in error["detail"]) == ("insufficient_scope", True)
        assert ws.closed() == (4403, "insufficient_scope")
    writer = Keys(api, alice, ["chats:write"])
    with socket(api, chat, writer.key["key"]) as ws:
        ws.send(type="send", content="via a chats:write key")
        assert ws.turn()[-1]["status"] == "complete"


def test_scopes_are_chosen_from_the_list_and_shown(api: Api):
    alice = api.user("alice")
    for scopes, field in (([], "scopes"), (["admin"], "scopes.0"), ("inference", "scopes")):
        response = api.http.post(
            "/api-keys", json={"name": "x", "scopes": scopes}, headers=alice.headers
        )
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == field
    both = api.http.post(
        "/api-keys",
        json={"name": "both", "scopes": ["usage:read", "inference", "usage:read"]},
        headers=alice.headers,
    )
    assert both.json()["scopes"] == ["inference", "usage:read"]  # distinct, in the list's order
    listed = api.http.get("/api-keys", headers=alice.headers).json()
    assert [(k["name"], k["scopes"]) for k in listed] == [("both", ["inference", "usage:read"])]
