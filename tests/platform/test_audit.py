"""Every administrator action lands in the audit log, in the action's own transaction."""

from __future__ import annotations


def test_user_changes_grants_and_exports_are_audited(api):
    root, alice = api.admin(), api.user("alice")
    api.http.patch(f"/admin/users/{alice.id}", json={"status": "suspended"}, headers=root.headers)
    grant = {"amount": 7, "reason": "welcome"}
    api.http.post(f"/admin/users/{alice.id}/credits", json=grant, headers=root.headers)
    api.http.get("/admin/feedback/export", headers=root.headers)
    # A refused action (an unknown user) leaves no entry.
    api.http.post("/admin/users/nobody/credits", json=grant, headers=root.headers)

    log = api.http.get("/admin/audit", headers=root.headers).json()
    assert [(e["action"], e["target"]) for e in log] == [
        ("feedback.export", ""),
        ("credits.grant", alice.id),
        ("user.update", alice.id),
    ]
    assert log[1]["detail"] == {"actor_email": root.email, "amount": 7, "reason": "welcome"}
    assert log[2]["detail"]["status"] == "suspended" and log[2]["actor_id"] == root.id
    only = api.http.get("/admin/audit", params={"action": "user.update"}, headers=root.headers)
    assert [e["action"] for e in only.json()] == ["user.update"]
    assert api.http.get("/admin/audit", headers=alice.headers).status_code == 403
