"""The caller's usage history: tokens, requests and credits per day or per model, from the
usage records metering writes (`metering.py`); and the tokens counted toward today's and
this month's limits (`plans.py`), with the limits."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from sqlmodel import select

from platform_api.deps import SessionDep, UsageReader
from platform_api.models import UsageRecord, utcnow
from platform_api.plans import day_start, limits_of, month_start, tokens_used
from platform_api.schemas import TokenLimits, UsageHistory, UsageRow
from platform_api.usage import usage_counts, usage_day, usage_sums, usd, window_start

router = APIRouter(tags=["usage"])


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
