"""Plans: the credits each user is granted per calendar month (UTC) and the tokens they may
use per UTC day and month.

A user's plan is `user.plan_id`, or the default plan when that is null (a new account, or
one whose plan was deleted: deleting a plan clears it in the same transaction). A user's own
`daily_token_limit` / `monthly_token_limit` override the plan's; null means the plan's,
and a null limit on the plan means unlimited.

Monthly grants are lazy: `grant_due` runs when a user's credits are read or a metered
request starts, and `grant_monthly` grants every user at once (`python -m
platform_api.manage grant-monthly`, e.g. from cron on the 1st). Both are idempotent: a
`PlanGrant` row per (user, "YYYY-MM") is inserted in the grant's transaction, and its
unique key makes a retried or concurrent second grant fail and roll back.

Token limits count what usage records say was used since the start of the UTC day or
month (or since an administrator's reset, if later), plus the new request's upper bound.
Requests still in flight have no usage record yet, so concurrent requests can together
overshoot a limit by at most their bounds; credits, reserved before serving is called,
remain the hard guarantee against spending.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from platform_api.credits import CreditLedger
from platform_api.errors import ApiError
from platform_api.models import CreditEntry, Plan, PlanGrant, UsageRecord, User, utcnow


def period_of(now: datetime) -> str:
    return now.strftime("%Y-%m")


def day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: datetime) -> datetime:
    return day_start(now).replace(day=1)


def next_month(now: datetime) -> datetime:
    start = month_start(now)
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


def default_plan(session: Session) -> Plan | None:
    """The default plan; should two ever be marked (concurrent edits), the newest edit wins."""
    return session.execute(_DEFAULT_PLAN).scalars().first()


# Statements every metered request runs, built once.
_DEFAULT_PLAN = select(Plan).where(Plan.is_default).order_by(Plan.updated_at.desc(), Plan.id)
_GRANTED = select(PlanGrant.id).where(
    PlanGrant.user_id == bindparam("p_user_id"), PlanGrant.period == bindparam("p_period")
)
_TOKENS_USED = select(func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens)).where(
    UsageRecord.user_id == bindparam("p_user_id"), UsageRecord.created_at >= bindparam("p_since")
)

STARTER_PLAN = "Starter"


def ensure_starter_plan(session: Session, monthly_credits: int) -> Plan | None:
    """At start-up of a new platform (no plan and no account yet), make the default plan
    `Starter` granting `monthly_credits` a month (setting `starter_plan_credits`; 0 makes
    none). A platform in use is left alone, also after an admin deleted every plan. Two API
    processes starting at once may both try; the plan name is unique, so one insert wins
    and the other finds it."""
    if monthly_credits <= 0:
        return None
    for table in (Plan, User):
        if session.exec(select(table.id).limit(1)).first() is not None:
            return None
    plan = Plan(
        name=STARTER_PLAN,
        description="made at the first start-up (setting starter_plan_credits)",
        monthly_credits=monthly_credits,
        is_default=True,
    )
    session.add(plan)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return None
    return plan


def plan_of(session: Session, user: User) -> Plan | None:
    plan = session.get(Plan, user.plan_id) if user.plan_id else None
    return plan or default_plan(session)


@dataclass(frozen=True)
class Limits:
    plan: Plan | None
    daily: int | None  # tokens per UTC day; None: unlimited
    monthly: int | None


def limits_of(session: Session, user: User) -> Limits:
    plan = plan_of(session, user)
    daily = user.daily_token_limit
    monthly = user.monthly_token_limit
    if daily is None and plan is not None:
        daily = plan.daily_token_limit
    if monthly is None and plan is not None:
        monthly = plan.monthly_token_limit
    return Limits(plan, daily, monthly)


# -- monthly grants --------------------------------------------------------------------------
def grant_due(session: Session, user: User, now: datetime | None = None) -> CreditEntry | None:
    """This month's grant of the user's plan if it has not been made: the ledger grant and
    its `PlanGrant` row, committed together. Runs as its own transaction, so the session
    must have nothing pending. None when nothing was due (or a concurrent call granted)."""
    now = now or utcnow()
    plan = plan_of(session, user)
    if plan is None or plan.monthly_credits <= 0 or user.deleted_at is not None:
        return None
    period = period_of(now)
    if session.execute(_GRANTED, {"p_user_id": user.id, "p_period": period}).first() is not None:
        return None
    try:
        entry = CreditLedger(session).grant(
            user.id, plan.monthly_credits, f"plan {plan.name}: monthly credits for {period}"
        )
        session.add(
            PlanGrant(user_id=user.id, plan_id=plan.id, period=period, ledger_entry_id=entry.id)
        )
        session.commit()
    except IntegrityError:  # the unique (user_id, period): granted concurrently
        session.rollback()
        return None
    except LookupError:  # no credit account (an erased account)
        session.rollback()
        return None
    return entry


def grant_monthly(session: Session, now: datetime | None = None) -> int:
    """Grant every account its plan's credits for the month of `now`; how many were granted.
    Idempotent: run it again (or concurrently) and nobody is granted twice."""
    now = now or utcnow()
    users = list(session.exec(select(User).where(User.deleted_at.is_(None)).order_by(User.id)))
    return sum(grant_due(session, user, now) is not None for user in users)


# -- token limits ----------------------------------------------------------------------------
def tokens_used(session: Session, user: User, since: datetime) -> int:
    if user.limits_reset_at is not None and user.limits_reset_at > since:
        since = user.limits_reset_at
    total = session.execute(_TOKENS_USED, {"p_user_id": user.id, "p_since": since}).scalar_one()
    return total or 0


def check_token_limits(
    session: Session, user: User, tokens: int, now: datetime | None = None
) -> None:
    """Raise a 429 `token_limit` (with Retry-After) when `tokens` more would pass the
    user's monthly or daily limit. The month is checked first: its wait is the longer."""
    now = now or utcnow()
    limits = limits_of(session, user)
    for name, limit, start, end in (
        ("monthly", limits.monthly, month_start(now), next_month(now)),
        ("daily", limits.daily, day_start(now), day_start(now) + timedelta(days=1)),
    ):
        if limit is None:
            continue
        used = tokens_used(session, user, start)
        if used + tokens > limit:
            retry = max(1, int((end - now).total_seconds()))
            raise ApiError(
                429,
                "token_limit",
                f"the {name} token limit of {limit} tokens would be passed: {used} used, and "
                f"this request may use up to {tokens}; it resets in {retry} s (UTC "
                f"{'midnight' if name == 'daily' else 'month start'}), or lower max_tokens",
                headers={"Retry-After": str(retry)},
            )
