"""Knowledge for administrators: the chunks whose text reads like instructions to the
model, flagged at ingestion (orchard/knowledge/injection.py, docs/knowledge.md)."""

from __future__ import annotations

from fastapi import APIRouter, Query
from sqlmodel import select

from platform_api.deps import AdminUser, SessionDep
from platform_api.models import KnowledgeFile, KnowledgeFlag, User
from platform_api.schemas import KnowledgeFlagPublic

router = APIRouter(prefix="/admin/knowledge", tags=["admin"])


@router.get("/flags", response_model=list[KnowledgeFlagPublic])
def list_knowledge_flags(
    admin: AdminUser, session: SessionDep, limit: int = Query(100, ge=1, le=500)
) -> list[KnowledgeFlagPublic]:
    """The newest flagged chunks, with who uploaded them and from which file."""
    rows = session.exec(
        select(KnowledgeFlag, User.email, KnowledgeFile.filename)
        .join(User, User.id == KnowledgeFlag.user_id)
        .join(KnowledgeFile, KnowledgeFile.id == KnowledgeFlag.file_id)
        .order_by(KnowledgeFlag.created_at.desc())
        .limit(limit)
    )
    return [
        KnowledgeFlagPublic.model_validate(flag).model_copy(
            update={"user_email": email, "filename": filename}
        )
        for flag, email, filename in rows
    ]
