"""Model access: one rule set (role rules + user rules, defaults without any) decides what
a user may pick for a chat, send to at each turn, and call through the OpenAI gateway;
administrators manage the rules, and every change is audited."""

from __future__ import annotations

import json

import openai
import pytest

from tests.platform.conftest import Account, Api
from tests.platform.test_chat_socket import socket

MODEL = "orchard-chat"
HELLO = [{"role": "user", "content": "Hi"}]


def _rule(api: Api, admin: Account, expect: int = 201, **body) -> dict:
    response = api.http.post("/admin/model-access", json=body, headers=admin.headers)
    assert response.status_code == expect, response.text
    return response.json()


def _grant(api: Api, admin: Account, account: Account) -> None:
    response = api.http.post(
        f"/admin/users/{account.id}/credits",
        json={"amount": 1_000_000, "reason": "access test"},
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text


def _client(api: Api, account: Account) -> openai.OpenAI:
    key = api.http.post("/api-keys", json={"name": "sdk"}, headers=account.headers).json()["key"]
    return openai.OpenAI(base_url=f"{api.root}/v1", api_key=key, max_retries=0, timeout=30)


def _listed(client: openai.OpenAI) -> list[str]:
    return sorted(m.id for m in client.models.list())


def _chat_models(api: Api, account: Account) -> dict:
    response = api.http.get("/models", headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


def _send(api: Api, account: Account, chat: dict):
    return api.http.post(
        f"/chats/{chat['id']}/messages", json={"content": "Hi"}, headers=account.headers
    )


def test_without_rules_everyone_has_the_aliases_and_admins_the_versions_too(api):
    root, alice = api.admin("root"), api.user("alice")
    _grant(api, root, alice)
    assert _chat_models(api, alice) == {
        "aliases": ["champion", "challenger"],
        "default": "champion",
    }
    assert api.chat(alice)["model_alias"] == "champion"
    assert _listed(_client(api, alice)) == ["challenger", "champion", MODEL]
    assert _listed(_client(api, root)) == ["challenger", "champion", MODEL, f"{MODEL}/3"]
    assert api.http.get("/models").status_code == 401


def test_a_role_rule_replaces_the_defaults_everywhere(api, serving):
    root, alice = api.admin("root"), api.user("alice")
    _grant(api, root, alice)
    rule = _rule(api, root, role="user", model="challenger")
    assert rule["role"] == "user" and rule["user_id"] is None and rule["created_by"] == root.id
    assert _rule(api, root, 200, role="user", model="challenger")["id"] == rule["id"]  # idempotent

    assert _chat_models(api, alice) == {"aliases": ["challenger"], "default": "challenger"}
    assert api.chat(alice)["model_alias"] == "challenger"  # the default follows the rules
    refused = api.http.post("/chats", json={"model_alias": "champion"}, headers=alice.headers)
    assert refused.status_code == 403
    assert refused.json()["code"] == "model_forbidden"
    assert refused.json()["detail"] == (
        "your account may not use the model 'champion': use one of challenger"
    )
    chat = api.chat(alice)
    patched = api.http.patch(
        f"/chats/{chat['id']}", json={"model_alias": "champion"}, headers=alice.headers
    )
    assert patched.status_code == 403 and patched.json()["code"] == "model_forbidden"
    unknown = api.http.post("/chats", json={"model_alias": "canary"}, headers=alice.headers)
    assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_model"

    client = _client(api, alice)
    assert _listed(client) == ["challenger"]
    for model in ("champion", MODEL):  # the bare name is the champion: refused with it
        with pytest.raises(openai.NotFoundError) as error:
            client.chat.completions.create(model=model, messages=HELLO, max_tokens=4)
        assert error.value.code == "model_not_found"
        assert "Use one of: challenger." in error.value.message
    client.chat.completions.create(model="challenger", messages=HELLO, max_tokens=4)
    assert [r["model"] for r in serving.requests] == ["challenger"]
    # Administrators are another role: their defaults stand.
    assert _chat_models(api, root)["aliases"] == ["champion", "challenger"]


def test_user_rules_add_to_the_role_rules(api):
    root, alice, bob = api.admin("root"), api.user("alice"), api.user("bob")
    _rule(api, root, role="user", model="challenger")
    _rule(api, root, user_id=alice.id, model=MODEL)  # the bare name grants the champion
    _rule(api, root, user_id=alice.id, model=f"{MODEL}/3")
    assert _chat_models(api, alice)["aliases"] == ["champion", "challenger"]
    assert _chat_models(api, bob)["aliases"] == ["challenger"]
    assert _listed(_client(api, alice)) == ["challenger", "champion", MODEL, f"{MODEL}/3"]
    assert _listed(_client(api, bob)) == ["challenger"]


def test_the_wildcard_grants_every_alias_and_version(api):
    root, alice = api.admin("root"), api.user("alice")
    _rule(api, root, user_id=alice.id, model="*")
    assert _listed(_client(api, alice)) == ["challenger", "champion", MODEL, f"{MODEL}/3"]
    # ...and a user rule alone is enough to leave the defaults: only what it names.
    bob = api.user("bob")
    _rule(api, root, user_id=bob.id, model=f"{MODEL}/3")
    assert _chat_models(api, bob) == {"aliases": [], "default": None}
    assert _listed(_client(api, bob)) == [f"{MODEL}/3"]
    refused = api.http.post("/chats", json={}, headers=bob.headers)
    assert refused.status_code == 403
    assert refused.json()["detail"].endswith("ask an administrator")


def test_a_removed_rule_is_enforced_at_the_next_send(api, serving):
    root, alice = api.admin("root"), api.user("alice")
    _grant(api, root, alice)
    grant = _rule(api, root, user_id=alice.id, model="champion")
    _rule(api, root, role="user", model="challenger")
    chat = api.chat(alice, model_alias="champion")
    assert _send(api, alice, chat).status_code == 200
    assert (
        api.http.delete(f"/admin/model-access/{grant['id']}", headers=root.headers).status_code
        == 204
    )
    refused = _send(api, alice, chat)
    assert refused.status_code == 403 and refused.json()["code"] == "model_forbidden"
    messages = api.http.get(f"/chats/{chat['id']}/messages", headers=alice.headers).json()
    assert len(messages) == 2  # the refused turn wrote nothing
    assert len(serving.requests) == 1
    answer = messages[-1]["id"]
    regenerate = api.http.post(
        f"/chats/{chat['id']}/messages/{answer}/regenerate", headers=alice.headers
    )
    assert regenerate.status_code == 403
    with socket(api, chat, alice.tokens["access_token"]) as ws:  # the WebSocket too
        ws.send(type="send", content="Hi")
        error = ws.recv()
        assert (error["type"], error["status"], error["code"]) == ("error", 403, "model_forbidden")
    assert len(serving.requests) == 1
    # Switching the chat to an allowed model lets it go on.
    api.http.patch(
        f"/chats/{chat['id']}", json={"model_alias": "challenger"}, headers=alice.headers
    )
    assert _send(api, alice, chat).status_code == 200
    assert serving.requests[-1]["model"] == "challenger"


def test_only_admins_manage_rules_and_bad_rules_are_refused(api):
    root, alice = api.admin("root"), api.user("alice")
    assert api.http.get("/admin/model-access", headers=alice.headers).status_code == 403
    body = {"role": "user", "model": "champion"}
    assert api.http.post("/admin/model-access", json=body, headers=alice.headers).status_code == 403
    for bad, says in (
        ({"model": "champion"}, "send either role or user_id"),
        ({"role": "user", "user_id": alice.id, "model": "champion"}, "send either role"),
        ({"role": "boss", "model": "champion"}, "role"),
        ({"role": "user", "model": "gpt-4"}, "is not one this platform serves"),
        ({"role": "user", "model": f"{MODEL}/latest"}, "is not one this platform serves"),
        ({"user_id": "nobody", "model": "champion"}, "no user has the id 'nobody'"),
        ({"role": "user", "model": "champion", "extra": 1}, "unknown field"),
    ):
        response = api.http.post("/admin/model-access", json=bad, headers=root.headers)
        assert response.status_code == 422, (bad, response.text)
        assert says in response.json()["detail"], (bad, response.text)
    assert api.http.get("/admin/model-access", headers=root.headers).json() == []
    assert api.http.delete("/admin/model-access/999", headers=root.headers).status_code == 404
    for bad_id in ("0", "9" * 30, "x"):
        response = api.http.delete(f"/admin/model-access/{bad_id}", headers=root.headers)
        assert response.status_code == 422, (bad_id, response.text)


def test_granting_and_revoking_are_audited(api):
    root, alice = api.admin("root"), api.user("alice")
    rule = _rule(api, root, user_id=alice.id, model="challenger")
    assert [r["id"] for r in api.http.get("/admin/model-access", headers=root.headers).json()] == [
        rule["id"]
    ]
    api.http.delete(f"/admin/model-access/{rule['id']}", headers=root.headers)
    entries = api.http.get("/admin/audit", headers=root.headers).json()
    found = [
        (e["action"], e["target"], e["detail"]["model"])
        for e in entries
        if e["action"].startswith("model_access.")
    ]
    assert found == [
        ("model_access.revoke", alice.id, "challenger"),
        ("model_access.grant", alice.id, "challenger"),
    ]
    assert json.dumps(api.http.get("/admin/model-access", headers=root.headers).json()) == "[]"
