"""Sign-in with OAuth2/OIDC providers, end to end over real HTTP: the browser (an httpx
client with a cookie jar, following redirects by hand) goes from the platform API to the
local stand-in providers (`oidc_provider.py`) and back, then the UI's step, the exchange
of the one-time code, gives a TokenPair that works like a password login's."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from sqlalchemy import create_engine, text

from orchard.settings import Settings, SettingsError, load_settings
from platform_api.app import create_app
from platform_api.db import normalize_url
from platform_api.manage import make_admin
from platform_api.models import utcnow
from tests.conftest import free_port
from tests.platform.conftest import FAST_ARGON2, Api, LiveServer, serve_api, totp_code
from tests.platform.oidc_provider import GitHubProvider, OidcProvider


@pytest.fixture
def oidc() -> Iterator[OidcProvider]:
    provider = OidcProvider()
    yield provider
    provider.stop()


@pytest.fixture
def github() -> Iterator[GitHubProvider]:
    provider = GitHubProvider()
    yield provider
    provider.stop()


@pytest.fixture
def api(settings: Settings, database_url: str, oidc, github) -> Iterator[Api]:
    """The platform with both stand-ins configured; its public URL is its own address."""
    port = free_port()
    settings = Settings(
        home=settings.home,
        database_url=database_url,
        serving_url=settings.serving_url,
        public_url=f"http://127.0.0.1:{port}",
        oauth_providers={
            "corp": {
                "kind": "oidc",
                "issuer": oidc.url,
                "client_id": oidc.client_id,
                "client_secret": oidc.client_secret,
                "label": "Corp SSO",
            },
            "github": {
                "kind": "github",
                "client_id": github.client_id,
                "client_secret": github.client_secret,
                "authorize_url": f"{github.url}/login/oauth/authorize",
                "token_url": f"{github.url}/login/oauth/access_token",
                "api_base_url": github.url,
            },
        },
    )
    server = LiveServer(create_app(settings, FAST_ARGON2))
    server.port = server.server.config.port = port  # the port public_url names
    oidc.redirect_uris = {f"{server.url}/api/v1/auth/oauth/corp/callback"}
    github.redirect_uris = {f"{server.url}/api/v1/auth/oauth/github/callback"}
    with serve_api(settings, database_url, server) as api:
        yield api


def start(api: Api, provider: str, browser: httpx.Client | None = None) -> tuple[httpx.Client, str]:
    """Click the button and consent: (the browser, the callback URL the provider sent it to)."""
    browser = browser or httpx.Client(timeout=30)
    login = browser.get(f"{api.root}/api/v1/auth/oauth/{provider}/login")
    assert login.status_code == 302, login.text
    consent = browser.get(login.headers["location"])
    assert consent.status_code == 302, consent.text
    return browser, consent.headers["location"]


def finish(api: Api, browser: httpx.Client, callback: str) -> dict[str, str]:
    """Follow the provider's redirect: the UI page's fragment, as a dict."""
    back = browser.get(callback)
    assert back.status_code == 302, back.text
    location = urlsplit(back.headers["location"])
    assert f"{location.scheme}://{location.netloc}" == api.root
    assert back.headers["cache-control"] == "no-store"
    return {"page": location.path, **{k: v[0] for k, v in parse_qs(location.fragment).items()}}


def sign_in(api: Api, provider: str = "corp") -> dict[str, str]:
    browser, callback = start(api, provider)
    try:
        return finish(api, browser, callback)
    finally:
        browser.close()


def exchange(api: Api, code: str, **extra) -> httpx.Response:
    return api.http.post("/auth/oauth/exchange", json={"code": code, **extra})


def tokens(api: Api, provider: str = "corp") -> dict:
    landed = sign_in(api, provider)
    assert landed["page"] == "/oauth/callback", landed
    response = exchange(api, landed["code"])
    assert response.status_code == 200, response.text
    return response.json()


def me(api: Api, pair: dict) -> dict:
    response = api.http.get(
        "/users/me", headers={"Authorization": f"Bearer {pair['access_token']}"}
    )
    assert response.status_code == 200, response.text
    return response.json()


def sql(api: Api, statement: str, **params) -> list:
    engine = create_engine(normalize_url(api.database_url))
    try:
        with engine.begin() as connection:
            result = connection.execute(text(statement), params)
            return result.all() if result.returns_rows else []
    finally:
        engine.dispose()


def test_providers_are_listed_with_their_labels(api):
    response = api.http.get("/auth/oauth/providers")
    assert response.status_code == 200
    assert response.json() == [
        {"name": "corp", "label": "Corp SSO"},
        {"name": "github", "label": "github"},
    ]


def test_oidc_sign_in_makes_a_user_whose_tokens_work_and_finds_them_again(api, oidc):
    first = tokens(api)
    assert set(first) >= {"access_token", "refresh_token", "expires_in"}
    user = me(api, first)
    assert user["email"] == "ada@example.org" and user["display_name"] == "Ada"
    refreshed = api.http.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert refreshed.status_code == 200  # a login session like any other
    oidc.user["email"] = "ada.new@example.org"  # the address changed; the subject did not
    assert me(api, tokens(api))["id"] == user["id"]
    rows = sql(api, "SELECT provider, subject, email, last_login_at FROM oauth_identities")
    assert [r[:3] for r in rows] == [("corp", "oidc-user-1", "ada.new@example.org")]
    assert rows[0][3] is not None
    # Everything a real provider checks happened: discovery, PKCE and code at /token, JWKS.
    assert {"GET /.well-known/openid-configuration", "POST /token", "GET /jwks"} <= set(
        oidc.requests
    )


def test_a_verified_address_links_to_the_existing_account(api, oidc):
    account = api.user("ada")  # ada@example.org, with a password
    assert api.http.get("/users/me", headers=account.headers).json()["oauth_providers"] == []
    pair = tokens(api)
    linked = me(api, pair)
    assert linked["id"] == account.id
    assert (linked["has_password"], linked["oauth_providers"]) == (True, ["corp"])
    api.login(account)  # the password still works


def test_me_says_whether_the_account_has_a_password_and_its_providers(api, github):
    pair = tokens(api)
    assert (me(api, pair)["has_password"], me(api, pair)["oauth_providers"]) == (False, ["corp"])
    github.emails = [{"email": "ada@example.org", "primary": True, "verified": True}]
    tokens(api, "github")  # the same verified address at GitHub: a second linked provider
    assert me(api, pair)["oauth_providers"] == ["github", "corp"]  # last used first
    done = api.http.post(
        "/users/me/password", json={"new_password": "a first long password"}, headers=auth(pair)
    )
    assert done.status_code == 204, done.text
    assert me(api, pair)["has_password"] is True
    assert "password_hash" not in me(api, pair)


def test_an_unverified_address_of_an_existing_account_is_refused(api, oidc):
    api.register("ada")
    oidc.user["email_verified"] = False
    assert sign_in(api) == {"page": "/login", "oauth_error": "email_unverified"}
    assert sql(api, "SELECT count(*) FROM oauth_identities") == [(0,)]
    oidc.user["email"] = "nobody@example.org"  # no collision: still no account for it
    assert sign_in(api)["oauth_error"] == "email_unverified"


def test_the_address_can_come_from_userinfo(api, oidc):
    oidc.misbehave = "no_email_in_id_token"
    assert me(api, tokens(api))["email"] == "ada@example.org"
    assert "GET /userinfo" in oidc.requests


def test_denied_consent_goes_back_to_the_login_page(api, oidc):
    oidc.deny = True
    assert sign_in(api) == {"page": "/login", "oauth_error": "access_denied"}


def test_a_tampered_or_foreign_state_is_refused(api, oidc):
    browser, callback = start(api, "corp")
    parts = urlsplit(callback)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    tampered = parts._replace(query=urlencode({**query, "state": query["state"] + "x"})).geturl()
    assert finish(api, browser, tampered)["oauth_error"] == "invalid_state"
    browser.close()
    # A callback in a browser that did not start the flow (no state cookie), e.g. a link
    # an attacker sends to log the victim into the attacker's account.
    browser, callback = start(api, "corp")
    browser.close()
    with httpx.Client(timeout=30) as victim:
        assert finish(api, victim, callback)["oauth_error"] == "invalid_state"
    assert sql(api, "SELECT count(*) FROM users") == [(0,)]


def test_a_bad_id_token_is_refused(api, oidc):
    for misbehaviour in ("nonce", "audience", "issuer", "signature", "expired"):
        oidc.misbehave = misbehaviour
        assert sign_in(api) == {"page": "/login", "oauth_error": "invalid_id_token"}, misbehaviour
    assert sql(api, "SELECT count(*) FROM users") == [(0,)]
    oidc.misbehave = None
    assert sign_in(api)["page"] == "/oauth/callback"


def test_the_one_time_code_is_spent_once_and_expires(api):
    code = sign_in(api)["code"]
    assert exchange(api, code).status_code == 200
    again = exchange(api, code)
    assert again.status_code == 401 and again.json()["code"] == "oauth_code_reused"
    late = sign_in(api)["code"]
    sql(
        api,
        "UPDATE oauth_login_codes SET expires_at = :t",
        t=(utcnow() - timedelta(seconds=1)).replace(tzinfo=None),
    )
    assert exchange(api, late).json()["code"] == "invalid_oauth_code"
    assert exchange(api, "made-up").status_code == 401
    stored = sql(api, "SELECT code_hash FROM oauth_login_codes")
    assert code not in {row[0] for row in stored}  # kept hashed


def test_a_banned_user_is_refused(api):
    user = me(api, tokens(api))
    admin = api.admin()
    response = api.http.patch(
        f"/admin/users/{user['id']}", json={"status": "banned"}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    assert sign_in(api) == {"page": "/login", "oauth_error": "account_banned"}


def test_a_user_banned_between_callback_and_exchange_is_refused(api):
    code = sign_in(api)["code"]
    sql(api, "UPDATE users SET status = 'suspended'")
    response = exchange(api, code)
    assert response.status_code == 403 and response.json()["code"] == "account_suspended"


def test_an_oauth_only_account_has_no_usable_password(api):
    pair = tokens(api)
    for password in ("", "ada@example.org", "Ada", "oidc-user-1"):
        response = api.http.post(
            "/auth/login", json={"email": "ada@example.org", "password": password}
        )
        assert response.status_code == 401 and response.json()["code"] == "invalid_credentials"
    assert me(api, pair)["email"] == "ada@example.org"


def test_two_factor_accounts_give_their_code_at_the_exchange(api):
    pair = tokens(api)
    headers = {"Authorization": f"Bearer {pair['access_token']}"}
    secret = api.http.post("/auth/totp/setup", headers=headers).json()["secret"]
    enabled = api.http.post(
        "/auth/totp/enable", json={"code": totp_code(secret, -1)}, headers=headers
    )
    assert enabled.status_code == 200, enabled.text
    code = sign_in(api)["code"]
    asked = exchange(api, code)
    assert asked.status_code == 401 and asked.json()["code"] == "totp_required"
    wrong = exchange(
        api, code, totp_code="000000" if totp_code(secret, 0) != "000000" else "111111"
    )
    assert wrong.json()["code"] == "invalid_totp"
    assert exchange(api, code, totp_code=totp_code(secret, 0)).status_code == 200
    assert exchange(api, code, totp_code=totp_code(secret, 1)).status_code == 401  # spent


# -- sensitive actions of accounts without a password: a recent sign-in ---------------------
def auth(pair: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


def age_sessions(api: Api, minutes: int = 11) -> None:
    """Every login session opened `minutes` ago (past the 10-minute recent sign-in)."""
    then = (utcnow() - timedelta(minutes=minutes)).replace(tzinfo=None)
    sql(api, "UPDATE auth_sessions SET created_at = :t", t=then)


def delete_me(api: Api, pair: dict, **body) -> httpx.Response:
    return api.http.request("DELETE", "/users/me", json=body, headers=auth(pair))


def refused(response: httpx.Response, code: str) -> str:
    assert (response.status_code, response.json()["code"]) == (403, code), response.text
    return response.json()["detail"]


def test_an_oauth_only_account_deletes_itself_right_after_signing_in(api):
    pair = tokens(api)
    assert delete_me(api, pair).status_code == 204
    gone = api.http.get("/users/me", headers=auth(pair))
    assert gone.status_code == 401
    assert sql(api, "SELECT count(*) FROM oauth_login_codes") == [(0,)]


def test_after_the_window_deleting_needs_a_new_sign_in(api):
    pair = tokens(api)
    age_sessions(api, minutes=11)
    detail = refused(delete_me(api, pair), "reauth_required")
    assert "sign in again with Corp SSO" in detail and "within 10 minutes" in detail
    # A refresh keeps the session, and so its age: still refused.
    renewed = api.http.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert renewed.status_code == 200, renewed.text
    refused(delete_me(api, renewed.json()), "reauth_required")
    age_sessions(api, minutes=9)  # inside the window again
    assert delete_me(api, renewed.json()).status_code == 204


def test_a_password_is_still_needed_where_the_account_has_one(api):
    """A linked account keeps its password: a fresh OAuth sign-in does not replace it."""
    account = api.register("ada")
    pair = tokens(api)
    detail = refused(delete_me(api, pair), "password_required")
    assert "send password" in detail
    refused(delete_me(api, pair, password="wrong password!"), "invalid_credentials")
    change = api.http.post(
        "/users/me/password", json={"new_password": "a new long password"}, headers=auth(pair)
    )
    assert "send current_password" in refused(change, "password_required")
    assert delete_me(api, pair, password=account.password).status_code == 204


def test_an_oauth_only_account_turns_2fa_off_with_a_recent_sign_in(api):
    pair = tokens(api)
    secret = api.http.post("/auth/totp/setup", headers=auth(pair)).json()["secret"]
    enabled = api.http.post(
        "/auth/totp/enable", json={"code": totp_code(secret, -1)}, headers=auth(pair)
    )
    assert enabled.status_code == 200, enabled.text
    age_sessions(api)
    late = api.http.post("/auth/totp/disable", json={"code": "123456"}, headers=auth(pair))
    refused(late, "reauth_required")
    again = exchange(api, sign_in(api)["code"], totp_code=totp_code(secret, 0))
    assert again.status_code == 200, again.text
    off = api.http.post(
        "/auth/totp/disable", json={"code": totp_code(secret, 1)}, headers=auth(again.json())
    )
    assert off.status_code == 200 and off.json()["totp_enabled"] is False, off.text


def test_a_password_user_turns_2fa_off_with_the_password_only(api):
    account = api.user("bob")
    secret = api.http.post("/auth/totp/setup", headers=account.headers).json()["secret"]
    api.http.post("/auth/totp/enable", json={"code": totp_code(secret, 0)}, headers=account.headers)
    body = {"code": totp_code(secret, 1)}
    missing = api.http.post("/auth/totp/disable", json=body, headers=account.headers)
    refused(missing, "password_required")
    body["password"] = account.password
    off = api.http.post("/auth/totp/disable", json=body, headers=account.headers)
    assert off.status_code == 200, off.text


def test_an_oauth_only_account_sets_a_first_password_then_logs_in_with_it(api):
    pair = tokens(api)
    other = tokens(api)  # a second login session: ended by the new password
    new = {"new_password": "a first long password"}
    age_sessions(api)
    late = api.http.post("/users/me/password", json=new, headers=auth(pair))
    refused(late, "reauth_required")
    age_sessions(api, minutes=1)
    done = api.http.post("/users/me/password", json=new, headers=auth(pair))
    assert done.status_code == 204, done.text
    login = api.http.post(
        "/auth/login", json={"email": "ada@example.org", "password": new["new_password"]}
    )
    assert login.status_code == 200, login.text
    assert api.http.get("/users/me", headers=auth(other)).json()["code"] == "session_revoked"
    # From now on the password confirms, even right after an OAuth sign-in.
    refused(delete_me(api, tokens(api)), "password_required")
    assert delete_me(api, login.json(), password=new["new_password"]).status_code == 204


def test_a_replayed_code_revokes_the_session_it_opened(api):
    code = sign_in(api)["code"]
    first = exchange(api, code)
    assert first.status_code == 200, first.text
    bystander = tokens(api)  # another login session of the same user
    sql(
        api,
        "UPDATE oauth_login_codes SET expires_at = :t",
        t=(utcnow() - timedelta(seconds=1)).replace(tzinfo=None),
    )  # a replay after the code's 60 s counts too
    replay = exchange(api, code)
    assert replay.status_code == 401 and replay.json()["code"] == "oauth_code_reused"
    ended = api.http.get("/users/me", headers=auth(first.json()))
    assert (ended.status_code, ended.json()["code"]) == (401, "session_revoked")
    refresh = api.http.post("/auth/refresh", json={"refresh_token": first.json()["refresh_token"]})
    assert (refresh.status_code, refresh.json()["code"]) == (401, "session_revoked")
    assert me(api, bystander)["email"] == "ada@example.org"
    reasons = sql(api, "SELECT revoked_reason FROM auth_sessions ORDER BY created_at")
    assert reasons == [("oauth sign-in code reused",), (None,)]


def test_github_sign_in_uses_the_primary_verified_address(api, github):
    user = me(api, tokens(api, "github"))
    assert user["email"] == "grace@example.org" and user["display_name"] == "Grace"
    assert {"GET /user", "GET /user/emails"} <= set(github.requests)
    assert sql(api, "SELECT provider, subject FROM oauth_identities") == [("github", "4242")]
    github.user = {"id": 7, "login": "mallory", "name": ""}
    github.emails = [{"email": "grace@example.org", "primary": True, "verified": False}]
    assert sign_in(api, "github") == {"page": "/login", "oauth_error": "email_unverified"}


def test_an_unknown_provider_is_404(api):
    for path in ("/auth/oauth/nope/login", "/auth/oauth/nope/callback?code=x&state=y"):
        response = api.http.get(path)
        assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_a_made_admin_signs_in_as_admin(api):
    """Linking keeps the account as it is: role included."""
    account = api.register("ada")
    make_admin(api.database_url, account.email)
    assert me(api, tokens(api))["role"] == "admin"


@pytest.mark.parametrize(
    ("providers", "expected"),
    [
        (
            '{"g": {"kind": "oidc", "client_id": "a", "client_secret": "hush"}}',
            "provider 'g'.*issuer",
        ),
        (
            '{"g": {"kind": "oidc", "issuer": "https://x", "client_secret": "hush"}}',
            "field 'client_id'",
        ),
        ('{"g": {"kind": "saml", "client_id": "a", "client_secret": "hush"}}', "field 'kind'"),
        ('{"G g": {"kind": "github", "client_id": "a", "client_secret": "hush"}}', "'G g'"),
        ("not json", "ORCHARD_\\* variable .* must be JSON"),
    ],
)
def test_bad_provider_settings_say_which_provider_and_field(
    clean_env, monkeypatch, providers, expected
):
    monkeypatch.setenv("ORCHARD_OAUTH_PROVIDERS", providers)
    with pytest.raises(SettingsError, match=expected) as error:
        load_settings()
    assert "hush" not in str(error.value)  # the secret is never echoed


def test_provider_settings_reach_the_stack_processes(clean_env, monkeypatch):
    monkeypatch.setenv(
        "ORCHARD_OAUTH_PROVIDERS",
        '{"google": {"kind": "oidc", "issuer": "https://accounts.google.com", '
        '"client_id": "a", "client_secret": "hush", "label": "Google"}}',
    )
    settings = load_settings()
    assert "hush" not in repr(settings)
    google = settings.oauth_providers["google"]
    assert google.metadata_url == "https://accounts.google.com/.well-known/openid-configuration"
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    assert load_settings() == settings
