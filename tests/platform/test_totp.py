"""Two-factor authentication with TOTP: set up, confirm, required at login, each code
used once, turned off only with the password and a code."""

from __future__ import annotations

from sqlalchemy import text

from platform_api.db import make_engine
from tests.platform.conftest import PASSWORD, totp_code


def _login(api, account, code=None):
    body = {"email": account.email, "password": PASSWORD}
    if code is not None:
        body["totp_code"] = code
    return api.http.post("/auth/login", json=body)


def test_totp_lifecycle(api):
    alice = api.user("alice")
    setup = api.http.post("/auth/totp/setup", headers=alice.headers)
    assert setup.status_code == 200
    secret = setup.json()["secret"]
    assert setup.json()["otpauth_uri"].startswith("otpauth://totp/Orchard:alice%40example.org")
    # not on until confirmed
    assert _login(api, alice).status_code == 200

    valid = {totp_code(secret, offset) for offset in (-1, 0, 1)}
    wrong = next(f"{n:06d}" for n in range(10**6) if f"{n:06d}" not in valid)
    refused = api.http.post("/auth/totp/enable", json={"code": wrong}, headers=alice.headers)
    assert refused.status_code == 400 and refused.json()["code"] == "invalid_totp"
    enabled = api.http.post(
        "/auth/totp/enable", json={"code": totp_code(secret, -1)}, headers=alice.headers
    )
    assert enabled.status_code == 200 and enabled.json()["totp_enabled"] is True

    missing = _login(api, alice)
    assert missing.status_code == 401 and missing.json()["code"] == "totp_required"
    bad = _login(api, alice, "12345")
    assert bad.status_code == 422
    code = totp_code(secret, 0)
    assert _login(api, alice, code).status_code == 200
    replayed = _login(api, alice, code)
    assert replayed.status_code == 401 and replayed.json()["code"] == "invalid_totp"

    no_password = api.http.post(
        "/auth/totp/disable",
        json={"password": "not my password", "code": totp_code(secret, 1)},
        headers=alice.headers,
    )
    assert no_password.status_code == 403
    disabled = api.http.post(
        "/auth/totp/disable",
        json={"password": PASSWORD, "code": totp_code(secret, 1)},
        headers=alice.headers,
    )
    assert disabled.status_code == 200 and disabled.json()["totp_enabled"] is False
    assert _login(api, alice).status_code == 200


def test_the_secret_is_stored_encrypted(api):
    alice = api.user("alice")
    secret = api.http.post("/auth/totp/setup", headers=alice.headers).json()["secret"]
    engine = make_engine(api.database_url)
    try:
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT totp_secret FROM users")).scalar_one()
    finally:
        engine.dispose()
    assert stored and secret not in stored


def test_enable_needs_setup_first_and_cannot_run_twice(api):
    alice = api.user("alice")
    early = api.http.post("/auth/totp/enable", json={"code": "123456"}, headers=alice.headers)
    assert early.status_code == 409 and early.json()["code"] == "totp_not_set_up"
    secret = api.http.post("/auth/totp/setup", headers=alice.headers).json()["secret"]
    api.http.post("/auth/totp/enable", json={"code": totp_code(secret, 0)}, headers=alice.headers)
    again = api.http.post("/auth/totp/setup", headers=alice.headers)
    assert again.status_code == 409 and again.json()["code"] == "totp_enabled"
