"""Administrators: billing plans (`plans.py` says what a plan does). A name is unique
(409); at most one plan is the default, so marking one unmarks the others. Deleting a
plan in use moves its users to the default plan (their `plan_id` is set null in the same
transaction; a plan id left dangling by a concurrent change also reads as the default)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from platform_api.audit import audit
from platform_api.deps import AdminUser, SessionDep
from platform_api.errors import ApiError, not_found
from platform_api.models import Plan, User, utcnow
from platform_api.schemas import PlanCreate, PlanPublic, PlanUpdate

router = APIRouter(prefix="/admin/plans", tags=["admin"])


NULLABLE = {"daily_token_limit", "monthly_token_limit"}


@router.get("", response_model=list[PlanPublic])
def list_plans(admin: AdminUser, session: SessionDep) -> list[Plan]:
    return list(session.exec(select(Plan).order_by(Plan.name)))


@router.post("", response_model=PlanPublic, status_code=201)
def create_plan(body: PlanCreate, admin: AdminUser, session: SessionDep) -> Plan:
    plan = Plan(name=body.name)
    return _write(session, admin, plan, body, "plan.create")


@router.patch("/{plan_id}", response_model=PlanPublic)
def update_plan(plan_id: str, body: PlanUpdate, admin: AdminUser, session: SessionDep) -> Plan:
    plan = session.get(Plan, plan_id)
    if plan is None:
        raise not_found("plan")
    return _write(session, admin, plan, body, "plan.update")


@router.delete("/{plan_id}", status_code=204)
def delete_plan(plan_id: str, admin: AdminUser, session: SessionDep) -> Response:
    plan = session.get(Plan, plan_id)
    if plan is None:
        raise not_found("plan")
    # users.plan_id has no foreign key (models.py): its users move to the default plan
    # here, in the delete's transaction; plan_grants.plan_id is SET NULL by the database.
    session.exec(update(User).where(User.plan_id == plan.id).values(plan_id=None))
    session.delete(plan)
    audit(session, admin, "plan.delete", plan.id, name=plan.name)
    session.commit()
    return Response(status_code=204)


def _write(session: Session, admin, plan: Plan, body: PlanUpdate, action: str) -> Plan:
    changes = body.model_dump(include=body.model_fields_set)
    for name, value in changes.items():
        if value is None and name not in NULLABLE:
            raise ApiError(400, "invalid_plan", f"{name} cannot be null: leave it out instead")
        setattr(plan, name, value)
    plan.updated_at = utcnow()
    session.add(plan)
    name = plan.name
    try:
        session.flush()
        if plan.is_default:
            session.exec(
                update(Plan).where(Plan.id != plan.id, Plan.is_default).values(is_default=False)
            )
        audit(session, admin, action, plan.id, **changes)
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ApiError(
            409, "plan_name_taken", f"a plan named {name!r} exists: choose another name"
        ) from None
    session.refresh(plan)
    return plan
