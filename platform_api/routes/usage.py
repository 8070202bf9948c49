"""The caller's usage history: tokens, requests and credits per day or per model, from the
usage records metering writes (`metering.py`); and the tokens counted toward today's and
this month's limits (`plans.py`), with the limits."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from fastapi import APIRouter, Query, Request
from sqlalchemy import func
from sqlmodel import select

from platform_api.deps import SessionDep, UsageReader
from platform_api.models import UsageRecord, utcnow
from platform_api.plans import day_start, limits_of, month_start, tokens_used
from platform_api.schemas import TokenLimits, UsageHistory, UsageRow

router = APIRouter(tags=["usage"])


def window_start(days: int) -> datetime:
    """UTC midnight `days - 1` days ago: a window of `days` UTC days, today included."""
    return (utcnow() - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)


def usage_day():
    """A usage record's UTC day (records are stored in naive UTC), on SQLite and PostgreSQL."""
    return func.date(UsageRecord.created_at)


def usage_sums() -> tuple:
    """Requests, prompt tokens, completion tokens and credits of a group of usage records."""
    return (
        func.count(UsageRecord.id),
        func.sum(UsageRecord.prompt_tokens),
        func.sum(UsageRecord.completion_tokens),
        func.sum(UsageRecord.credits),
    )


def usage_counts(requests: int, prompt: int | None, completion: int | None, credits: int | None):
    """`usage_sums()` of one group as `UsageRow` fields (a SUM over no rows is NULL)."""
    return {
        "requests": requests,
        "prompt_tokens": prompt or 0,
        "completion_tokens": completion or 0,
        "credits": credits or 0,
    }


def usd(credits: int, price: float) -> float:
    """What `credits` cost in US dollars, rounded as `metering.Pricing.usd` rounds."""
    return round(credits * price, 9)


@router.get("/usage", response_model=UsageHistory)
def read_usage(
    request: Request,
    user: UsageReader,
    session: SessionDep,
    by: Literal["day", "model"] = Query("day", description="Group by UTC day or by model."),
    days: int = Query(30, ge=1, le=366, description="How many days back, today included."),
) -> UsageHistory:
    since = window_start(days)
    key = usage_day() if by == "day" else UsageRecord.model
    query = (
        select(key.label("key"), *usage_sums())
        .where(UsageRecord.user_id == user.id, UsageRecord.created_at >= since)
        .group_by(key)
        .order_by(key)
    )
    price = request.app.state.settings.credit_price_usd
    rows = []
    for k, *sums in session.exec(query):
        counts = usage_counts(*sums)
        rows.append(UsageRow(key=str(k), cost_usd=usd(counts["credits"], price), **counts))
    credits = sum(r.credits for r in rows)
    now = utcnow()
    limits = limits_of(session, user)
    return UsageHistory(
        by=by,
        since=since.date().isoformat(),
        rows=rows,
        tokens_today=tokens_used(session, user, day_start(now)),
        tokens_this_month=tokens_used(session, user, month_start(now)),
        limits=TokenLimits(daily_token_limit=limits.daily, monthly_token_limit=limits.monthly),
        total=UsageRow(
            key="total",
            requests=sum(r.requests for r in rows),
            prompt_tokens=sum(r.prompt_tokens for r in rows),
            completion_tokens=sum(r.completion_tokens for r in rows),
            credits=credits,
            cost_usd=usd(credits, price),
        ),
        credit_price_usd=price,
    )
