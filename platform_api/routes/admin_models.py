"""Administrators: the model registry (versions with eval metrics and lineage, promote a
version to champion, roll back), each version's model card, the champion/challenger A/B
split with its results, the A/B review's per-side statistics and the feedback loop's split
start (also for an admin's `models:review` API key: docs/ab-review.md), and the audit log."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from fastapi import APIRouter, Query, Request
from sqlalchemy import case, func
from sqlmodel import select

from platform_api.ab_loop import LOOP_TAGS, STARTED_TAG, latest_alert, side_stats
from platform_api.access import CHALLENGER, CHAMPION
from platform_api.audit import audit
from platform_api.deps import AdminUser, ModelsReviewer, SessionDep
from platform_api.errors import ApiError
from platform_api.models import (
    VARIANTS,
    AuditEntry,
    Message,
    MessageFeedback,
    TrafficSplit,
    UsageRecord,
    utcnow,
)
from platform_api.registry import Registry, RegistryError, RegistryUnavailable, VersionNotFound
from platform_api.schemas import (
    OFFSET_MAX,
    AuditEntryPublic,
    LoopSplit,
    ModelCardPublic,
    ModelRegistryPublic,
    ModelVersionPublic,
    Promotion,
    PromotionResult,
    SplitPublic,
    SplitResults,
    SplitStats,
    SplitWrite,
    VariantResult,
)

router = APIRouter(prefix="/admin", tags=["admin"])


def _registry(request: Request) -> Registry:
    settings = request.app.state.settings
    return Registry(settings.mlflow_uri, settings.model_name)


def _registry_call(fn, *args):
    try:
        return fn(*args)
    except VersionNotFound as error:
        raise ApiError(404, "version_not_found", str(error)) from None
    except RegistryError as error:
        raise ApiError(409, "registry_refused", str(error)) from None
    except RegistryUnavailable as error:
        raise ApiError(503, "registry_unavailable", f"{error}; try again") from None


@router.get("/models", response_model=ModelRegistryPublic)
def list_model_versions(request: Request, admin: AdminUser) -> ModelRegistryPublic:
    registry = _registry(request)
    aliases, history, versions = _registry_call(registry.overview)
    return ModelRegistryPublic(
        name=registry.name,
        aliases=aliases,
        champion_history=history,
        versions=[
            ModelVersionPublic(
                version=v.version,
                aliases=v.aliases,
                created_at=datetime.fromtimestamp(v.created_at_ms / 1000, UTC),
                status=v.status,
                run_id=v.run_id,
                metrics=v.metrics,
                lineage=v.lineage,
                description=v.description,
                review=v.review,
            )
            for v in versions
        ],
    )


@router.post("/models/promote", response_model=PromotionResult)
def promote_version(
    body: Promotion, request: Request, admin: AdminUser, session: SessionDep
) -> PromotionResult:
    """Make `version` the champion; serving switches to it without dropping streams."""
    registry = _registry(request)
    previous = _registry_call(registry.promote, body.version)
    audit(session, admin, "model.promote", f"{registry.name}/{body.version}", previous=previous)
    session.commit()
    return PromotionResult(champion=body.version, previous=previous)


@router.post("/models/rollback", response_model=PromotionResult)
def rollback_champion(request: Request, admin: AdminUser, session: SessionDep) -> PromotionResult:
    """Return `champion` to the version it pointed at before the last promotion."""
    registry = _registry(request)
    replaced, restored = _registry_call(registry.rollback)
    audit(session, admin, "model.rollback", f"{registry.name}/{restored}", replaced=replaced)
    session.commit()
    return PromotionResult(champion=restored, previous=replaced)


def _split(session, model_name: str) -> SplitPublic:
    row = session.get(TrafficSplit, model_name)
    return SplitPublic(
        model_name=model_name,
        challenger_percent=row.challenger_percent if row else 0,
        updated_at=row.updated_at if row else None,
        updated_by=row.updated_by if row else None,
        guardrail=latest_alert(session, model_name) if row else None,
    )


@router.get("/models/split", response_model=SplitPublic)
def read_split(request: Request, admin: AdminUser, session: SessionDep) -> SplitPublic:
    return _split(session, request.app.state.settings.model_name)


def _challenger_version(request: Request) -> str:
    """The registry's challenger version; 409 when serving or the registry has none."""
    settings = request.app.state.settings
    if CHALLENGER not in settings.serve_aliases or CHAMPION not in settings.serve_aliases:
        raise ApiError(
            409,
            "no_challenger",
            f"serving does not serve both {CHAMPION} and {CHALLENGER} "
            f"(ORCHARD_SERVE_ALIASES={','.join(settings.serve_aliases)})",
        )
    aliases, _, _ = _registry_call(_registry(request).overview)
    if CHALLENGER not in aliases:
        raise ApiError(
            409,
            "no_challenger",
            f"{settings.model_name} has no {CHALLENGER} alias in the registry: "
            "let the pipeline register one before splitting traffic",
        )
    return aliases[CHALLENGER]


def _write_split(session, admin, model_name: str, percent: int, **detail) -> None:
    row = session.get(TrafficSplit, model_name) or TrafficSplit(model_name=model_name)
    previous = row.challenger_percent  # 0 for a new row
    row.challenger_percent = percent
    row.updated_at, row.updated_by = utcnow(), admin.id
    session.add(row)
    audit(
        session,
        admin,
        "model.split",
        model_name,
        challenger_percent=percent,
        previous=previous,
        **detail,
    )
    session.commit()


@router.put("/models/split", response_model=SplitPublic)
def set_split(
    body: SplitWrite, request: Request, admin: AdminUser, session: SessionDep
) -> SplitPublic:
    """Send `challenger_percent` % of the champion's traffic to the challenger: chats stay
    on one side (a hash of the chat id and the percent), gateway requests are drawn one by
    one. Above 0 the registry must have a `challenger` that serving serves (409)."""
    settings = request.app.state.settings
    if body.challenger_percent > 0:
        _challenger_version(request)
    _write_split(session, admin, settings.model_name, body.challenger_percent)
    return _split(session, settings.model_name)


def _rated(rating: str):
    return func.count(case((MessageFeedback.rating == rating, 1)))


@router.get("/models/split/results", response_model=SplitResults)
def read_split_results(
    request: Request,
    admin: AdminUser,
    session: SessionDep,
    since: datetime | None = Query(
        None, description="Only answers made from then on (UTC without a time zone)."
    ),
) -> SplitResults:
    """Per side of the split: answers, thumbs up/down and mean completion tokens and
    latency, over the answers to chats set to the champion (those the split decides); and
    the gateway requests for the champion each side took, with their mean completion
    tokens."""
    query = (
        select(
            Message.variant,
            func.count(Message.id),
            _rated("up"),
            _rated("down"),
            func.avg(Message.completion_tokens),
            func.avg(Message.latency_ms),
        )
        .outerjoin(MessageFeedback, MessageFeedback.message_id == Message.id)
        .where(Message.variant.is_not(None), Message.status != "streaming")
        .group_by(Message.variant)
    )
    if since is not None:
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
        query = query.where(Message.created_at >= since)
    rows = {row[0]: row for row in session.exec(query)}
    complete_tokens = case(
        (UsageRecord.status == "complete", UsageRecord.completion_tokens), else_=None
    )
    gateway = select(UsageRecord.variant, func.count(UsageRecord.id), func.avg(complete_tokens))
    gateway = gateway.where(UsageRecord.source == "gateway", UsageRecord.variant.is_not(None))
    gateway = gateway.group_by(UsageRecord.variant)
    if since is not None:
        gateway = gateway.where(UsageRecord.created_at >= since)
    requests = {row[0]: row for row in session.exec(gateway)}
    variants = []
    for variant in VARIANTS:
        _, messages, up, down, tokens, latency = rows.get(variant, (variant, 0, 0, 0, None, None))
        _, sent, sent_tokens = requests.get(variant, (variant, 0, None))
        variants.append(
            VariantResult(
                variant=variant,
                messages=messages,
                thumbs_up=up,
                thumbs_down=down,
                mean_completion_tokens=None if tokens is None else round(float(tokens), 2),
                mean_latency_ms=None if latency is None else round(float(latency), 1),
                gateway_requests=sent,
                gateway_mean_completion_tokens=None
                if sent_tokens is None
                else round(float(sent_tokens), 2),
            )
        )
    return SplitResults(
        split=_split(session, request.app.state.settings.model_name), since=since, variants=variants
    )


@router.get("/models/split/stats", response_model=SplitStats)
def read_split_stats(
    request: Request,
    reviewer: ModelsReviewer,
    session: SessionDep,
    since: datetime | None = Query(
        None, description="Only answers made from then on (UTC without a time zone)."
    ),
) -> SplitStats:
    """Per side: answers, ratings, regenerations, stops, failures, and the mean and mean of
    squares of latency and credits, for the orchard_ab_review DAG's intervals and test.
    An administrator's API key with the `models:review` scope may read it."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return SplitStats(
        split=_split(session, request.app.state.settings.model_name),
        since=since,
        sides=side_stats(session, since),
    )


@router.post("/models/split/loop", response_model=LoopSplit)
def start_loop_split(request: Request, reviewer: ModelsReviewer, session: SessionDep) -> LoopSplit:
    """Start the A/B split for a challenger the feedback loop registered (version tag
    `orchard.feedback.version` or `loop.feedback_dataset`), at `ab_loop_share_percent`,
    once per version: a version whose split was started (tag `ab.split_started_at`) is
    left as it is, whatever an admin or the guardrail did to the split since. Audited as
    `model.split`."""
    settings = request.app.state.settings
    registry = _registry(request)
    version = _challenger_version(request)
    tags = _registry_call(registry.version_tags, version)

    def answer(started: bool, reason: str) -> LoopSplit:
        return LoopSplit(
            started=started,
            reason=reason,
            version=version,
            split=_split(session, settings.model_name),
        )

    if not any(tag in tags for tag in LOOP_TAGS):
        return answer(
            False, f"challenger v{version} has no {' or '.join(LOOP_TAGS)} tag: not from the loop"
        )
    if STARTED_TAG in tags:
        return answer(False, f"the split of v{version} started at {tags[STARTED_TAG]}")
    percent = settings.ab_loop_share_percent
    _write_split(
        session, reviewer, settings.model_name, percent, version=version, reason="feedback loop"
    )
    _registry_call(registry.set_version_tag, version, STARTED_TAG, utcnow().isoformat())
    return answer(True, f"challenger v{version} gets {percent} % of the champion's traffic")


@router.get("/models/{version}/card", response_model=ModelCardPublic)
def read_model_card(version: str, request: Request, admin: AdminUser) -> ModelCardPublic:
    """The version's model card, generated from the registry (the same card the
    orchard_ab_review DAG logs as the artifact `model_card/` of the version's run)."""
    if not version.isdigit():
        raise ApiError(404, "version_not_found", f"{version!r} is not a version number")
    settings = request.app.state.settings
    card = _registry_call(
        _registry(request).card, version, settings.mlflow_uri, settings.airflow_base_url
    )
    return ModelCardPublic.model_validate(card)


@router.get("/audit", response_model=list[AuditEntryPublic])
def read_audit_log(
    admin: AdminUser,
    session: SessionDep,
    action: str | None = Query(None, max_length=64, description="Only this action."),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=OFFSET_MAX),
) -> list[AuditEntryPublic]:
    """Newest first."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).offset(offset).limit(limit)
    if action:
        query = query.where(AuditEntry.action == action)
    return [
        AuditEntryPublic(
            id=e.id,
            actor_id=e.actor_id,
            action=e.action,
            target=e.target,
            detail=json.loads(e.detail),
            created_at=e.created_at,
        )
        for e in session.exec(query)
    ]
