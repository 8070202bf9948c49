"""Vector stores behind one interface: chunks with their vectors, per collection.

A collection holds one knowledge base. It is created for one `EmbeddingModel` and
remembers it; adding or searching with vectors of another model raises
`EmbeddingMismatch` instead of mixing them; `embed_into` embeds a collection's chunks
again into a new collection for the new model (the platform then switches to it), and
`re_embed` rebuilds one in place. Every chunk has an `owner` (a user id) and every read
and delete names one: a store never returns another owner's chunk, whatever the ids a
caller passes.

Two stores: `LanceStore` (embedded, a directory, the default; lance.py) and
`WeaviateStore` (a Weaviate server, weaviate_store.py); `open_store(settings)` picks one.
Search is hybrid by default: BM25 over the text fused with vector similarity (reciprocal
rank fusion in LanceDB, Weaviate's relative-score fusion), or `mode="vector"` / `"keyword"`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from orchard.errors import OrchardError
from orchard.knowledge.embeddings import Embedder, EmbeddingModel

if TYPE_CHECKING:
    from orchard.settings import Settings

SearchMode = Literal["hybrid", "vector", "keyword"]
COLLECTION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class VectorStoreError(OrchardError, RuntimeError):
    """The vector store refused or failed an operation; the message says why."""


class EmbeddingMismatch(VectorStoreError):
    """Vectors of one embedding model meet a collection embedded with another."""


@dataclass(frozen=True)
class Chunk:
    """One passage of a file, as stored (its vector travels beside it)."""

    id: str
    owner: str
    file_id: str
    seq: int  # position in its file
    text: str
    source: str  # the file's name, for citations
    page: int | None = None  # 1-based, where the format has pages
    heading: str = ""


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float  # higher is better; comparable only within one search


class VectorStore(Protocol):
    """What every store does. Collection names match `COLLECTION_NAME`; owner and file
    ids match `ID` (`check_id`)."""

    def create_collection(self, name: str, model: EmbeddingModel) -> None:
        """Make an empty collection for `model`'s vectors (no-op if it exists for `model`;
        `EmbeddingMismatch` if it exists for another)."""

    def collection_model(self, name: str) -> EmbeddingModel | None:
        """The model a collection was made for; None when there is no such collection."""

    def add(
        self, name: str, chunks: Sequence[Chunk], vectors: np.ndarray, model: EmbeddingModel
    ) -> None:
        """Store `chunks` with their `vectors` (row i belongs to chunk i), in one batch."""

    def search(
        self,
        name: str,
        *,
        owner: str,
        text: str,
        vector: np.ndarray,
        model: EmbeddingModel,
        k: int = 5,
        mode: SearchMode = "hybrid",
        file_ids: Sequence[str] | None = None,
    ) -> list[Hit]:
        """The `k` best chunks of `owner` (within `file_ids` if given) for the query."""

    def chunks(self, name: str, *, owner: str, file_id: str | None = None) -> list[Chunk]:
        """`owner`'s chunks (of one file), in file order."""

    def vectors(self, name: str, *, owner: str) -> dict[str, list[float]]:
        """`owner`'s vectors by chunk id (for a privacy export)."""

    def delete(self, name: str, *, owner: str, file_id: str | None = None) -> None:
        """Delete `owner`'s chunks (of one file)."""

    def drop_collection(self, name: str) -> None:
        """Delete the collection and everything in it (no-op if absent)."""

    def all_chunks(self, name: str) -> list[Chunk]:
        """Every chunk of every owner (for re-embedding)."""

    def close(self) -> None: ...


def check_collection(name: str) -> str:
    if not COLLECTION_NAME.match(name):
        raise VectorStoreError(
            f"collection name {name!r} must be 1-63 lower-case letters, digits or _, "
            "starting with a letter"
        )
    return name


def check_id(value: str, what: str = "id") -> str:
    if not ID.match(value):
        raise VectorStoreError(f"{what} {value!r} must be 1-64 letters, digits, - or _")
    return value


def check_model(name: str, stored: EmbeddingModel | None, model: EmbeddingModel) -> None:
    if stored is None:
        raise VectorStoreError(f"no collection {name!r}: create it first")
    if stored != model:
        raise EmbeddingMismatch(
            f"collection {name!r} holds vectors of {stored.name} ({stored.dimension} "
            f"dimensions), not of {model.name} ({model.dimension}): re-embed it with "
            "orchard.knowledge.vectors.re_embed before using the new model"
        )


def check_vectors(chunks: Sequence[Chunk], vectors: np.ndarray, model: EmbeddingModel) -> None:
    if vectors.shape != (len(chunks), model.dimension):
        raise VectorStoreError(
            f"{len(chunks)} chunks need {len(chunks)} vectors of {model.dimension} "
            f"dimensions, got an array of shape {vectors.shape}"
        )


def search_mode(text: str, mode: SearchMode, file_ids: Sequence[str] | None) -> SearchMode | None:
    """The mode a search runs in, the same in every store; None when it can find nothing:
    an empty `file_ids` (searching within no file), or a keyword search without a word.
    With no word to match, a hybrid search is a vector search."""
    if file_ids is not None and not file_ids:
        return None
    if text.strip():
        return mode
    return None if mode == "keyword" else "vector"


def embedding_text(chunk: Chunk) -> str:
    """What a chunk's vector is made from: its heading gives a passage its topic (the
    same text `chunking.Piece.embedding_text` gives at ingestion)."""
    return f"{chunk.heading}\n{chunk.text}" if chunk.heading else chunk.text


def embed_into(
    store: VectorStore,
    source: str,
    target: str,
    embedder: Embedder,
    batch: int = 256,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Every chunk of collection `source`, embedded again with `embedder`'s model, into
    collection `target`, made afresh (a `target` left by an interrupted run is dropped
    first); `source` is only read. `progress(n)` after each batch of n chunks. Returns the
    number of chunks."""
    chunks = store.all_chunks(source)
    store.drop_collection(target)
    store.create_collection(target, embedder.model)
    for start in range(0, len(chunks), batch):
        part = chunks[start : start + batch]
        store.add(target, part, embedder.embed([embedding_text(c) for c in part]), embedder.model)
        if progress is not None:
            progress(len(part))
    return len(chunks)


def re_embed(store: VectorStore, name: str, embedder: Embedder, batch: int = 256) -> int:
    """Rebuild collection `name` with `embedder`'s model in place: every chunk is embedded
    again (before anything is changed, so a failure leaves the old collection whole), then
    the collection is replaced. Returns the number of chunks. (The platform re-embeds
    beside the old collection instead, `embed_into`, and switches when done.)"""
    chunks = store.all_chunks(name)
    vectors = embedder.embed([embedding_text(chunk) for chunk in chunks])
    store.drop_collection(name)
    store.create_collection(name, embedder.model)
    for start in range(0, len(chunks), batch):
        part = chunks[start : start + batch]
        store.add(name, part, vectors[start : start + batch], embedder.model)
    return len(chunks)


def open_store(settings: Settings) -> VectorStore:
    """Weaviate when `weaviate_url` is set, else LanceDB under `<home>/knowledge/lancedb`."""
    if settings.weaviate_url:
        from orchard.knowledge.weaviate_store import WeaviateStore

        key = settings.weaviate_api_key.get_secret_value() if settings.weaviate_api_key else None
        return WeaviateStore.connect(
            settings.weaviate_url, grpc_port=settings.weaviate_grpc_port, api_key=key
        )
    from orchard.knowledge.lance import LanceStore

    return LanceStore(settings.home / "knowledge" / "lancedb")
