"""Confirming a sensitive action (deleting the account, turning 2FA off, changing or setting
the password): an access token alone is not enough, since it may be stolen.

An account with a password gives it. An account without one (made by an OAuth sign-in,
`security.NO_PASSWORD`) shows a recent sign-in instead ("sudo mode"): the access token's
login session was opened through an OAuth provider (its one-time code names it) less than
RECENT_SIGN_IN ago. Refreshing does not renew that: only signing in again at the provider
does, which is the provider asking for its own password, 2FA, or consent.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session, select

from platform_api.deps import LoginPrincipal, PasswordsDep, SessionDep
from platform_api.errors import ApiError
from platform_api.models import AuthSession, OAuthIdentity, OAuthLoginCode, User, utcnow
from platform_api.security import Passwords, has_usable_password

RECENT_SIGN_IN = timedelta(minutes=10)


class Confirmation:
    """A route's dependency: `check(password)` passes or answers 403 saying what to do."""

    def __init__(
        self,
        request: Request,
        principal: LoginPrincipal,
        session: SessionDep,
        passwords: PasswordsDep,
    ) -> None:
        self.session: Session = session
        self.passwords: Passwords = passwords
        self.session_id: str = principal.session_id
        self.user: User = principal.user
        self.labels = {n: p.label or n for n, p in request.app.state.oauth.config.items()}

    def check(self, password: str | None, *, field: str = "password") -> None:
        """`password`: what the caller sent in `field` (None when nothing)."""
        if has_usable_password(self.user.password_hash):
            what = field.replace("_", " ")
            if password is None:
                raise ApiError(403, "password_required", f"confirm with your {what}: send {field}")
            if not self.passwords.verify(password, self.user.password_hash)[0]:
                raise ApiError(403, "invalid_credentials", f"the {what} is wrong")
            return
        if not self.recent_sign_in():
            minutes = int(RECENT_SIGN_IN.total_seconds() // 60)
            raise ApiError(
                403,
                "reauth_required",
                f"this account has no password, so this needs a recent sign-in: sign in again"
                f" with {self._providers()} and retry within {minutes} minutes",
            )

    def recent_sign_in(self) -> bool:
        opened = self.session.exec(
            select(AuthSession.created_at)
            .join(OAuthLoginCode, OAuthLoginCode.session_id == AuthSession.id)
            .where(AuthSession.id == self.session_id)
        ).first()
        return opened is not None and opened > utcnow() - RECENT_SIGN_IN

    def _providers(self) -> str:
        names = self.session.exec(
            select(OAuthIdentity.provider)
            .where(OAuthIdentity.user_id == self.user.id)
            .order_by(OAuthIdentity.last_login_at.desc())
        ).all()
        labels = [self.labels[n] for n in names if n in self.labels]
        return " or ".join(labels) or "your sign-in provider"


ConfirmationDep = Annotated[Confirmation, Depends()]
