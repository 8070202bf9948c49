"""The caller's usage history: tokens, requests and credits per day or per model, from the
usage records metering writes (`metering.py`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from fastapi import APIRouter, Query
from sqlalchemy import func
from sqlmodel import select

from platform_api.deps import CurrentUser, SessionDep
from platform_api.models import UsageRecord, utcnow
from platform_api.schemas import UsageHistory, UsageRow

router = APIRouter(tags=["usage"])


@router.get("/usage", response_model=UsageHistory)
def read_usage(
    user: CurrentUser,
    session: SessionDep,
    by: Literal["day", "model"] = Query("day", description="Group by UTC day or by model."),
    days: int = Query(30, ge=1, le=366, description="How many days back, today included."),
) -> UsageHistory:
    since = (utcnow() - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    key = func.date(UsageRecord.created_at) if by == "day" else UsageRecord.model
    query = (
        select(
            key.label("key"),
            func.count(UsageRecord.id),
            func.sum(UsageRecord.prompt_tokens),
            func.sum(UsageRecord.completion_tokens),
            func.sum(UsageRecord.credits),
        )
        .where(UsageRecord.user_id == user.id, UsageRecord.created_at >= since)
        .group_by(key)
        .order_by(key)
    )
    rows = [
        UsageRow(
            key=str(k),
            requests=n,
            prompt_tokens=p or 0,
            completion_tokens=c or 0,
            credits=cr or 0,
        )
        for k, n, p, c, cr in session.exec(query)
    ]
    return UsageHistory(
        by=by,
        since=since.date().isoformat(),
        rows=rows,
        total=UsageRow(
            key="total",
            requests=sum(r.requests for r in rows),
            prompt_tokens=sum(r.prompt_tokens for r in rows),
            completion_tokens=sum(r.completion_tokens for r in rows),
            credits=sum(r.credits for r in rows),
        ),
    )
