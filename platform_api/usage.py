"""Sums over the usage records metering writes (`metering.py`), in the database: one
GROUP BY, the same SQL on SQLite and PostgreSQL. Used by a user's own history
(routes/usage.py) and the administrators' analytics (routes/admin_analytics.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func

from platform_api.models import UsageRecord, utcnow


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
