"""Shared knowledge bases: documents a pipeline indexes for everyone (the crawled site),
next to the bases users fill with their own uploads.

A shared base is published by the `index` step (ray_jobs/index_corpus.py, run by the
`orchard_index` DAG): each run writes a *new* vector-store collection
(`shared_<slug>_<run>`), embeds every chunk into it, and only then is the step's manifest
published, naming that collection, the embedding model and its dimension. Readers (the
platform API) take the newest finished `index` manifest of a base's slug, so a search
sees either the old collection whole or the new one whole, never one half indexed. A run
that fails drops its own collection; the run after a successful one drops the
collections of the runs before the current one (the current one may still be read).

Chunks of a shared base belong to the owner `SHARED_OWNER`: the store's owner filter
keeps them apart from every user's chunks. Who may search which shared base is the
platform's business (its access rules).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchard.errors import OrchardError
from orchard.knowledge.chunking import MAX_CHARS, OVERLAP, chunk_sections
from orchard.knowledge.embeddings import Embedder, EmbeddingModel
from orchard.knowledge.files import HEADING, Section
from orchard.knowledge.vectors import Chunk, VectorStore, VectorStoreError

if TYPE_CHECKING:
    from orchard.settings import Settings
    from orchard.steps import Manifest

SHARED_OWNER = "shared"
INDEX_STEP = "index"
SLUG = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
CRAWLED_SITE = "crawled-site"  # the demo's base: the curated corpus of the crawl
EMBED_BATCH = 256  # chunks embedded and added at a time


def check_slug(slug: str) -> str:
    if not SLUG.match(slug):
        raise OrchardError(
            f"knowledge base slug {slug!r} must be 1-40 lower-case letters, digits or -, "
            "starting with a letter"
        )
    return slug


@dataclass(frozen=True)
class SharedDocument:
    """One document to index: its text, where it came from (cited), and its title."""

    text: str
    source: str
    title: str = ""


@dataclass(frozen=True)
class SharedBase:
    """A published shared base, as its newest `index` manifest describes it."""

    slug: str
    title: str
    collection: str
    model: EmbeddingModel
    documents: int
    chunks: int
    published_at: str


def sections_of(document: SharedDocument) -> list[Section]:
    """A document's text cut at its Markdown headings (the page title heads the start)."""
    sections, heading, lines = [], document.title, []
    for line in document.text.splitlines():
        match = HEADING.match(line)
        if match:
            sections.append(Section("\n".join(lines).strip(), heading))
            heading, lines = match.group(2), []
        else:
            lines.append(line)
    sections.append(Section("\n".join(lines).strip(), heading))
    return [section for section in sections if section.text]


def _chunks(
    documents: Iterable[SharedDocument], max_chars: int, overlap: int, per_document: int
) -> Iterator[Chunk]:
    for document in documents:
        file_id = hashlib.sha256(document.source.encode()).hexdigest()[:32]
        pieces = chunk_sections(sections_of(document), max_chars, overlap)
        pieces = pieces[:per_document] if per_document else pieces
        for seq, piece in enumerate(pieces):
            yield Chunk(
                id=f"{file_id}-{seq}",
                owner=SHARED_OWNER,
                file_id=file_id,
                seq=seq,
                text=piece.text,
                source=document.source,
                heading=piece.heading,
            )


def _embedding_text(chunk: Chunk) -> str:
    return f"{chunk.heading}\n{chunk.text}" if chunk.heading else chunk.text


def build_collection(
    store: VectorStore,
    embedder: Embedder,
    slug: str,
    documents: Iterable[SharedDocument],
    *,
    max_chars: int = MAX_CHARS,
    overlap: int = OVERLAP,
    max_chunks_per_document: int = 0,
) -> tuple[str, int, int]:
    """Index `documents` into a new collection for `slug`; (its name, documents, chunks).
    With `max_chunks_per_document`, only each document's opening chunks (0: all). On any
    failure the new collection is dropped again and the error raised."""
    name = f"shared_{check_slug(slug).replace('-', '_')}_{uuid.uuid4().hex[:12]}"
    store.create_collection(name, embedder.model)
    sources: set[str] = set()
    count = 0
    try:
        batch: list[Chunk] = []
        for chunk in _chunks(documents, max_chars, overlap, max_chunks_per_document):
            sources.add(chunk.source)
            batch.append(chunk)
            if len(batch) == EMBED_BATCH:
                _add(store, embedder, name, batch)
                count, batch = count + len(batch), []
        _add(store, embedder, name, batch)
        count += len(batch)
        if count == 0:
            raise OrchardError(f"no text to index for the knowledge base {slug!r}")
    except BaseException:
        store.drop_collection(name)
        raise
    return name, len(sources), count


def _add(store: VectorStore, embedder: Embedder, name: str, chunks: list[Chunk]) -> None:
    if chunks:
        vectors = embedder.embed([_embedding_text(c) for c in chunks])
        store.add(name, chunks, vectors, embedder.model)


def base_of(manifest: Manifest) -> SharedBase:
    facts = manifest.facts
    return SharedBase(
        slug=manifest.name,
        title=facts.get("title", manifest.name),
        collection=facts["collection"],
        model=EmbeddingModel(facts["embedding_model"], int(facts["embedding_dimension"])),
        documents=manifest.counts.get("documents", 0),
        chunks=manifest.counts.get("chunks", 0),
        published_at=manifest.created_at,
    )


def published(settings: Settings) -> dict[str, SharedBase]:
    """The current version of every shared base, by slug (the newest `index` output)."""
    from orchard.steps import finished
    from orchard.storage import Storage

    newest: dict[str, Manifest] = {}
    for manifest in finished(Storage.from_settings(settings), INDEX_STEP):
        if "collection" not in manifest.facts:
            continue
        if manifest.name not in newest or manifest.created_at > newest[manifest.name].created_at:
            newest[manifest.name] = manifest
    return {slug: base_of(manifest) for slug, manifest in sorted(newest.items())}


def prune(store: VectorStore, settings: Settings, slug: str, keep: set[str]) -> list[str]:
    """Drop the collections of `slug`'s earlier index runs except those in `keep` (the
    current one and the one being published). Returns the dropped names."""
    from orchard.steps import finished
    from orchard.storage import Storage

    # A forced rebuild replaces its step directory, manifest and all: the collection it
    # replaced is named by the new manifest's `previous_collection`.
    named = {
        manifest.facts.get(fact)
        for manifest in finished(Storage.from_settings(settings), INDEX_STEP, slug)
        for fact in ("collection", "previous_collection")
    }
    dropped = []
    for name in sorted(n for n in named if n and n not in keep):
        try:
            store.drop_collection(name)
        except VectorStoreError:
            continue
        dropped.append(name)
    return dropped
