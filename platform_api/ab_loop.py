"""The platform's side of the closed loop's A/B test (docs/ab-review.md).

- `side_stats`: per side of the split, what the `orchard_ab_review` DAG needs for its
  intervals and sequential test (it reads them through `/admin/models/split/stats`).
- `start_loop_split`: a challenger the feedback loop registered (version tag
  `orchard.feedback.version`, or `loop.feedback_dataset`) starts an A/B split at
  `ab_loop_share_percent`, once per version (tag `ab.split_started_at` marks it).
- The guardrail (`check_guardrail`, run every `ab_guardrail_check_s` by `GuardrailTask`
  in each API process while a split runs): when the challenger's error rate or thumbs-down
  rate since the split was set is above its bound with 95 % confidence (the lower end of
  its Wilson interval), its share drops to 0 at once, with an audit entry
  `model.guardrail` that is the admins' alert (the models page shows it, Prometheus
  counts it). The update is conditional, so several API processes cut it once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, case, func, update
from sqlmodel import Session, select

from orchard.ab_stats import wilson
from orchard.settings import Settings
from platform_api.access import CHALLENGER
from platform_api.models import (
    VARIANTS,
    AuditEntry,
    Message,
    MessageFeedback,
    TrafficSplit,
    UsageRecord,
    utcnow,
)
from platform_api.registry import Registry
from platform_api.schemas import GuardrailAlert, SideStats

log = logging.getLogger("platform_api.ab_loop")

GUARDRAIL_ACTION = "model.guardrail"
LOOP_TAGS = ("orchard.feedback.version", "loop.feedback_dataset")  # orchard.model_card
STARTED_TAG = "ab.split_started_at"


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def side_stats(session: Session, since: datetime | None) -> list[SideStats]:
    """Chat answers per side (with their feedback, regenerations, stops, failures,
    latency and credits) plus gateway requests for the champion (failures only: they take
    no feedback), since `since`."""
    rated = func.count(MessageFeedback.message_id)
    up = func.count(case((MessageFeedback.rating == "up", 1)))
    down = func.count(case((MessageFeedback.rating == "down", 1)))
    replaced = func.count(case((Message.superseded_at.is_not(None), 1)))
    stopped = func.count(case((Message.status == "partial", 1)))
    failed = func.count(case((Message.status == "failed", 1)))
    latency = func.coalesce(Message.latency_ms, 0) * 1.0
    credits = func.coalesce(Message.credits, 0) * 1.0
    query = (
        select(
            Message.variant,
            func.count(Message.id),
            rated,
            up,
            down,
            replaced,
            stopped,
            failed,
            func.avg(latency),
            func.avg(latency * latency),
            func.avg(credits),
            func.avg(credits * credits),
        )
        .outerjoin(MessageFeedback, MessageFeedback.message_id == Message.id)
        .where(
            Message.variant.is_not(None),
            Message.role == "assistant",
            Message.status != "streaming",
        )
        .group_by(Message.variant)
    )
    gateway = (
        select(
            UsageRecord.variant,
            func.count(UsageRecord.id),
            func.count(case((UsageRecord.status == "failed", 1))),
        )
        .where(UsageRecord.source == "gateway", UsageRecord.variant.is_not(None))
        .group_by(UsageRecord.variant)
    )
    if since is not None:
        query = query.where(Message.created_at >= since)
        gateway = gateway.where(UsageRecord.created_at >= since)
    chats = {row[0]: row for row in session.exec(query)}
    requests = {row[0]: row for row in session.exec(gateway)}
    sides = []
    for variant in VARIANTS:
        row = chats.get(variant) or (variant, 0, 0, 0, 0, 0, 0, 0, None, None, None, None)
        _, sent, sent_failed = requests.get(variant, (variant, 0, 0))

        def number(value):
            return None if value is None else float(value)

        sides.append(
            SideStats(
                variant=variant,
                answers=row[1] + sent,
                rated=row[2],
                thumbs_up=row[3],
                thumbs_down=row[4],
                regenerated=row[5],
                stopped=row[6],
                failed=row[7] + sent_failed,
                latency_ms_mean=number(row[8]),
                latency_ms_mean_sq=number(row[9]),
                credits_mean=number(row[10]),
                credits_mean_sq=number(row[11]),
                chat_answers=row[1],
            )
        )
    return sides


# -- the guardrail ------------------------------------------------------------------------
@dataclass(frozen=True)
class Breach:
    metric: str
    rate: float
    low: float
    bound: float
    count: int


def breach(settings: Settings, challenger: SideStats) -> Breach | None:
    """The first bound the challenger crosses with 95 % confidence, if any."""
    checks = (
        ("error_rate", challenger.failed, challenger.answers, settings.ab_guardrail_error_rate),
        (
            "thumbs_down_rate",
            challenger.thumbs_down,
            challenger.rated,
            settings.ab_guardrail_thumbs_down_rate,
        ),
    )
    for metric, bad, total, bound in checks:
        if total < settings.ab_guardrail_min_answers:
            continue
        low, _ = wilson(bad, total)
        if low > bound:
            return Breach(metric, bad / total, low, bound, total)
    return None


def _challenger_version(settings: Settings) -> str | None:
    """The registry's challenger, for the alert (None when the registry cannot say)."""
    try:
        aliases, _, _ = Registry(settings.mlflow_uri, settings.model_name).overview()
    except Exception:  # noqa: BLE001 - the cut must not wait for, or fail with, MLflow
        return None
    return aliases.get(CHALLENGER)


def check_guardrail(session: Session, settings: Settings) -> bool:
    """Cut the challenger to 0 % if it breaches a bound; True when this call cut it."""
    split = session.get(TrafficSplit, settings.model_name)
    if split is None or split.challenger_percent == 0:
        return False
    since = _aware(split.updated_at)
    challenger = next(s for s in side_stats(session, since) if s.variant == CHALLENGER)
    found = breach(settings, challenger)
    if found is None:
        return False
    previous = split.challenger_percent  # the update below refreshes `split`
    cut = session.exec(
        update(TrafficSplit)
        .where(
            TrafficSplit.model_name == settings.model_name,
            TrafficSplit.challenger_percent == previous,
        )
        .values(challenger_percent=0, updated_at=utcnow(), updated_by=None)
    )
    if cut.rowcount != 1:  # another process cut (or an admin changed) it first
        session.rollback()
        return False
    detail = {
        "actor_email": "guardrail",
        "metric": found.metric,
        "rate": round(found.rate, 4),
        "low": round(found.low, 4),
        "bound": found.bound,
        "count": found.count,
        "previous_percent": previous,
        "version": _challenger_version(settings),
    }
    session.add(
        AuditEntry(
            actor_id=None,
            action=GUARDRAIL_ACTION,
            target=settings.model_name,
            detail=json.dumps(detail),
        )
    )
    session.commit()
    log.warning("guardrail cut the challenger of %s to 0 %%: %s", settings.model_name, detail)
    return True


def latest_alert(session: Session, model_name: str) -> GuardrailAlert | None:
    """The guardrail's cut, while it is the split's last change (an admin setting the
    split again clears it; the audit entry stays)."""
    split = session.get(TrafficSplit, model_name)
    if split is None or split.challenger_percent != 0 or split.updated_by is not None:
        return None
    entry = session.exec(
        select(AuditEntry)
        .where(AuditEntry.action == GUARDRAIL_ACTION, AuditEntry.target == model_name)
        .order_by(AuditEntry.id.desc())
        .limit(1)
    ).first()
    if entry is None:
        return None
    detail = json.loads(entry.detail)
    return GuardrailAlert(
        at=_aware(entry.created_at),
        metric=detail["metric"],
        rate=detail["rate"],
        low=detail["low"],
        bound=detail["bound"],
        count=detail["count"],
        previous_percent=detail["previous_percent"],
        version=detail.get("version"),
    )


class GuardrailTask:
    """Checks the guardrail every `ab_guardrail_check_s` seconds (one cheap query while no
    split runs), in the API process's event loop."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine, self.settings = engine, settings
        self.task: asyncio.Task | None = None

    def _check(self) -> None:
        with Session(self.engine) as session:
            check_guardrail(session, self.settings)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.ab_guardrail_check_s)
            try:
                await asyncio.to_thread(self._check)
            except Exception:  # a database hiccup must not end the checks
                log.exception("the A/B guardrail check failed")

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def aclose(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
