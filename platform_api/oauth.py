"""Sign-in with OAuth2 / OpenID Connect providers (Google, GitHub, any OIDC issuer), as
configuration (`Settings.oauth_providers`), through Authlib's Starlette client.

The browser goes /oauth/<name>/login → the provider → /oauth/<name>/callback. Between the
two, Authlib keeps the `state`, the OIDC `nonce` and the PKCE (S256) verifier in a signed,
10-minute, HttpOnly, SameSite=Lax cookie scoped to the OAuth routes (Starlette's
SessionMiddleware, keyed by a secret generated under `<home>/secrets`). The callback checks
the state, exchanges the code, and for OIDC validates the ID token (signature against the
issuer's JWKS, issuer, audience, nonce, expiry); for GitHub it reads /user and the primary
verified address from /user/emails.

The account is found by its `OAuthIdentity` (provider, subject). An unknown identity is
linked to the user with the same e-mail address only when the provider vouches for that
address (OIDC `email_verified`, GitHub's verified primary e-mail); otherwise a new user is
made with that address, again only when it is verified: an unverified address could be
anyone's, and the account it opened would be linked to the real owner's later sign-ins.
A new user has no usable password (`security.NO_PASSWORD`), so password login refuses it,
and its sensitive actions are confirmed by a recent sign-in instead (`reauth.py`) — the
way it also sets a first password.

The callback does not hand out tokens: it stores a one-time code (SHA-256, 60 s, spent
once) and sends the browser to the UI's /oauth/callback#code=<code> (a fragment, so no
server logs it); the UI exchanges it for the same TokenPair a password login gives, with
a TOTP code when the account has 2FA on. The code remembers the login session it opened:
presented again, it revokes that session (a replayed code was copied by someone). Failures
send the browser to /login#oauth_error=<code> instead, never to a traceback.
"""

from __future__ import annotations

import logging
import secrets as random
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

import httpx
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.starlette_client import OAuth
from fastapi import FastAPI
from joserfc.errors import JoseError
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from starlette.middleware.sessions import SessionMiddleware

from orchard import credentials
from orchard.settings import OAuthProvider, Settings
from platform_api.credits import CreditLedger
from platform_api.deps import ensure_active
from platform_api.errors import ApiError, not_found, unauthorized
from platform_api.models import OAuthIdentity, OAuthLoginCode, User, utcnow
from platform_api.security import NO_PASSWORD, digest
from platform_api.sessions import revoke_sessions

log = logging.getLogger("platform_api.oauth")

ROUTES_PATH = "/api/v1/auth/oauth"
STATE_COOKIE = "orchard_oauth"
STATE_TTL_S = 600  # time to consent at the provider
LOGIN_CODE_TTL = timedelta(seconds=60)
HTTP_TIMEOUT_S = 10
DEFAULT_SCOPES = {"oidc": "openid email profile", "github": "read:user user:email"}


class OAuthFailure(Exception):
    """A sign-in that cannot go on; `code` is what the UI's login page shows
    (/login#oauth_error=<code>), `reason` is for the log."""

    def __init__(self, code: str, reason: str = "") -> None:
        super().__init__(reason or code)
        self.code = code


@dataclass(frozen=True)
class ProviderAccount:
    """Who the provider says signed in."""

    subject: str
    email: str  # lower-cased; "" when the provider gave none
    email_verified: bool
    name: str = ""


class Providers:
    """The configured providers as Authlib clients, by name."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config: dict[str, OAuthProvider] = dict(settings.oauth_providers)
        self.oauth = OAuth()
        for name, provider in self.config.items():
            client_kwargs = {
                "scope": provider.scope or DEFAULT_SCOPES[provider.kind],
                "code_challenge_method": "S256",
                "timeout": HTTP_TIMEOUT_S,
            }
            common = {
                "client_id": provider.client_id,
                "client_secret": provider.client_secret.get_secret_value(),
                "client_kwargs": client_kwargs,
            }
            if provider.kind == "oidc":
                self.oauth.register(name, server_metadata_url=provider.metadata_url, **common)
            else:
                self.oauth.register(
                    name,
                    authorize_url=provider.authorize_url,
                    access_token_url=provider.token_url,
                    api_base_url=provider.api_base_url.rstrip("/") + "/",
                    **common,
                )

    def listing(self) -> list[dict[str, str]]:
        return [{"name": n, "label": p.label or n} for n, p in self.config.items()]

    def client(self, name: str):
        if name not in self.config:
            raise not_found(f"sign-in provider {name!r}")
        return self.oauth.create_client(name)

    def redirect_uri(self, name: str) -> str:
        return f"{self.settings.public_base_url}{ROUTES_PATH}/{name}/callback"

    def ui_url(self, page: str, fragment: str) -> str:
        return f"{self.settings.public_base_url}{page}#{fragment}"

    async def authorize_redirect(self, request, name: str):
        client = self.client(name)
        try:
            return await client.authorize_redirect(request, self.redirect_uri(name))
        except (httpx.HTTPError, OAuthError, ValueError, KeyError) as error:  # no discovery
            raise OAuthFailure("provider_unavailable", f"{name}: {error!r}") from None

    async def account(self, request, name: str) -> ProviderAccount:
        """Finish the provider's side: state, code exchange, then who signed in."""
        client = self.client(name)
        provider = self.config[name]
        error = request.query_params.get("error")
        if error:
            raise OAuthFailure("access_denied" if error == "access_denied" else "provider_error")
        try:
            if provider.kind == "github":
                token = await client.authorize_access_token(request)
                return await _github_account(client, token)
            token = await client.authorize_access_token(
                request,
                claims_options=_id_token_checks(provider, await client.load_server_metadata()),
            )
            return await _oidc_account(client, token)
        except MismatchingStateError:
            raise OAuthFailure("invalid_state", f"{name}: state mismatch") from None
        except JoseError as error:
            raise OAuthFailure("invalid_id_token", f"{name}: {error!r}") from None
        except OAuthError as error:
            raise OAuthFailure("provider_error", f"{name}: {error!r}") from None
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
            raise OAuthFailure("provider_error", f"{name}: {error!r}") from None


def _id_token_checks(provider: OAuthProvider, metadata: dict) -> dict:
    """Claims the ID token must carry beyond Authlib's own checks (signature, nonce,
    expiry): the issuer configured (or discovered), and this client among the audience
    (Authlib alone accepts any audience when `azp` names the client)."""
    issuer = (provider.issuer or metadata.get("issuer") or "").rstrip("/")
    issuers = [issuer, issuer + "/"] if issuer else []
    return {
        "iss": {"essential": True, "values": issuers},
        "aud": {"essential": True, "values": [provider.client_id]},
    }


async def _oidc_account(client, token: dict) -> ProviderAccount:
    claims = token.get("userinfo")
    if claims is None:  # the token answer had no id_token: nothing vouches for the user
        raise OAuthFailure("invalid_id_token", "no id_token in the token response")
    claims = dict(claims)
    if not claims.get("email"):  # some issuers put the address in userinfo only
        info = await client.userinfo(token=token)
        if info.get("sub") != claims["sub"]:
            raise OAuthFailure("invalid_id_token", "userinfo is about another subject")
        claims.update({k: info[k] for k in ("email", "email_verified", "name") if k in info})
    return ProviderAccount(
        subject=str(claims["sub"]),
        email=str(claims.get("email") or "").lower(),
        email_verified=claims.get("email_verified") in (True, "true"),
        name=str(claims.get("name") or ""),
    )


async def _github_account(client, token: dict) -> ProviderAccount:
    user = await client.get("user", token=token)
    user.raise_for_status()
    emails = await client.get("user/emails", token=token)
    emails.raise_for_status()
    profile = user.json()
    primary = next((e for e in emails.json() if e.get("primary")), None)
    return ProviderAccount(
        subject=str(profile["id"]),
        email=str(primary["email"]).lower() if primary else "",
        email_verified=bool(primary and primary.get("verified")),
        name=str(profile.get("name") or profile.get("login") or ""),
    )


# -- the platform's side ------------------------------------------------------------------
def sign_in(session: Session, provider: str, account: ProviderAccount) -> str:
    """The user behind `account` (found, linked or made; see the module's text) and a new
    one-time code for them. Two first sign-ins racing: the loser retries once and finds
    what the winner made."""
    try:
        return _sign_in(session, provider, account)
    except IntegrityError:
        session.rollback()
        return _sign_in(session, provider, account)


def _sign_in(session: Session, provider: str, account: ProviderAccount) -> str:
    now = utcnow()
    row = session.exec(
        select(OAuthIdentity, User)
        .join(User, User.id == OAuthIdentity.user_id)
        .where(OAuthIdentity.provider == provider, OAuthIdentity.subject == account.subject)
    ).first()
    if row is not None and row[1].deleted_at is not None:  # erased account: start afresh
        session.delete(row[0])
        session.flush()
        row = None
    if row is not None:
        identity, user = row
    else:
        if not account.email:
            raise OAuthFailure("email_missing", f"{provider} gave no e-mail address")
        if not account.email_verified:
            raise OAuthFailure("email_unverified", f"{provider}: {account.email} not verified")
        user = session.exec(select(User).where(User.email == account.email)).first()
        if user is None:
            user = User(
                email=account.email,
                password_hash=NO_PASSWORD,  # until it sets one (reauth.py)
                display_name=account.name[:100],
            )
            session.add(user)
            session.flush()
            CreditLedger(session).open_account(user.id)
        identity = OAuthIdentity(user_id=user.id, provider=provider, subject=account.subject)
    try:
        ensure_active(user)
    except ApiError as error:
        session.rollback()
        raise OAuthFailure(error.code, f"{provider}: user {user.id} {error.code}") from None
    identity.email = account.email or identity.email
    identity.last_login_at = now
    session.add(identity)
    code = random.token_urlsafe(32)
    session.exec(delete(OAuthLoginCode).where(OAuthLoginCode.expires_at < now - timedelta(days=1)))
    session.add(
        OAuthLoginCode(
            code_hash=digest(code),
            user_id=user.id,
            provider=provider,
            created_at=now,
            expires_at=now + LOGIN_CODE_TTL,
        )
    )
    session.commit()
    return code


def _invalid_code() -> ApiError:
    return unauthorized(
        "this sign-in code is not valid, was already used or expired (it lasts 60 s): "
        "sign in with the provider again",
        code="invalid_oauth_code",
    )


def pending_user(session: Session, code: str) -> User:
    """The user an unspent, unexpired code names (the code stays unspent). A spent code
    presented again ends the login session it opened (see `_refuse_replay`)."""
    row = session.exec(
        select(OAuthLoginCode, User)
        .join(User, User.id == OAuthLoginCode.user_id)
        .where(OAuthLoginCode.code_hash == digest(code))
    ).first()
    if row is None:
        raise _invalid_code()
    login_code, user = row
    if login_code.used_at is not None:
        _refuse_replay(session, login_code)
    if login_code.expires_at <= utcnow():
        raise _invalid_code()
    return user


def spend_code(session: Session, code: str, login_id: str) -> None:
    """Mark the code used by the login session `login_id` (a conditional UPDATE: of two
    concurrent exchanges one wins, and the loser's is a replay); the caller commits."""
    spent = session.exec(
        update(OAuthLoginCode)
        .where(
            OAuthLoginCode.code_hash == digest(code),
            OAuthLoginCode.used_at.is_(None),
            OAuthLoginCode.expires_at > utcnow(),
        )
        .values(used_at=utcnow(), session_id=login_id)
    )
    if spent.rowcount != 1:
        session.rollback()
        login_code = session.get(OAuthLoginCode, digest(code))
        if login_code is not None and login_code.used_at is not None:
            _refuse_replay(session, login_code)
        raise _invalid_code()


def _refuse_replay(session: Session, login_code: OAuthLoginCode) -> NoReturn:
    """A spent code seen again was copied (from the browser's history, a log, a proxy):
    like a reused refresh token, it ends the login session the code opened, whoever holds
    it now, and the holder signs in with the provider again."""
    if login_code.session_id is not None:
        revoke_sessions(session, "oauth sign-in code reused", login_id=login_code.session_id)
        session.commit()
        log.warning("oauth sign-in code of user %s reused: session revoked", login_code.user_id)
    raise unauthorized(
        "this sign-in code was already used, so it may have leaked: the login session it "
        "opened is ended; sign in with the provider again",
        code="oauth_code_reused",
    )


def install(app: FastAPI, settings: Settings) -> None:
    """The providers on `app.state.oauth`, and the state cookie's middleware when any is
    configured (scoped to the OAuth routes' path, so no other request carries it)."""
    app.state.oauth = Providers(settings)
    if not settings.oauth_providers:
        return
    secret, _ = credentials.get_or_create(
        settings.secrets_dir, "platform-oauth-state-key", lambda: random.token_urlsafe(48)
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie=STATE_COOKIE,
        max_age=STATE_TTL_S,
        path=ROUTES_PATH,
        same_site="lax",
        https_only=settings.public_base_url.startswith("https://"),
    )
