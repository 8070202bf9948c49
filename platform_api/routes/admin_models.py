"""Administrators: the model registry (versions with eval metrics and lineage, promote a
version to champion, roll back) and the audit log."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from fastapi import APIRouter, Query, Request
from sqlmodel import select

from platform_api.audit import audit
from platform_api.deps import AdminUser, SessionDep
from platform_api.errors import ApiError
from platform_api.models import AuditEntry
from platform_api.registry import Registry, RegistryError, RegistryUnavailable, VersionNotFound
from platform_api.schemas import (
    OFFSET_MAX,
    AuditEntryPublic,
    ModelRegistryPublic,
    ModelVersionPublic,
    Promotion,
    PromotionResult,
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
