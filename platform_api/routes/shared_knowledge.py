"""Shared knowledge bases (the crawled site): which ones the caller may search, and
searching them. Administrators decide who may use which (`/admin/knowledge-access`)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from platform_api.deps import ChatsReader, SessionDep
from platform_api.schemas import (
    KnowledgeChunkPublic,
    KnowledgeHit,
    KnowledgeSearch,
    SharedKnowledgeBasePublic,
)
from platform_api.shared_knowledge import search_shared, usable_base, usable_bases

router = APIRouter(prefix="/shared-knowledge", tags=["knowledge"])


def _public(base) -> SharedKnowledgeBasePublic:
    return SharedKnowledgeBasePublic(
        slug=base.slug,
        title=base.title,
        embedding_model=base.model.name,
        embedding_dimension=base.model.dimension,
        documents=base.documents,
        chunks=base.chunks,
        published_at=base.published_at,
    )


@router.get("", response_model=list[SharedKnowledgeBasePublic])
def list_shared_bases(
    user: ChatsReader, session: SessionDep, request: Request
) -> list[SharedKnowledgeBasePublic]:
    """The shared knowledge bases the caller may search."""
    return [_public(b) for b in usable_bases(session, request.app.state.settings, user)]


@router.post("/{slug}/search", response_model=list[KnowledgeHit])
def search_shared_base(
    slug: str, body: KnowledgeSearch, user: ChatsReader, session: SessionDep, request: Request
) -> list[KnowledgeHit]:
    """The best passages of a shared base; a chunk's `source` is its page's URL."""
    base = usable_base(session, request.app.state.settings, user, slug)
    hits = search_shared(request.app.state.knowledge, base, body.query, body.k)
    return [
        KnowledgeHit(score=hit.score, chunk=KnowledgeChunkPublic.model_validate(hit.chunk))
        for hit in hits
    ]
