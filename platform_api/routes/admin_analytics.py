"""Administrators: usage analytics over every user's usage records (what metering writes):
requests, tokens, credits and their cost in US dollars (credits × `credit_price_usd`) per
UTC day, user or model, active users per day, the most
requested models. Each figure is one GROUP BY in the database (the same SQL on SQLite
and PostgreSQL), over the indexed `created_at` window, never rows fetched into Python."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from sqlalchemy import func, null
from sqlmodel import select

from platform_api.deps import AdminUser, SessionDep
from platform_api.models import UsageRecord, User
from platform_api.schemas import (
    ANALYTICS_DAYS_MAX,
    POPULAR_MODELS,
    ActiveUsers,
    AnalyticsRow,
    PopularModel,
    UsageAnalytics,
)
from platform_api.usage import usage_counts, usage_day, usage_sums, window_start

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/analytics", response_model=UsageAnalytics)
def usage_analytics(
    request: Request,
    admin: AdminUser,
    session: SessionDep,
    by: Literal["day", "user", "model"] = Query("day", description="Group the rows by this."),
    days: int = Query(
        30, ge=1, le=ANALYTICS_DAYS_MAX, description="How many UTC days back, today included."
    ),
    limit: int = Query(100, ge=1, le=1000, description="At most this many users or models."),
) -> UsageAnalytics:
    price = request.app.state.settings.credit_price_usd
    since = window_start(days)
    in_window = UsageRecord.created_at >= since
    users = func.count(func.distinct(UsageRecord.user_id))
    tokens = func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens)

    if by == "day":
        day = usage_day()
        query = select(day, null(), *usage_sums(), users).group_by(day).order_by(day)
    elif by == "user":
        query = (
            select(UsageRecord.user_id, User.email, *usage_sums(), users)
            .join(User, User.id == UsageRecord.user_id)
            .group_by(UsageRecord.user_id, User.email)
            .order_by(tokens.desc(), UsageRecord.user_id)
            .limit(limit)
        )
    else:
        query = (
            select(UsageRecord.model, null(), *usage_sums(), users)
            .group_by(UsageRecord.model)
            .order_by(tokens.desc(), UsageRecord.model)
            .limit(limit)
        )
    rows = [
        _row(price, key=str(key), email=email, users=n_users, **usage_counts(*sums))
        for key, email, *sums, n_users in session.exec(query.where(in_window))
    ]

    *sums, n_users = session.exec(select(*usage_sums(), users).where(in_window)).one()
    day = usage_day()
    active = session.exec(select(day, users).where(in_window).group_by(day).order_by(day))
    requests = func.count(UsageRecord.id)
    popular = session.exec(
        select(UsageRecord.model, requests, users, tokens)
        .where(in_window)
        .group_by(UsageRecord.model)
        .order_by(requests.desc(), UsageRecord.model)
        .limit(POPULAR_MODELS)
    )
    return UsageAnalytics(
        by=by,
        days=days,
        since=since.date().isoformat(),
        rows=rows,
        total=_row(price, key="total", users=n_users, **usage_counts(*sums)),
        active_users=[ActiveUsers(day=str(d), users=n) for d, n in active],
        popular_models=[
            PopularModel(model=m, requests=n, users=u, tokens=t or 0) for m, n, u, t in popular
        ],
    )


def _row(price: float, **fields) -> AnalyticsRow:
    return AnalyticsRow(cost_usd=round(fields["credits"] * price, 9), **fields)
