"""Administrators: the platform API's recent errors (the ERROR log records this process
kept in memory, `observability.recent_errors`), to find what failed behind a request id a
user reports without reading the log files."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Query

from platform_api.deps import AdminUser
from platform_api.observability import RECENT_ERRORS_MAX, recent_errors
from platform_api.schemas import RecentError

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/errors", response_model=list[RecentError])
def read_recent_errors(
    admin: AdminUser, limit: int = Query(50, ge=1, le=RECENT_ERRORS_MAX)
) -> list[RecentError]:
    """Newest first; this API process's last errors (each process keeps its own)."""
    return [RecentError(**asdict(record)) for record in recent_errors.newest(limit)]
