"""Knowledge for administrators: the chunks whose text reads like instructions to the
model, flagged at ingestion (orchard/knowledge/injection.py), and re-embedding the
knowledge bases after the embedding model changed (platform_api/reembedding.py;
docs/knowledge.md)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlmodel import select

from orchard.knowledge.embeddings import model_name
from platform_api import reembedding
from platform_api.audit import audit
from platform_api.deps import AdminUser, SessionDep
from platform_api.models import KnowledgeFile, KnowledgeFlag, User
from platform_api.schemas import (
    KnowledgeFlagPublic,
    ReEmbedJobPublic,
    ReEmbedStatus,
    StaleKnowledgeBase,
)

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


@router.get("/re-embed", response_model=ReEmbedStatus)
def re_embed_status(request: Request, admin: AdminUser, session: SessionDep) -> ReEmbedStatus:
    """The newest re-embedding job and the bases still embedded with another model."""
    name = model_name(request.app.state.settings.embedding_model)
    job = reembedding.latest_job(session)
    stale = reembedding.stale_bases(session, name)
    return ReEmbedStatus(
        embedding_model=name,
        job=ReEmbedJobPublic.model_validate(job) if job else None,
        stale=[StaleKnowledgeBase.model_validate(base) for base in stale],
    )


@router.post(
    "/re-embed",
    response_model=ReEmbedJobPublic,
    status_code=202,
    responses={200: {"description": "a job is running already: that job"}},
)
async def start_re_embed(
    request: Request, response: Response, admin: AdminUser, session: SessionDep
) -> ReEmbedJobPublic:
    """Re-embed every knowledge base whose vectors are of another model than the
    platform's, in the background (202 with the job; poll `GET`). A job already running
    is answered as it is (200): one runs at a time."""
    job, started = await run_in_threadpool(reembedding.start, request.app.state.knowledge, admin.id)
    if started:
        audit(session, admin, "knowledge.re_embed", job.id, embedding_model=job.embedding_model)
        session.commit()
    else:
        response.status_code = 200
    return ReEmbedJobPublic.model_validate(job)
