"""The platform's business metrics on `/metrics`, read from the database at scrape time.

Active users, tokens, credits and feedback are facts of the database, not of one API
process: several workers (or replicas) would each count only their own requests. So a
collector runs a few aggregate queries when Prometheus scrapes, and every replica reports
the same totals (a dashboard takes `max` over instances, never `sum`).

- `orchard_platform_users{status}`: accounts by status;
- `orchard_platform_active_users{window}`: distinct users with a model request in the last
  hour / day (`usage_records`);
- `orchard_platform_model_requests_total{source,status}` and
  `orchard_platform_tokens_total{source,kind}`: model requests and their prompt /
  completion tokens (the usage records are append-only, so these only grow);
- `orchard_platform_credits_total{kind}`: credits granted, debited and refunded (the
  append-only ledger), `orchard_platform_credit_balance`: credits held by all accounts;
- `orchard_platform_credit_ledger_mismatches`: accounts whose balance differs from their
  last ledger entry's `balance_after` (always 0 unless something wrote around
  `CreditLedger`: an alert);
- `orchard_platform_feedback{rating}`: answers rated up / down;
- `orchard_platform_ab_challenger_percent{model}`: the A/B split's challenger share, and
  `orchard_platform_ab_guardrail_cuts_total{model}`: how often the guardrail cut it to 0
  (the audit log's `model.guardrail` entries; an alert).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlmodel import Session, func, select

from platform_api.models import (
    AuditEntry,
    CreditAccount,
    CreditEntry,
    MessageFeedback,
    TrafficSplit,
    UsageRecord,
    User,
    utcnow,
)

ACTIVE_WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(days=1)}


class BusinessCollector(Collector):
    """Collects from the engine `engine()` returns; nothing before the app has one."""

    def __init__(self, engine: Callable[[], Engine | None]) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self._engine()
        if engine is None:  # not started yet (or shutting down)
            return
        with Session(engine) as session:
            yield from _users(session)
            yield from _usage(session)
            yield from _credits(session)
            yield from _feedback(session)
            yield from _ab_split(session)


def _users(session: Session) -> Iterator[Metric]:
    users = GaugeMetricFamily("orchard_platform_users", "Accounts by status.", labels=["status"])
    for status, count in session.exec(select(User.status, func.count()).group_by(User.status)):
        users.add_metric([status], count)
    yield users
    active = GaugeMetricFamily(
        "orchard_platform_active_users",
        "Distinct users with a model request in the window.",
        labels=["window"],
    )
    now = utcnow()
    for window, length in ACTIVE_WINDOWS.items():
        count = session.exec(
            select(func.count(func.distinct(UsageRecord.user_id))).where(
                UsageRecord.created_at >= now - length
            )
        ).one()
        active.add_metric([window], count)
    yield active


def _usage(session: Session) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "orchard_platform_model_requests",
        "Model requests (chat and the OpenAI gateway) by source and outcome.",
        labels=["source", "status"],
    )
    tokens = CounterMetricFamily(
        "orchard_platform_tokens",
        "Tokens of model requests by source and kind (prompt, completion).",
        labels=["source", "kind"],
    )
    rows = session.exec(
        select(
            UsageRecord.source,
            UsageRecord.status,
            func.count(),
            func.coalesce(func.sum(UsageRecord.prompt_tokens), 0),
            func.coalesce(func.sum(UsageRecord.completion_tokens), 0),
        ).group_by(UsageRecord.source, UsageRecord.status)
    ).all()
    by_source: dict[str, list[int]] = {}
    for source, status, count, prompt, completion in rows:
        requests.add_metric([source, status], count)
        totals = by_source.setdefault(source, [0, 0])
        totals[0] += prompt
        totals[1] += completion
    for source, (prompt, completion) in by_source.items():
        tokens.add_metric([source, "prompt"], prompt)
        tokens.add_metric([source, "completion"], completion)
    yield requests
    yield tokens


def _credits(session: Session) -> Iterator[Metric]:
    ledger = CounterMetricFamily(
        "orchard_platform_credits", "Credits moved by the ledger, by kind.", labels=["kind"]
    )
    for kind, amount in session.exec(
        select(CreditEntry.kind, func.sum(CreditEntry.amount)).group_by(CreditEntry.kind)
    ):
        ledger.add_metric([kind], amount)
    yield ledger
    balance = session.exec(select(func.coalesce(func.sum(CreditAccount.balance), 0))).one()
    yield GaugeMetricFamily(
        "orchard_platform_credit_balance", "Credits held by all accounts.", value=balance
    )
    last_entry = (
        select(CreditEntry.balance_after)
        .where(CreditEntry.user_id == CreditAccount.user_id)
        .order_by(CreditEntry.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    mismatches = session.exec(
        select(func.count()).where(CreditAccount.balance != func.coalesce(last_entry, 0))
    ).one()
    yield GaugeMetricFamily(
        "orchard_platform_credit_ledger_mismatches",
        "Accounts whose balance is not their last ledger entry's balance_after.",
        value=mismatches,
    )


def _feedback(session: Session) -> Iterator[Metric]:
    feedback = GaugeMetricFamily(
        "orchard_platform_feedback", "Answers rated, by rating.", labels=["rating"]
    )
    counts = dict(
        session.exec(
            select(MessageFeedback.rating, func.count()).group_by(MessageFeedback.rating)
        ).all()
    )
    for rating in ("up", "down"):
        feedback.add_metric([rating], counts.get(rating, 0))
    yield feedback


def _ab_split(session: Session) -> Iterator[Metric]:
    share = GaugeMetricFamily(
        "orchard_platform_ab_challenger_percent",
        "The challenger's share of the champion's traffic (%).",
        labels=["model"],
    )
    splits = {
        split.model_name: split.challenger_percent for split in session.exec(select(TrafficSplit))
    }
    for model, percent in splits.items():
        share.add_metric([model], percent)
    yield share
    cuts = CounterMetricFamily(
        "orchard_platform_ab_guardrail_cuts",
        "Times the A/B guardrail cut the challenger's share to 0.",
        labels=["model"],
    )
    query = (
        select(AuditEntry.target, func.count())
        .where(AuditEntry.action == "model.guardrail")
        .group_by(AuditEntry.target)
    )
    # Every split's series exists from 0, so `increase` sees its first cut.
    counted = {model: 0 for model in splits} | dict(session.exec(query).all())
    for model, count in counted.items():
        cuts.add_metric([model], count)
    yield cuts
