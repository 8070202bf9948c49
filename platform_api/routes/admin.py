"""Administrators: users (search, role, ban/suspend, plan and token limits, limit reset),
credit grants, and the answers' feedback exported as preference data. Plans themselves
are in `routes/plans.py`."""

from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import func, or_
from sqlmodel import Session, select

from platform_api import sessions
from platform_api.audit import audit
from platform_api.credits import CreditLedger
from platform_api.deps import AdminUser, FeedbackExporter, SessionDep
from platform_api.errors import ApiError, not_found
from platform_api.feedback_export import export_records, opted_out_accounts
from platform_api.models import Plan, User, utcnow
from platform_api.schemas import (
    OFFSET_MAX,
    AdminUserUpdate,
    CreditEntryPublic,
    CreditGrant,
    Role,
    UserPublic,
    UserStatus,
)

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/users", response_model=list[UserPublic])
def list_users(
    admin: AdminUser,
    session: SessionDep,
    q: str | None = Query(
        None, max_length=320, description="Part of the e-mail or display name (any case)."
    ),
    status: UserStatus | None = Query(None, description="Only accounts with this status."),
    role: Role | None = Query(None, description="Only accounts with this role."),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=OFFSET_MAX),
) -> list[User]:
    query = select(User)
    if q and q.strip():
        # LIKE with the pattern's own wildcards escaped: "a_b" matches only "a_b".
        term = q.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{term}%"
        query = query.where(
            or_(
                func.lower(User.email).like(pattern, escape="\\"),
                func.lower(User.display_name).like(pattern, escape="\\"),
            )
        )
    if status is not None:
        query = query.where(User.status == status)
    if role is not None:
        query = query.where(User.role == role)
    return list(session.exec(query.order_by(User.created_at, User.id).offset(offset).limit(limit)))


@router.patch("/users/{user_id}", response_model=UserPublic)
def update_user(user_id: str, body: AdminUserUpdate, admin: AdminUser, session: SessionDep) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise not_found("user")
    sent = body.model_fields_set
    if user.id == admin.id and sent & {"role", "status"}:
        raise ApiError(400, "own_account", "administrators cannot change their own role or status")
    if "plan_id" in sent:
        if body.plan_id is not None and session.get(Plan, body.plan_id) is None:
            raise not_found("plan")
        user.plan_id = body.plan_id
    for limit in ("daily_token_limit", "monthly_token_limit"):
        if limit in sent:  # null is sent on purpose: back to the plan's limit
            setattr(user, limit, getattr(body, limit))
    if body.role is not None:
        user.role = body.role
    if body.status is not None:
        user.status = body.status
        if body.status != "active":  # also refused per request; this ends the sessions too
            sessions.revoke_sessions(session, f"account {body.status}", user_id=user.id)
    user.updated_at = utcnow()
    session.add(user)
    audit(session, admin, "user.update", user.id, **body.model_dump(include=sent))
    session.commit()
    return user


@router.post("/users/{user_id}/limits/reset", response_model=UserPublic)
def reset_limits(user_id: str, admin: AdminUser, session: SessionDep) -> User:
    """Start the user's daily and monthly token counts afresh: usage before now no longer
    counts toward their limits (it stays in the usage history and the analytics)."""
    user = session.get(User, user_id)
    if user is None:
        raise not_found("user")
    user.limits_reset_at = user.updated_at = utcnow()
    session.add(user)
    audit(session, admin, "user.limits_reset", user.id)
    session.commit()
    return user


@router.post("/users/{user_id}/credits", response_model=CreditEntryPublic, status_code=201)
def grant_credits(
    user_id: str, body: CreditGrant, admin: AdminUser, session: SessionDep
) -> CreditEntryPublic:
    if session.get(User, user_id) is None:
        raise not_found("user")
    entry = CreditLedger(session).grant(user_id, body.amount, f"{body.reason} (by {admin.email})")
    audit(session, admin, "credits.grant", user_id, amount=body.amount, reason=body.reason)
    session.commit()
    return CreditEntryPublic.model_validate(entry)


# -- feedback as preference data ------------------------------------------------------------
@router.get(
    "/feedback/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
def export_feedback(
    request: Request,
    admin: FeedbackExporter,
    rating: Literal["up", "down"] | None = Query(
        None, description="Only ratings, of this value (no regenerations or edits)."
    ),
) -> StreamingResponse:
    """The answers' feedback as preference data, one JSON line per signal
    (`feedback_export.py`): ratings in TRL's unpaired format (KTO: `prompt`, `completion`,
    `label`), regenerations (the replaced answer a weak `rejected`, its replacement
    `chosen`) and edited questions, each with the model version, the A/B variant and a
    pseudonym of the user. Accounts that opted out of "use my feedback to improve the
    model" are left out (`X-Orchard-Opted-Out` counts them). An administrator's login, or
    an administrator's API key with the `feedback:export` scope (the DAG's)."""
    engine = request.app.state.engine
    with Session(engine) as session:
        audit(session, admin, "feedback.export", rating=rating)
        session.commit()
        opted_out = opted_out_accounts(session)

    def lines():
        with Session(engine) as session:
            for record in export_records(session, rating):
                yield json.dumps(record, ensure_ascii=False) + "\n"

    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={
            "Content-Disposition": 'attachment; filename="orchard-feedback.jsonl"',
            "X-Orchard-Opted-Out": str(opted_out),
        },
    )
