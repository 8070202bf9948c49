"""Shared knowledge bases on the platform: the ones pipelines publish for everyone (the
`orchard_index` DAG's "the crawled site"), as the access rules let each user search them.

What is published is read from the newest `index` step manifests (orchard/knowledge/
shared.py): a re-index switches every reader to the new collection at once. A base the
user may not use answers 404, like one that does not exist.
"""

from __future__ import annotations

from sqlmodel import Session

from orchard.knowledge.shared import SHARED_OWNER, SharedBase, published
from orchard.knowledge.vectors import Hit
from orchard.settings import Settings
from platform_api.access import knowledge_bases_for
from platform_api.errors import ApiError, not_found
from platform_api.knowledge import Knowledge
from platform_api.models import User


def usable_bases(session: Session, settings: Settings, user: User) -> list[SharedBase]:
    bases = published(settings)
    return [bases[slug] for slug in knowledge_bases_for(session, user, list(bases))]


def usable_base(session: Session, settings: Settings, user: User, slug: str) -> SharedBase:
    for base in usable_bases(session, settings, user):
        if base.slug == slug:
            return base
    raise not_found("knowledge base")


def search_shared(knowledge: Knowledge, base: SharedBase, query: str, k: int) -> list[Hit]:
    """The best chunks of a shared base for `query` (hybrid BM25 + vector)."""
    embedder = knowledge.embedder
    if base.model != embedder.model:
        raise ApiError(
            409,
            "embedding_model_changed",
            f"the knowledge base {base.title!r} holds vectors of {base.model.name} and the "
            f"platform embeds with {embedder.model.name}: run the orchard_index DAG again",
        )
    return knowledge.store.search(
        base.collection,
        owner=SHARED_OWNER,
        text=query,
        vector=embedder.embed([query])[0],
        model=embedder.model,
        k=k,
    )
