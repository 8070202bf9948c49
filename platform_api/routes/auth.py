"""Register, log in (with a TOTP code when 2FA is on), refresh, log out, and 2FA set-up."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from platform_api import sessions
from platform_api.credits import CreditLedger
from platform_api.deps import KeysDep, LoginPrincipal, PasswordsDep, SessionDep, ensure_active
from platform_api.errors import ApiError, unauthorized
from platform_api.models import User, utcnow
from platform_api.ratelimit import limit_auth_ip
from platform_api.reauth import ConfirmationDep
from platform_api.schemas import (
    LoginRequest,
    RefreshRequest,
    RegisterRequest,
    TokenPair,
    TotpConfirm,
    TotpDisable,
    TotpSetup,
    UserPublic,
)
from platform_api.second_factor import check_second_factor, spend_totp_code
from platform_api.security import new_totp_secret, totp_uri

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/register",
    response_model=UserPublic,
    status_code=201,
    dependencies=[Depends(limit_auth_ip)],
)
def register(body: RegisterRequest, session: SessionDep, passwords: PasswordsDep) -> User:
    email = body.email.lower()
    taken = ApiError(
        409, "email_taken", "an account with this e-mail exists: log in, or use another e-mail"
    )
    if session.exec(select(User.id).where(User.email == email)).first() is not None:
        raise taken
    user = User(
        email=email,
        password_hash=passwords.hash(body.password),
        display_name=body.display_name,
    )
    session.add(user)
    try:
        session.flush()
        CreditLedger(session).open_account(user.id)
        session.commit()
    except IntegrityError:  # registered concurrently with the same e-mail
        session.rollback()
        raise taken from None
    return user


@router.post("/login", response_model=TokenPair, dependencies=[Depends(limit_auth_ip)])
def login(
    body: LoginRequest,
    request: Request,
    session: SessionDep,
    keys: KeysDep,
    passwords: PasswordsDep,
) -> TokenPair:
    user = session.exec(select(User).where(User.email == body.email.lower())).first()
    ok, new_hash = passwords.verify(body.password, user.password_hash if user else None)
    if not ok:
        raise unauthorized("e-mail or password is wrong", code="invalid_credentials")
    ensure_active(user)
    check_second_factor(session, keys, user, body.totp_code)
    if new_hash:
        user.password_hash = new_hash
        session.add(user)
    return sessions.start_session(session, keys, user, request.headers.get("user-agent", ""))


@router.post("/refresh", response_model=TokenPair, dependencies=[Depends(limit_auth_ip)])
def refresh(body: RefreshRequest, session: SessionDep, keys: KeysDep) -> TokenPair:
    return sessions.rotate(session, keys, body.refresh_token)


@router.post("/logout", status_code=204)
def logout(principal: LoginPrincipal, session: SessionDep) -> Response:
    sessions.revoke_sessions(session, "logged out", login_id=principal.session_id)
    session.commit()
    return Response(status_code=204)


# -- two-factor authentication (TOTP) -----------------------------------------------------------
@router.post("/totp/setup", response_model=TotpSetup)
def totp_setup(principal: LoginPrincipal, session: SessionDep, keys: KeysDep) -> TotpSetup:
    """Start enabling 2FA: a new secret for the authenticator app; `enable` confirms it."""
    user = session.get(User, principal.user.id)
    if user.totp_enabled:
        raise ApiError(409, "totp_enabled", "two-factor authentication is already on")
    secret = new_totp_secret()
    user.totp_secret = keys.seal_totp_secret(secret)
    user.updated_at = utcnow()
    session.add(user)
    session.commit()
    return TotpSetup(secret=secret, otpauth_uri=totp_uri(secret, user.email))


@router.post("/totp/enable", response_model=UserPublic)
def totp_enable(
    body: TotpConfirm, principal: LoginPrincipal, session: SessionDep, keys: KeysDep
) -> User:
    user = session.get(User, principal.user.id)
    if user.totp_enabled:
        raise ApiError(409, "totp_enabled", "two-factor authentication is already on")
    if user.totp_secret is None:
        raise ApiError(409, "totp_not_set_up", "call /auth/totp/setup first")
    spend_totp_code(session, keys, user, body.code)
    user.totp_enabled = True
    session.add(user)
    session.commit()
    return user


@router.post("/totp/disable", response_model=UserPublic)
def totp_disable(
    body: TotpDisable,
    principal: LoginPrincipal,
    session: SessionDep,
    keys: KeysDep,
    confirmation: ConfirmationDep,
) -> User:
    """Turning 2FA off takes the password (an account without one: a recent sign-in, see
    reauth.py) and a current code: a stolen session is not enough."""
    user = session.get(User, principal.user.id)
    if not user.totp_enabled:
        raise ApiError(409, "totp_disabled", "two-factor authentication is not on")
    confirmation.check(body.password)
    spend_totp_code(session, keys, user, body.code)
    user.totp_enabled = False
    user.totp_secret = None
    user.totp_last_step = None
    session.add(user)
    session.commit()
    return user
