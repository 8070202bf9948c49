"""Administrators: users (role, ban/suspend) and credit grants. Model promotion comes later."""

from __future__ import annotations

from fastapi import APIRouter, Query
from sqlmodel import select

from platform_api import sessions
from platform_api.credits import CreditLedger
from platform_api.deps import AdminUser, SessionDep
from platform_api.errors import ApiError, not_found
from platform_api.models import User, utcnow
from platform_api.schemas import AdminUserUpdate, CreditEntryPublic, CreditGrant, UserPublic

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/users", response_model=list[UserPublic])
def list_users(
    admin: AdminUser,
    session: SessionDep,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> list[User]:
    return list(session.exec(select(User).order_by(User.created_at).offset(offset).limit(limit)))


@router.patch("/users/{user_id}", response_model=UserPublic)
def update_user(user_id: str, body: AdminUserUpdate, admin: AdminUser, session: SessionDep) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise not_found("user")
    if user.id == admin.id:
        raise ApiError(400, "own_account", "administrators cannot change their own role or status")
    if body.role is not None:
        user.role = body.role
    if body.status is not None:
        user.status = body.status
        if body.status != "active":  # also refused per request; this ends the sessions too
            sessions.revoke_sessions(session, f"account {body.status}", user_id=user.id)
    user.updated_at = utcnow()
    session.add(user)
    session.commit()
    return user


@router.post("/users/{user_id}/credits", response_model=CreditEntryPublic, status_code=201)
def grant_credits(
    user_id: str, body: CreditGrant, admin: AdminUser, session: SessionDep
) -> CreditEntryPublic:
    if session.get(User, user_id) is None:
        raise not_found("user")
    entry = CreditLedger(session).grant(user_id, body.amount, f"{body.reason} (by {admin.email})")
    session.commit()
    return CreditEntryPublic.model_validate(entry)
