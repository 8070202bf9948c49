"""Accounts and login: registration, passwords, access tokens (and attacks on them),
rotating refresh tokens, logout, roles, bans."""

from __future__ import annotations

import base64
import json
import threading
import time

import httpx
import jwt
import pytest

from platform_api.config import PlatformOptions
from platform_api.security import Passwords
from tests.platform.conftest import PASSWORD, Account


def _jwt_secret(api) -> str:
    return (api.settings.secrets_dir / "platform-jwt-secret").read_text().strip()


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# -- registration and login ------------------------------------------------------------
def test_register_then_login_returns_tokens_and_never_the_hash(api):
    response = api.http.post(
        "/auth/register",
        json={"email": "Alice@Example.org", "password": PASSWORD, "display_name": "Alice"},
    )
    assert response.status_code == 201
    user = response.json()
    assert user["email"] == "alice@example.org"
    assert user["role"] == "user" and user["status"] == "active"
    assert not {"password_hash", "totp_secret"} & set(user)

    login = api.http.post("/auth/login", json={"email": "ALICE@example.org", "password": PASSWORD})
    assert login.status_code == 200
    tokens = login.json()
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 15 * 60
    me = api.http.get("/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200 and me.json()["id"] == user["id"]
    assert (me.json()["has_password"], me.json()["oauth_providers"]) == (True, [])
    assert "password_hash" not in me.json() and "password_hash" not in user


def test_a_second_account_with_the_same_email_is_refused(api):
    api.register("bob")
    again = api.http.post("/auth/register", json={"email": "BOB@example.org", "password": PASSWORD})
    assert again.status_code == 409
    assert again.json()["code"] == "email_taken"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": "c@example.org", "password": "short"}, "password"),
        ({"email": "c@example.org"}, "password"),
        ({"email": "c@example.org", "password": PASSWORD, "role": "admin"}, "role"),
        ({"email": "c@example.org", "password": PASSWORD, "status": "active"}, "status"),
    ],
)
def test_bad_registrations_get_a_json_error_naming_the_field(api, body, field):
    response = api.http.post("/auth/register", json=body)
    assert response.status_code == 422
    error = response.json()
    assert error["code"] == "invalid_request"
    assert [e["field"] for e in error["errors"]] == [field]
    assert field in error["detail"]


def test_malformed_bodies_are_explained_not_500(api):
    response = api.http.post(
        "/auth/register", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert "not valid JSON" in response.json()["detail"]
    response = api.http.post("/auth/register", json=["a", "list"])
    assert response.status_code == 422
    assert "JSON object" in response.json()["detail"]


def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(api):
    api.register("carol")
    wrong = api.http.post("/auth/login", json={"email": "carol@example.org", "password": "x" * 12})
    unknown = api.http.post("/auth/login", json={"email": "nobody@example.org", "password": "x"})
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == {
            "detail": "e-mail or password is wrong",
            "code": "invalid_credentials",
        }
    )


def test_passwords_are_kept_exactly_as_typed(api):
    spaced = Account(email="dora@example.org", id="", password="  spaced out phrase  ")
    api.register("dora", password=spaced.password)
    assert api.login(spaced).tokens["access_token"]
    stripped = api.http.post(
        "/auth/login", json={"email": spaced.email, "password": spaced.password.strip()}
    )
    assert stripped.status_code == 401


def test_passwords_are_argon2id_at_the_library_defaults_unless_configured():
    default_hash = Passwords(PlatformOptions()).hash("correct horse battery")
    assert default_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def test_unknown_routes_and_methods_answer_json(api):
    missing = api.http.get("/no/such/thing")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    wrong_method = api.http.put("/auth/login", json={})
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == "method_not_allowed"


# -- access tokens and their attacks ---------------------------------------------------
def test_no_token_is_a_401_with_a_bearer_challenge(api):
    response = api.http.get("/users/me")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "Authorization: Bearer" in response.json()["detail"]


def test_alg_none_tampered_foreign_and_expired_tokens_are_refused(api):
    alice, mallory = api.user("alice"), api.user("mallory")
    token = mallory.tokens["access_token"]
    claims = _claims(token)
    header, payload, signature = token.split(".")

    # alg=none: an unsigned token claiming to be alice
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({**claims, 'sub': alice.id})}."
    # tampered: mallory's valid signature over a payload rewritten to say alice
    tampered = f"{header}.{_b64({**claims, 'sub': alice.id})}.{signature}"
    # signed with a key that is not the platform's
    foreign = jwt.encode({**claims, "sub": alice.id}, "not-the-platform-key" * 3, "HS256")
    # signed with the platform's key but expired
    secret = _jwt_secret(api)
    now = int(time.time())
    expired = jwt.encode({**claims, "iat": now - 3600, "exp": now - 60}, secret, "HS256")
    # signed with the platform's key but not an access token
    not_access = jwt.encode({**claims, "typ": "refresh"}, secret, "HS256")
    # signed, but naming a session that does not exist
    no_session = jwt.encode({**claims, "sid": "0" * 32}, secret, "HS256")

    for forged in (unsigned, tampered, foreign, expired, not_access, no_session, "garbage"):
        response = api.http.get("/users/me", headers={"Authorization": f"Bearer {forged}"})
        assert response.status_code == 401, forged
        assert response.json()["code"] == "invalid_token"
    expired_answer = api.http.get("/users/me", headers={"Authorization": f"Bearer {expired}"})
    assert "expired" in expired_answer.json()["detail"]
    # the genuine tokens still work
    assert api.http.get("/users/me", headers=mallory.headers).json()["id"] == mallory.id


def test_a_token_for_one_users_session_cannot_be_replayed_as_another_user(api):
    alice, mallory = api.user("alice"), api.user("mallory")
    secret = _jwt_secret(api)
    # even with the key, alice's id with mallory's session does not authenticate
    claims = {**_claims(mallory.tokens["access_token"]), "sub": alice.id}
    forged = jwt.encode(claims, secret, "HS256")
    assert (
        api.http.get("/users/me", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    )


# -- refresh tokens --------------------------------------------------------------------
def test_refresh_rotates_and_reusing_a_rotated_token_revokes_the_family(api):
    alice = api.user("alice")
    first_refresh = alice.tokens["refresh_token"]
    rotated = api.http.post("/auth/refresh", json={"refresh_token": first_refresh})
    assert rotated.status_code == 200
    second = rotated.json()
    assert second["refresh_token"] != first_refresh
    second_headers = {"Authorization": f"Bearer {second['access_token']}"}
    assert api.http.get("/users/me", headers=second_headers).status_code == 200

    # an attacker replays the first (already rotated) refresh token
    reuse = api.http.post("/auth/refresh", json={"refresh_token": first_refresh})
    assert reuse.status_code == 401
    assert reuse.json()["code"] == "refresh_token_reused"
    # the whole family is revoked: the latest refresh token and every access token of it
    latest = api.http.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert latest.status_code == 401
    for headers in (alice.headers, second_headers):
        response = api.http.get("/users/me", headers=headers)
        assert response.status_code == 401 and response.json()["code"] == "session_revoked"
    # other logins of the same user are unaffected; a new login works
    assert api.http.get("/users/me", headers=api.login(alice).headers).status_code == 200


def test_concurrent_refreshes_with_one_token_let_exactly_one_through(api):
    alice = api.user("alice")
    start = threading.Barrier(10)
    answers: list[int] = []

    def refresh() -> None:
        with httpx.Client(base_url=str(api.http.base_url), timeout=60) as http:
            start.wait()
            body = {"refresh_token": alice.tokens["refresh_token"]}
            answers.append(http.post("/auth/refresh", json=body).status_code)

    threads = [threading.Thread(target=refresh) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [200] + [401] * 9
    # the nine replays revoked the session, the winner's new tokens included
    assert api.http.get("/users/me", headers=alice.headers).status_code == 401


def test_an_unknown_refresh_token_is_refused(api):
    response = api.http.post("/auth/refresh", json={"refresh_token": "made-up"})
    assert response.status_code == 401 and response.json()["code"] == "invalid_token"


def test_logout_ends_the_session_at_once(api):
    alice = api.user("alice")
    other_login = api.login(api.register("bob"))
    assert api.http.post("/auth/logout", headers=alice.headers).status_code == 204
    assert api.http.get("/users/me", headers=alice.headers).status_code == 401
    refresh = api.http.post("/auth/refresh", json={"refresh_token": alice.tokens["refresh_token"]})
    assert refresh.status_code == 401
    assert api.http.get("/users/me", headers=other_login.headers).status_code == 200


def test_changing_the_password_ends_the_other_sessions(api):
    alice = api.user("alice")
    laptop = api.login(Account(email=alice.email, id=alice.id))
    changed = api.http.post(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
        headers=alice.headers,
    )
    assert changed.status_code == 204
    assert api.http.get("/users/me", headers=alice.headers).status_code == 200
    assert api.http.get("/users/me", headers=laptop.headers).status_code == 401
    old = api.http.post("/auth/login", json={"email": alice.email, "password": PASSWORD})
    assert old.status_code == 401
    wrong = api.http.post(
        "/users/me/password",
        json={"current_password": "not the password", "new_password": "another passphrase"},
        headers=alice.headers,
    )
    assert wrong.status_code == 403


# -- roles, mass assignment, bans ------------------------------------------------------
def test_a_user_cannot_promote_themself(api):
    alice = api.user("alice")
    for body in ({"role": "admin"}, {"display_name": "A", "role": "admin"}, {"status": "active"}):
        response = api.http.patch("/users/me", json=body, headers=alice.headers)
        assert response.status_code == 422, body
    response = api.http.patch(
        f"/admin/users/{alice.id}", json={"role": "admin"}, headers=alice.headers
    )
    assert response.status_code == 403 and response.json()["code"] == "admin_required"
    me = api.http.get("/users/me", headers=alice.headers).json()
    assert me["role"] == "user" and me["display_name"] == ""
    renamed = api.http.patch("/users/me", json={"display_name": "Alice"}, headers=alice.headers)
    assert renamed.status_code == 200 and renamed.json()["display_name"] == "Alice"


def test_admins_manage_users_but_not_their_own_role(api):
    root, alice = api.admin(), api.user("alice")
    listed = api.http.get("/admin/users", headers=root.headers)
    assert listed.status_code == 200
    assert {u["email"] for u in listed.json()} == {root.email, alice.email}
    promoted = api.http.patch(
        f"/admin/users/{alice.id}", json={"role": "admin"}, headers=root.headers
    )
    assert promoted.status_code == 200 and promoted.json()["role"] == "admin"
    assert api.http.get("/admin/users", headers=alice.headers).status_code == 200
    own = api.http.patch(f"/admin/users/{root.id}", json={"role": "user"}, headers=root.headers)
    assert own.status_code == 400 and own.json()["code"] == "own_account"
    bad = api.http.patch(f"/admin/users/{alice.id}", json={"role": "god"}, headers=root.headers)
    assert bad.status_code == 422
    missing = api.http.patch("/admin/users/nope", json={"role": "user"}, headers=root.headers)
    assert missing.status_code == 404


@pytest.mark.parametrize("status", ["banned", "suspended"])
def test_a_banned_user_is_refused_everywhere(api, status):
    root, alice = api.admin(), api.user("alice")
    key = api.http.post("/api-keys", json={"name": "script"}, headers=alice.headers).json()["key"]
    chat = api.chat(alice)
    ban = api.http.patch(f"/admin/users/{alice.id}", json={"status": status}, headers=root.headers)
    assert ban.status_code == 200

    for headers in (alice.headers, {"Authorization": f"Bearer {key}"}):
        for method, path in (
            ("GET", "/users/me"),
            ("GET", f"/chats/{chat['id']}"),
            ("GET", "/chats"),
        ):
            response = api.http.request(method, path, headers=headers)
            assert response.status_code == 403, (path, response.text)
            assert response.json()["code"] == f"account_{status}"
    login = api.http.post("/auth/login", json={"email": alice.email, "password": PASSWORD})
    assert login.status_code == 403 and login.json()["code"] == f"account_{status}"
    refresh = api.http.post("/auth/refresh", json={"refresh_token": alice.tokens["refresh_token"]})
    assert refresh.status_code == 403

    # reinstated, the account logs in again; the old session stays ended
    api.http.patch(f"/admin/users/{alice.id}", json={"status": "active"}, headers=root.headers)
    assert api.http.get("/users/me", headers=alice.headers).status_code == 401
    assert api.http.get("/users/me", headers=api.login(alice).headers).status_code == 200
