"""FastAPI dependencies: the database session and who is calling.

A caller is identified by `Authorization: Bearer <credential>`, where the credential is
either an access token (a JWT naming a live login session) or a personal API key
(`orch_...`). Both are checked against the database on every request, so a logout, a
revoked session or key, and a ban take effect at once, not when a token expires.

An access token may do everything its account may. An API key only what its scopes
(`API_KEY_SCOPES`) name: a route opts in by asking for a scope (`ChatsReader`,
`ChatsWriter`, `UsageReader`, the gateway's `inference`); a route that names none
(`CurrentUser`, `LoginPrincipal`, `AdminUser`) refuses every key, so a new route is closed
to keys until it says otherwise. A key without the scope a route names is 403
`insufficient_scope` naming it; a route no key may use is 403 `login_required`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Literal, get_args

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes
from sqlalchemy import bindparam, update
from sqlmodel import Session, select
from starlette.requests import HTTPConnection

from platform_api.db import session_scope
from platform_api.errors import ApiError, unauthorized
from platform_api.models import ApiKey, AuthSession, User, utcnow
from platform_api.security import API_KEY_PREFIX, InvalidToken, Keys, Passwords, digest


def get_db(request: Request) -> Iterator[Session]:
    yield from session_scope(request.app.state.engine)


# async: no thread-pool hop to read app state (FastAPI runs a plain `def` in a thread).
async def get_keys(request: Request) -> Keys:
    return request.app.state.keys


async def get_passwords(request: Request) -> Passwords:
    return request.app.state.passwords


SessionDep = Annotated[Session, Depends(get_db)]
KeysDep = Annotated[Keys, Depends(get_keys)]
PasswordsDep = Annotated[Passwords, Depends(get_passwords)]

_bearer = HTTPBearer(
    auto_error=False,
    description="An access token from /api/v1/auth/login, or a personal API key (orch_...).",
)


# How fresh an API key's `last_used_at` is kept: written at most once a minute per key.
LAST_USED_RESOLUTION = timedelta(minutes=1)

ApiKeyScope = Literal[
    "inference", "chats:read", "chats:write", "usage:read", "feedback:export", "models:review"
]
API_KEY_SCOPES: dict[str, str] = {  # what each scope lets a key do (docs and the UI say it too)
    "inference": "the OpenAI-compatible gateway at /v1: list models, chat and text "
    "completions, embeddings",
    "chats:read": "read chats, their messages, folders and share links; search; the chat "
    "models and feature flags; cost estimates",
    "chats:write": "create, change and delete chats, folders and share links; send, "
    "regenerate, edit and stop messages (spends credits); feedback; the chat WebSocket",
    "usage:read": "the credit balance and ledger, and usage",
    "feedback:export": "administrators only: export the answers' feedback as preference "
    "data (the orchard_feedback DAG's service key)",
    "models:review": "for administrators' keys: read the A/B split's statistics and start "
    "the feedback loop's split (the orchard_ab_review DAG)",
}
# Scopes only an administrator's key may carry (the route still checks the role).
ADMIN_API_KEY_SCOPES: frozenset[str] = frozenset({"feedback:export", "models:review"})
DEFAULT_API_KEY_SCOPES: tuple[str, ...] = ("inference",)
assert set(API_KEY_SCOPES) == set(get_args(ApiKeyScope))


@dataclass(frozen=True)
class Principal:
    user: User
    session_id: str | None = None  # the login session, when authenticated by access token
    api_key_id: str | None = None  # the key, when authenticated by API key
    scopes: frozenset[str] = frozenset()  # the key's; a login session is not limited by them

    def require(self, scope: str | None, what: str = "this endpoint") -> None:
        """Refuse an API key that lacks `scope` (None: a route no key may use)."""
        if self.api_key_id is None:
            return
        if scope is None:
            raise ApiError(
                403,
                "login_required",
                f"{what} needs a login session: use an access token, not an API key",
            )
        if scope not in self.scopes:
            raise ApiError(
                403,
                "insufficient_scope",
                f"this API key lacks the scope {scope!r} that {what} needs (it has "
                f"{', '.join(sorted(self.scopes))}): create a key with that scope",
                headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
            )


def ensure_active(user: User) -> None:
    """Banned and suspended accounts are refused everywhere, whatever credential they hold."""
    if user.deleted_at is not None:  # its credentials are gone too; this is a second lock
        raise unauthorized("this account was deleted", code="account_deleted")
    if user.status != "active":
        raise ApiError(
            403,
            f"account_{user.status}",
            f"this account is {user.status}: contact an administrator",
        )


def get_principal(
    request: Request,
    session: SessionDep,
    keys: KeysDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return authenticate(request, session, keys, credential_of(credentials))


def credential_of(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None:
        raise unauthorized(
            "not authenticated: send 'Authorization: Bearer <access token or API key>'"
        )
    return credentials.credentials


async def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The credential, not yet checked: for a route that checks it with `authenticate` in
    its own worker-thread call, together with the rest of its database work (the OpenAI
    gateway, whose every millisecond before the first token counts). Such a route must
    call `authenticate` before anything else, and `Principal.require` its scope."""
    return credential_of(credentials)


def authenticate(
    conn: HTTPConnection, session: Session, keys: Keys, token: str, *, count: bool = True
) -> Principal:
    """The caller behind `token` (an access token or an API key), checked against the
    database now, and counted against its rate limit (unless `count` is false: a retry
    of a request counted already): once per request, or per action on a WebSocket."""
    principal = _authenticate(session, keys, token)
    if not count:
        return principal
    limiter = conn.app.state.rate_limiter
    if principal.api_key_id is not None:
        limiter.hit("api_key", principal.api_key_id)
    else:
        limiter.hit("user", principal.user.id)
    return principal


def _authenticate(session: Session, keys: Keys, token: str) -> Principal:
    if token.startswith(API_KEY_PREFIX):
        return _api_key_principal(session, token)
    try:
        claims = keys.read_access_token(token)
    except InvalidToken as error:
        raise unauthorized(str(error), code="invalid_token") from None
    row = session.exec(
        select(User, AuthSession)
        .join(AuthSession, AuthSession.user_id == User.id)
        .where(AuthSession.id == claims.session_id, User.id == claims.user_id)
    ).first()
    if row is None:
        raise unauthorized("access token is not valid: log in again", code="invalid_token")
    user, login = row
    ensure_active(user)  # first, so a banned user hears why
    if login.revoked_at is not None:
        raise unauthorized("this login session has ended: log in again", code="session_revoked")
    return Principal(user=user, session_id=login.id)


# Built once (statements are parameterized, not rebuilt per request: the hot path).
_KEY_LOOKUP = (
    select(User, ApiKey)
    .join(ApiKey, ApiKey.user_id == User.id)
    .where(ApiKey.key_hash == bindparam("p_key_hash"), ApiKey.revoked_at.is_(None))
)


def _api_key_principal(session: Session, key: str) -> Principal:
    """One query on the unique `key_hash` index, on every request (no cache: a revoked key
    is refused by the very next request, on every API process). `last_used_at` is written
    only when the stored one is older than `LAST_USED_RESOLUTION`, so a busy key costs no
    write per request."""
    row = session.execute(_KEY_LOOKUP, {"p_key_hash": digest(key)}).first()
    if row is None:
        raise unauthorized("API key is not valid or was revoked", code="invalid_api_key")
    user, api_key = row
    ensure_active(user)
    now = utcnow()
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
        session.exec(update(ApiKey).where(ApiKey.id == api_key.id).values(last_used_at=now))
        session.commit()
    return Principal(user=user, api_key_id=api_key.id, scopes=frozenset(api_key.scope_list))


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_current_user(security_scopes: SecurityScopes, principal: PrincipalDep) -> User:
    """The caller; an API key only where the route asks for a scope the key has."""
    for scope in security_scopes.scopes or [None]:
        principal.require(scope)
    return principal.user


def get_login_principal(principal: PrincipalDep) -> Principal:
    """For what only the account holder at a login may do (keys, 2FA, password)."""
    principal.require(None)
    return principal


def get_admin(user: Annotated[User, Depends(get_current_user)]) -> User:
    if user.role != "admin":
        raise ApiError(403, "admin_required", "this endpoint is for administrators")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]  # no API key
ChatsReader = Annotated[User, Security(get_current_user, scopes=["chats:read"])]
ChatsWriter = Annotated[User, Security(get_current_user, scopes=["chats:write"])]
UsageReader = Annotated[User, Security(get_current_user, scopes=["usage:read"])]
LoginPrincipal = Annotated[Principal, Depends(get_login_principal)]
AdminUser = Annotated[User, Depends(get_admin)]
# An administrator at a login, or an administrator's key with the `feedback:export` scope.
FeedbackExporter = Annotated[User, Security(get_admin, scopes=["feedback:export"])]


def get_models_reviewer(
    user: Annotated[User, Security(get_current_user, scopes=["models:review"])],
) -> User:
    return get_admin(user)


# An administrator, signed in or by an API key with the models:review scope.
ModelsReviewer = Annotated[User, Depends(get_models_reviewer)]
