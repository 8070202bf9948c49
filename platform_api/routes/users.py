"""The caller's own account: profile, password, personal API keys (their scopes: deps.py)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import func, update
from sqlmodel import select

from platform_api.deps import (
    ADMIN_API_KEY_SCOPES,
    CurrentUser,
    LoginPrincipal,
    PasswordsDep,
    SessionDep,
)
from platform_api.errors import ApiError, not_found
from platform_api.models import ApiKey, AuthSession, OAuthIdentity, User, utcnow
from platform_api.reauth import ConfirmationDep
from platform_api.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    FeedbackConsent,
    PasswordChange,
    ProfileUpdate,
    UserMe,
)
from platform_api.security import digest, new_api_key

MAX_API_KEYS = 20  # live keys per user

router = APIRouter(tags=["users"])


def account_view(session: SessionDep, user: User) -> UserMe:
    """The account as its owner sees it: what the UI needs to know whether a sensitive
    action asks for the password or for a recent sign-in, and with which providers."""
    providers = session.exec(
        select(OAuthIdentity.provider)
        .where(OAuthIdentity.user_id == user.id)
        .order_by(OAuthIdentity.last_login_at.desc().nulls_last(), OAuthIdentity.provider)
    ).all()
    return UserMe.model_validate(user).model_copy(update={"oauth_providers": list(providers)})


@router.get("/users/me", response_model=UserMe)
def read_me(user: CurrentUser, session: SessionDep) -> UserMe:
    return account_view(session, user)


@router.patch("/users/me", response_model=UserMe)
def update_me(body: ProfileUpdate, user: CurrentUser, session: SessionDep) -> UserMe:
    user.display_name = body.display_name
    user.updated_at = utcnow()
    session.add(user)
    session.commit()
    return account_view(session, user)


@router.put("/users/me/feedback-consent", response_model=UserMe)
def set_feedback_consent(body: FeedbackConsent, user: CurrentUser, session: SessionDep) -> UserMe:
    """Turn "use my feedback to improve the model" on or off (the privacy page). Off, the
    feedback export leaves out all of the account's feedback, past ones included."""
    user.feedback_for_training = body.feedback_for_training
    user.updated_at = utcnow()
    session.add(user)
    session.commit()
    return account_view(session, user)


@router.post("/users/me/password", status_code=204)
def change_password(
    body: PasswordChange,
    principal: LoginPrincipal,
    session: SessionDep,
    passwords: PasswordsDep,
    confirmation: ConfirmationDep,
) -> Response:
    """Needs the current password; an account without one (OAuth sign-in) sets its first
    after a recent sign-in (reauth.py). Every other login session of the account ends;
    this one stays."""
    user = session.get(User, principal.user.id)
    confirmation.check(body.current_password, field="current_password")
    user.password_hash = passwords.hash(body.new_password)
    user.updated_at = utcnow()
    session.add(user)
    session.exec(
        update(AuthSession)
        .where(
            AuthSession.user_id == user.id,
            AuthSession.id != principal.session_id,
            AuthSession.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow(), revoked_reason="password changed")
    )
    session.commit()
    return Response(status_code=204)


# -- personal API keys -----------------------------------------------------------------
@router.get("/api-keys", response_model=list[ApiKeyPublic])
def list_api_keys(principal: LoginPrincipal, session: SessionDep) -> list[ApiKey]:
    return list(
        session.exec(
            select(ApiKey)
            .where(ApiKey.user_id == principal.user.id)
            .order_by(ApiKey.created_at.desc())
        )
    )


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=201)
def create_api_key(
    body: ApiKeyCreate, principal: LoginPrincipal, session: SessionDep
) -> ApiKeyCreated:
    live = session.exec(
        select(func.count())
        .select_from(ApiKey)
        .where(ApiKey.user_id == principal.user.id, ApiKey.revoked_at.is_(None))
    ).one()
    if live >= MAX_API_KEYS:
        raise ApiError(
            409, "too_many_api_keys", f"{MAX_API_KEYS} live API keys at most: revoke one first"
        )
    admin_only = sorted(set(body.scopes) & ADMIN_API_KEY_SCOPES)
    if admin_only and principal.user.role != "admin":
        raise ApiError(
            403, "admin_scope", f"only administrators' keys may have {', '.join(admin_only)}"
        )
    return _new_key(session, principal.user.id, body.name, body.scopes)


@router.post("/api-keys/{key_id}/rotate", response_model=ApiKeyCreated, status_code=201)
def rotate_api_key(key_id: str, principal: LoginPrincipal, session: SessionDep) -> ApiKeyCreated:
    """Revoke the key and issue a new one with the same name and scopes."""
    old = _live_key(session, principal.user.id, key_id)
    old.revoked_at = utcnow()
    session.add(old)
    return _new_key(session, principal.user.id, old.name, old.scope_list)


@router.delete("/api-keys/{key_id}", status_code=204)
def revoke_api_key(key_id: str, principal: LoginPrincipal, session: SessionDep) -> Response:
    key = _live_key(session, principal.user.id, key_id)
    key.revoked_at = utcnow()
    session.add(key)
    session.commit()
    return Response(status_code=204)


def _live_key(session, user_id: str, key_id: str) -> ApiKey:
    key = session.exec(
        select(ApiKey).where(
            ApiKey.id == key_id, ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None)
        )
    ).first()
    if key is None:
        raise not_found("API key")
    return key


def _new_key(session, user_id: str, name: str, scopes: list[str]) -> ApiKeyCreated:
    secret = new_api_key()
    key = ApiKey(
        user_id=user_id,
        name=name,
        prefix=secret[:12],
        key_hash=digest(secret),
        scopes=" ".join(scopes),
    )
    session.add(key)
    session.commit()
    return ApiKeyCreated(**ApiKeyPublic.model_validate(key).model_dump(), key=secret)
