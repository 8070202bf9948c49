"""Export all my data; delete my account (chats, keys, sessions and personal data erased,
the credits ledger kept on an anonymous row)."""

from __future__ import annotations

from sqlmodel import Session, select

from platform_api.db import make_engine
from platform_api.models import CreditEntry, Message, User
from tests.platform.conftest import PASSWORD, totp_code
from tests.platform.test_feedback import answered_chat, feedback_url


def delete_me(api, account, **body):
    return api.http.request(
        "DELETE", "/users/me", json={"password": PASSWORD, **body}, headers=account.headers
    )


def test_export_holds_everything_of_mine_and_nothing_of_others(api, serving):
    alice, bob = api.user("alice"), api.user("bob")
    folder = api.http.post("/folders", json={"name": "Work"}, headers=alice.headers).json()
    chat, answer = answered_chat(api, alice, "Hi there", folder_id=folder["id"])
    api.http.put(feedback_url(chat, answer), json={"rating": "up"}, headers=alice.headers)
    api.http.post("/api-keys", json={"name": "laptop"}, headers=alice.headers)
    api.http.post(f"/chats/{chat['id']}/shares", headers=alice.headers)
    answered_chat(api, bob, "Bob's secret question")

    response = api.http.get("/users/me/export", headers=alice.headers)
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    data = response.json()
    assert data["account"]["email"] == "alice@example.org"
    assert [f["name"] for f in data["folders"]] == ["Work"]
    (exported,) = data["chats"]
    assert [m["content"] for m in exported["messages"]] == ["Hi there", "Hello, world!"]
    assert data["feedback"][0]["rating"] == "up"
    assert [k["name"] for k in data["api_keys"]] == ["laptop"]
    assert len(data["share_links"]) == 1 and "token" not in data["share_links"][0]
    # the test chat's credits (conftest), then the answer's reservation and its refund
    ledger = data["credits"]["ledger"]
    assert [e["kind"] for e in ledger] == ["grant", "debit", "refund"]
    assert data["credits"]["balance"] == ledger[-1]["balance_after"]
    text = response.text
    assert "Bob's secret" not in text and "password_hash" not in text and "key_hash" not in text


def test_deleting_my_account_erases_it_and_frees_the_email(api, serving):
    alice = api.user("alice")
    chat, _ = answered_chat(api, alice, "Hi there")
    key = api.http.post("/api-keys", json={"name": "k"}, headers=alice.headers).json()["key"]
    root = api.admin()
    api.http.post(
        f"/admin/users/{alice.id}/credits", json={"amount": 5, "reason": "x"}, headers=root.headers
    )
    refresh = alice.tokens["refresh_token"]

    assert delete_me(api, alice, password="wrong password!").status_code == 403
    by_key = api.http.request(
        "DELETE",
        "/users/me",
        json={"password": PASSWORD},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert (by_key.status_code, by_key.json()["code"]) == (403, "login_required")
    assert delete_me(api, alice).status_code == 204

    # Every credential it had is dead, and so is the login.
    assert api.http.get("/users/me", headers=alice.headers).status_code == 401
    assert api.http.get("/users/me", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert api.http.post("/auth/refresh", json={"refresh_token": refresh}).status_code == 401
    login = {"email": alice.email, "password": PASSWORD}
    assert api.http.post("/auth/login", json=login).status_code == 401
    # The e-mail can be registered again, as a new, empty account.
    again = api.user("alice")
    assert again.id != alice.id
    assert api.http.get("/chats", headers=again.headers).json() == []

    engine = make_engine(api.database_url)
    try:
        with Session(engine) as session:
            erased = session.get(User, alice.id)
            assert erased.email.endswith("@deleted.invalid") and erased.deleted_at is not None
            assert erased.totp_secret is None and erased.display_name == ""
            assert session.exec(select(Message).where(Message.chat_id == chat["id"])).all() == []
            # The ledger stays, for accounting, on the anonymous row.
            entries = list(session.exec(select(CreditEntry).where(CreditEntry.user_id == alice.id)))
            assert [e.kind for e in entries] == ["grant", "debit", "refund", "grant"]
            assert [e.amount for e in entries][-1] == 5
    finally:
        engine.dispose()
    listed = api.http.get("/admin/users", headers=root.headers).json()
    assert any(u["id"] == alice.id and u["deleted_at"] for u in listed)


def test_deleting_an_account_with_2fa_needs_a_code(api):
    alice = api.user("alice")
    secret = api.http.post("/auth/totp/setup", headers=alice.headers).json()["secret"]
    api.http.post("/auth/totp/enable", json={"code": totp_code(secret, 0)}, headers=alice.headers)
    missing = delete_me(api, alice)
    assert (missing.status_code, missing.json()["code"]) == (400, "totp_required")
    # The enabling code's step is spent (no replay): the next step's code is accepted.
    assert delete_me(api, alice, totp_code=totp_code(secret, 1)).status_code == 204
