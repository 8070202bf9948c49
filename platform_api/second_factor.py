"""The second factor of a sign-in: TOTP codes (RFC 6238, `security.match_totp`), each
accepted once. Used by password login and 2FA set-up (routes/auth.py), OAuth sign-in
(routes/oauth.py) and erasing an account (routes/privacy.py)."""

from __future__ import annotations

from sqlalchemy import or_, update
from sqlmodel import Session

from platform_api.errors import ApiError, unauthorized
from platform_api.models import User, utcnow
from platform_api.security import Keys, match_totp


def check_second_factor(session: Session, keys: Keys, user: User, totp_code: str | None) -> None:
    """A sign-in's second step (password or OAuth): with 2FA on, the TOTP code is required
    (`totp_required` when missing) and spent."""
    if not user.totp_enabled:
        return
    if totp_code is None:
        raise unauthorized(
            "this account uses two-factor authentication: send totp_code as well",
            code="totp_required",
        )
    spend_totp_code(session, keys, user, totp_code, at_login=True)


def spend_totp_code(
    session: Session, keys: Keys, user: User, code: str, *, at_login: bool = False
) -> None:
    """Accept `code` once: its time step is recorded with a conditional UPDATE, so the same
    code presented twice (even concurrently) works only the first time. A wrong code is a
    401 at login and a 400 elsewhere (the caller's session itself is fine)."""
    step = match_totp(keys.open_totp_secret(user.totp_secret), code, utcnow(), user.totp_last_step)
    spent = None
    if step is not None:
        spent = session.exec(
            update(User)
            .where(
                User.id == user.id,
                or_(User.totp_last_step.is_(None), User.totp_last_step < step),
            )
            .values(totp_last_step=step, updated_at=utcnow())
        )
    if spent is None or spent.rowcount != 1:
        session.rollback()
        detail = "the two-factor code is wrong or was already used: wait for the next code"
        if at_login:
            raise unauthorized(detail, code="invalid_totp")
        raise ApiError(400, "invalid_totp", detail)
    session.refresh(user)
