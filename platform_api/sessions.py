"""Login sessions and their rotating refresh tokens.

A login opens an `AuthSession` (a token family) and hands out an access token naming it
plus a refresh token. Each refresh spends its token (a conditional UPDATE, so two
concurrent refreshes cannot both win) and issues the next one. Presenting a token that
was already spent means it was copied: the whole family is revoked, and with it every
access token that names the session.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, select

from platform_api.deps import ensure_active
from platform_api.errors import unauthorized
from platform_api.models import AuthSession, RefreshToken, User, utcnow
from platform_api.schemas import TokenPair
from platform_api.security import (
    ACCESS_TOKEN_TTL,
    REFRESH_TOKEN_TTL,
    Keys,
    digest,
    new_refresh_token,
)


def _issue(session: Session, keys: Keys, user_id: str, login_id: str, now: datetime) -> TokenPair:
    refresh = new_refresh_token()
    session.add(
        RefreshToken(
            session_id=login_id,
            token_hash=digest(refresh),
            issued_at=now,
            expires_at=now + REFRESH_TOKEN_TTL,
        )
    )
    return TokenPair(
        access_token=keys.issue_access_token(user_id, login_id, now),
        refresh_token=refresh,
        expires_in=int(ACCESS_TOKEN_TTL.total_seconds()),
    )


def open_session(
    session: Session, keys: Keys, user: User, user_agent: str
) -> tuple[str, TokenPair]:
    """Open a login session for `user`: (its id, its first tokens); the caller commits."""
    now = utcnow()
    login = AuthSession(user_id=user.id, created_at=now, user_agent=user_agent[:255])
    session.add(login)
    session.flush()
    return login.id, _issue(session, keys, user.id, login.id, now)


def start_session(session: Session, keys: Keys, user: User, user_agent: str) -> TokenPair:
    """Open a login session for `user` and commit it."""
    _, tokens = open_session(session, keys, user, user_agent)
    session.commit()
    return tokens


def revoke_sessions(
    session: Session, reason: str, *, login_id: str | None = None, user_id: str | None = None
) -> None:
    """Revoke one login session, or all of a user's; the caller commits."""
    statement = update(AuthSession).where(AuthSession.revoked_at.is_(None))
    if login_id is not None:
        statement = statement.where(AuthSession.id == login_id)
    if user_id is not None:
        statement = statement.where(AuthSession.user_id == user_id)
    session.exec(statement.values(revoked_at=utcnow(), revoked_reason=reason))


def rotate(session: Session, keys: Keys, presented: str) -> TokenPair:
    """Spend `presented` and return the next pair, or refuse (401), revoking the family
    when the token had already been spent."""
    now = utcnow()
    row = session.exec(
        select(RefreshToken, AuthSession, User)
        .join(AuthSession, AuthSession.id == RefreshToken.session_id)
        .join(User, User.id == AuthSession.user_id)
        .where(RefreshToken.token_hash == digest(presented))
    ).first()
    if row is None:
        raise unauthorized("refresh token is not valid: log in again", code="invalid_token")
    token, login, user = row
    ensure_active(user)
    if login.revoked_at is not None:
        raise unauthorized("this login session has ended: log in again", code="session_revoked")
    spent = session.exec(
        update(RefreshToken)
        .where(RefreshToken.id == token.id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
    )
    if spent.rowcount != 1:
        session.rollback()
        revoke_sessions(session, "refresh token reused", login_id=login.id)
        session.commit()
        raise unauthorized(
            "this refresh token was already used, so it may have been stolen: the login "
            "session is revoked everywhere; log in again",
            code="refresh_token_reused",
        )
    if token.expires_at <= now:
        session.commit()
        raise unauthorized("refresh token expired: log in again", code="token_expired")
    tokens = _issue(session, keys, user.id, login.id, now)
    session.commit()
    return tokens
