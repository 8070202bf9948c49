"""Feature flags: administrators set them (validated, audited); a flag is on for a user
when enabled for everyone or for their role, and always for the users it names; users
read the flags on for them. The `shares` flag gates share links (on with no row)."""

from __future__ import annotations

from tests.platform.conftest import Account, Api


def _put(api: Api, admin: Account, key: str, expect: int = 200, **body) -> dict:
    response = api.http.put(f"/admin/feature-flags/{key}", json=body, headers=admin.headers)
    assert response.status_code == expect, response.text
    return response.json()


def _features(api: Api, account: Account) -> list[str]:
    response = api.http.get("/features", headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()["features"]


def _share(api: Api, account: Account, chat: dict):
    return api.http.post(f"/chats/{chat['id']}/shares", headers=account.headers)


def test_flags_are_on_for_everyone_a_role_or_named_users(api):
    root, alice, bob = api.admin("root"), api.user("alice"), api.user("bob")
    assert _features(api, alice) == ["shares"]  # a known flag without a row: its default
    flag = _put(api, root, "beta.search", description="New search", enabled=True)
    assert flag == {
        "key": "beta.search",
        "description": "New search",
        "enabled": True,
        "roles": [],
        "users": [],
        "stored": True,
        "updated_at": flag["updated_at"],
        "updated_by": root.id,
    }
    assert _features(api, alice) == ["beta.search", "shares"]
    _put(api, root, "beta.search", enabled=True, roles=["admin"])
    assert _features(api, alice) == ["shares"]
    assert "beta.search" in _features(api, root)
    _put(api, root, "beta.search", enabled=False, users=[bob.id])
    assert _features(api, alice) == ["shares"]
    assert _features(api, bob) == ["beta.search", "shares"]
    assert "beta.search" not in _features(api, root)
    assert api.http.get("/features").status_code == 401


def test_admins_list_stored_and_known_flags(api):
    root, alice = api.admin("root"), api.user("alice")
    assert api.http.get("/admin/feature-flags", headers=alice.headers).status_code == 403
    assert api.http.put("/admin/feature-flags/x", json={}, headers=alice.headers).status_code == 403
    listed = api.http.get("/admin/feature-flags", headers=root.headers).json()
    assert [(f["key"], f["enabled"], f["stored"]) for f in listed] == [("shares", True, False)]
    _put(api, root, "zeta", enabled=True)
    _put(api, root, "shares", enabled=False)
    listed = api.http.get("/admin/feature-flags", headers=root.headers).json()
    assert [(f["key"], f["enabled"], f["stored"]) for f in listed] == [
        ("shares", False, True),
        ("zeta", True, True),
    ]


def test_bad_flags_are_refused_with_what_to_fix(api):
    root = api.admin("root")
    for key in ("Shares", "a b", "x" * 65, "ünï"):
        response = api.http.put(f"/admin/feature-flags/{key}", json={}, headers=root.headers)
        assert response.status_code == 422, (key, response.text)
    for body, says in (
        ({"roles": ["boss"]}, "roles.0"),
        ({"users": ["nobody", root.id, "ghost"]}, "users: no user has the id nobody, ghost"),
        ({"enabled": "maybe"}, "enabled"),
        ({"colour": "red"}, "unknown field 'colour'"),
        ({"description": "d" * 201}, "description"),
    ):
        response = api.http.put("/admin/feature-flags/ok", json=body, headers=root.headers)
        assert response.status_code == 422, (body, response.text)
        assert says in response.json()["detail"], (body, response.text)
    assert api.http.get("/admin/feature-flags/ok", headers=root.headers).status_code in (404, 405)
    assert [
        f["key"] for f in api.http.get("/admin/feature-flags", headers=root.headers).json()
    ] == ["shares"]
    assert api.http.delete("/admin/feature-flags/ok", headers=root.headers).status_code == 404


def test_the_shares_flag_gates_creating_and_reading_share_links(api):
    root, alice, bob = api.admin("root"), api.user("alice"), api.user("bob")
    chat = api.chat(alice)
    created = _share(api, alice, chat)
    assert created.status_code == 201  # no row: on, as before flags existed
    path = created.json()["path"].removeprefix("/api/v1")
    assert api.http.get(path).status_code == 200

    _put(api, root, "shares", enabled=False, users=[bob.id])
    refused = _share(api, alice, chat)
    assert refused.status_code == 403 and refused.json()["code"] == "feature_disabled"
    assert api.http.get(path).status_code == 404  # hidden while off, not revoked
    assert _share(api, bob, api.chat(bob)).status_code == 201  # named: on for bob
    assert "shares" not in _features(api, alice)

    _put(api, root, "shares", enabled=True, roles=["user"])
    assert api.http.get(path).status_code == 200
    assert api.http.delete("/admin/feature-flags/shares", headers=root.headers).status_code == 204
    assert _share(api, alice, chat).status_code == 201  # back to the default
    assert api.http.get(path).status_code == 200


def test_every_flag_change_is_audited(api):
    root, alice = api.admin("root"), api.user("alice")
    _put(api, root, "shares", enabled=False, users=[alice.id])
    api.http.delete("/admin/feature-flags/shares", headers=root.headers)
    entries = api.http.get("/admin/audit", headers=root.headers).json()
    found = [(e["action"], e["target"]) for e in entries if e["action"].startswith("feature_flag.")]
    assert found == [("feature_flag.delete", "shares"), ("feature_flag.set", "shares")]
    setting = next(e for e in entries if e["action"] == "feature_flag.set")
    assert setting["detail"]["users"] == [alice.id] and setting["detail"]["enabled"] is False
