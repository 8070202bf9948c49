"""Personal API keys: shown once, stored hashed, usable as a bearer credential, rotated
(scopes kept), revoked, with last use recorded; they cannot manage credentials or the
account itself, whatever their scopes (test_api_key_scopes.py)."""

from __future__ import annotations

from sqlalchemy import text

from platform_api.db import make_engine


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_key_is_shown_once_stored_hashed_and_authenticates(api):
    alice = api.user("alice")
    created = api.http.post("/api-keys", json={"name": "laptop script"}, headers=alice.headers)
    assert created.status_code == 201
    key = created.json()
    assert key["key"].startswith("orch_") and key["prefix"] == key["key"][:12]
    assert key["last_used_at"] is None

    listed = api.http.get("/api-keys", headers=alice.headers).json()
    assert [k["id"] for k in listed] == [key["id"]]
    assert "key" not in listed[0] and "key_hash" not in listed[0]
    engine = make_engine(api.database_url)
    try:
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT key_hash FROM api_keys")).scalar_one()
    finally:
        engine.dispose()
    assert key["key"] not in stored and len(stored) == 64

    assert key["scopes"] == ["inference"]  # the gateway only, unless asked (test_api_key_scopes)
    models = api.http.get(f"{api.root}/v1/models", headers=_bearer(key["key"]))
    assert models.status_code == 200
    used = api.http.get("/api-keys", headers=alice.headers).json()[0]
    assert used["last_used_at"] is not None


def test_rotate_replaces_the_key_and_revoke_ends_it(api):
    alice = api.user("alice")
    body = {"name": "ci", "scopes": ["chats:read"]}
    old = api.http.post("/api-keys", json=body, headers=alice.headers).json()
    rotated = api.http.post(f"/api-keys/{old['id']}/rotate", headers=alice.headers)
    assert rotated.status_code == 201
    new = rotated.json()
    assert new["name"] == "ci" and new["key"] != old["key"]
    assert new["scopes"] == ["chats:read"]
    assert api.http.get("/chats", headers=_bearer(old["key"])).status_code == 401
    assert api.http.get("/chats", headers=_bearer(new["key"])).status_code == 200

    assert api.http.delete(f"/api-keys/{new['id']}", headers=alice.headers).status_code == 204
    refused = api.http.get("/chats", headers=_bearer(new["key"]))
    assert refused.status_code == 401 and refused.json()["code"] == "invalid_api_key"
    again = api.http.delete(f"/api-keys/{new['id']}", headers=alice.headers)
    assert again.status_code == 404


def test_another_users_key_is_not_found(api):
    alice, mallory = api.user("alice"), api.user("mallory")
    key = api.http.post("/api-keys", json={"name": "mine"}, headers=alice.headers).json()
    for method, path in (
        ("DELETE", f"/api-keys/{key['id']}"),
        ("POST", f"/api-keys/{key['id']}/rotate"),
    ):
        response = api.http.request(method, path, headers=mallory.headers)
        assert response.status_code == 404
    assert api.http.get("/api-keys", headers=mallory.headers).json() == []
    assert api.http.get(f"{api.root}/v1/models", headers=_bearer(key["key"])).status_code == 200


def test_a_key_cannot_manage_keys_passwords_or_2fa(api):
    alice = api.user("alice")
    every_scope = {
        "name": "bot",
        "scopes": ["inference", "chats:read", "chats:write", "usage:read"],
    }
    key = api.http.post("/api-keys", json=every_scope, headers=alice.headers).json()["key"]
    for method, path, body in (
        ("POST", "/api-keys", {"name": "another"}),
        ("GET", "/api-keys", None),
        ("POST", "/users/me/password", {"current_password": "x", "new_password": "y" * 12}),
        ("POST", "/auth/totp/setup", None),
        ("POST", "/auth/logout", None),
        ("GET", "/users/me", None),
        ("PATCH", "/users/me", {"display_name": "Mallory"}),
        ("GET", "/users/me/export", None),
    ):
        response = api.http.request(method, path, json=body, headers=_bearer(key))
        assert response.status_code == 403, path
        assert response.json()["code"] == "login_required"


def test_made_up_keys_are_refused(api):
    response = api.http.get("/chats", headers=_bearer("orch_" + "A" * 43))
    assert response.status_code == 401 and response.json()["code"] == "invalid_api_key"
