"""The contract every vector store keeps, run against each store available: LanceDB (the
embedded default) always, Weaviate when ORCHARD_WEAVIATE_URL names a server (none runs on
Orchard's build machine: docs/knowledge.md says what ran). Real embeddings throughout
(the packaged all-MiniLM-L6-v2, loaded once per process)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from orchard.knowledge.embeddings import Embedder, EmbeddingModel, load_embedder
from orchard.knowledge.vectors import (
    Chunk,
    EmbeddingMismatch,
    VectorStoreError,
    re_embed,
)

PASSAGES = {
    "pdf": [
        "The json module encodes Python objects as JSON text with json.dumps.",
        "Use pathlib.Path.read_text to read a whole text file into a string.",
        "asyncio.gather runs several coroutines concurrently and collects their results.",
    ],
    "notes": [
        "Sourdough bread needs a starter, flour, water and salt.",
        "The 1998 championship was won after a penalty shoot-out.",
    ],
}


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder()


@pytest.fixture(params=["lancedb", "weaviate"])
def store(request, tmp_path):
    if request.param == "lancedb":
        from orchard.knowledge.lance import LanceStore

        yield LanceStore(tmp_path / "lancedb")
        return
    url = os.environ.get("ORCHARD_WEAVIATE_URL")
    if not url:
        pytest.skip("no Weaviate server: set ORCHARD_WEAVIATE_URL to run the contract on one")
    from orchard.knowledge.weaviate_store import WeaviateStore

    port = int(os.environ.get("ORCHARD_WEAVIATE_GRPC_PORT", "50051"))
    weaviate = WeaviateStore.connect(url, grpc_port=port)
    yield weaviate
    weaviate.close()


@pytest.fixture
def collection() -> str:
    return f"kb_{uuid.uuid4().hex[:12]}"


def chunks_of(owner: str, file_id: str, texts: list[str], source: str) -> list[Chunk]:
    return [
        Chunk(
            id=uuid.uuid4().hex,
            owner=owner,
            file_id=file_id,
            seq=i,
            text=text,
            source=source,
            page=i + 1,
            heading=f"Part {i + 1}",
        )
        for i, text in enumerate(texts)
    ]


def fill(store, embedder, collection, owner="alice", file_id="f1", key="pdf") -> list[Chunk]:
    chunks = chunks_of(owner, file_id, PASSAGES[key], f"{key}.txt")
    store.create_collection(collection, embedder.model)
    store.add(collection, chunks, embedder.embed([c.text for c in chunks]), embedder.model)
    return chunks


def search(store, embedder, collection, query, **kwargs):
    return store.search(
        collection,
        text=query,
        vector=embedder.embed([query])[0],
        model=embedder.model,
        **{"owner": "alice", **kwargs},
    )


@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
def test_each_search_mode_finds_the_passage(store, embedder, collection, mode):
    chunks = fill(store, embedder, collection)
    fill(store, embedder, collection, file_id="f2", key="notes")
    query = {"keyword": "coroutines concurrently", "vector": "run tasks at the same time"}
    hits = search(store, embedder, collection, query.get(mode, "serialize objects to JSON"),
                  k=2, mode=mode)  # fmt: skip
    expected = chunks[2] if mode in query else chunks[0]
    assert hits and hits[0].chunk == expected
    assert len(hits) <= 2 and hits[0].score >= hits[-1].score


def test_an_owner_never_sees_another_owners_chunks(store, embedder, collection):
    fill(store, embedder, collection, owner="alice", file_id="f1")
    bobs = fill(store, embedder, collection, owner="bob", file_id="f2", key="notes")
    hits = search(store, embedder, collection, "JSON encoding in Python", owner="bob", k=10)
    assert {hit.chunk.id for hit in hits} <= {c.id for c in bobs}
    # Bob names Alice's file: still nothing of hers.
    assert search(store, embedder, collection, "json", owner="bob", file_ids=["f1"]) == []
    assert store.chunks(collection, owner="bob", file_id="f1") == []
    store.delete(collection, owner="bob", file_id="f1")  # deletes nothing of Alice's
    assert len(store.chunks(collection, owner="alice")) == 3
    assert set(store.vectors(collection, owner="bob")) == {c.id for c in bobs}


def test_delete_removes_one_files_chunks(store, embedder, collection):
    fill(store, embedder, collection, file_id="f1")
    kept = fill(store, embedder, collection, file_id="f2", key="notes")
    store.delete(collection, owner="alice", file_id="f1")
    assert store.chunks(collection, owner="alice") == kept
    hits = search(store, embedder, collection, "json.dumps", k=10)
    assert {h.chunk.file_id for h in hits} == {"f2"}
    assert search(store, embedder, collection, "bread", file_ids=["f2"], k=1)[0].chunk == kept[0]
    store.drop_collection(collection)
    assert store.collection_model(collection) is None


def test_ids_that_could_rewrite_a_filter_are_refused(store, embedder, collection):
    fill(store, embedder, collection)
    with pytest.raises(VectorStoreError, match="owner"):
        search(store, embedder, collection, "json", owner="x' OR owner != 'x")
    with pytest.raises(VectorStoreError, match="collection name"):
        store.collection_model("Robert'); DROP TABLE students;--")


@pytest.fixture(scope="module")
def other_embedder(tmp_path_factory) -> Embedder:
    """The same weights under another directory name: to Orchard, another model."""
    directory = tmp_path_factory.mktemp("models") / "minilm-copy"
    directory.mkdir()
    for item in load_embedder().directory.iterdir():
        (directory / item.name).symlink_to(item)
    return Embedder(directory)


def test_vectors_of_two_models_never_mix(store, embedder, other_embedder, collection):
    chunks = fill(store, embedder, collection)
    other = other_embedder.model
    assert other.name == "minilm-copy" and other != embedder.model
    with pytest.raises(EmbeddingMismatch, match="re-embed"):
        store.search(collection, owner="alice", text="json", vector=np.zeros(384), model=other)
    with pytest.raises(EmbeddingMismatch):
        store.add(collection, chunks[:1], other_embedder.embed(["x"]), other)
    with pytest.raises(EmbeddingMismatch):
        store.create_collection(collection, EmbeddingModel("bigger", 768))

    assert re_embed(store, collection, other_embedder) == 3
    assert store.collection_model(collection) == other
    hits = search(store, other_embedder, collection, "serialize objects to JSON", k=1)
    assert hits[0].chunk == chunks[0]
    with pytest.raises(EmbeddingMismatch):
        search(store, embedder, collection, "json")


def test_vectors_must_match_the_chunks(store, embedder, collection):
    store.create_collection(collection, embedder.model)
    chunks = chunks_of("alice", "f1", ["one", "two"], "a.txt")
    with pytest.raises(VectorStoreError, match="2 vectors of 384"):
        store.add(collection, chunks, embedder.embed(["one"]), embedder.model)
    with pytest.raises(VectorStoreError, match="create it first"):
        store.add("kb_missing", chunks, embedder.embed(["one", "two"]), embedder.model)


def test_the_default_store_is_embedded(clean_env):
    from orchard.knowledge.lance import LanceStore
    from orchard.knowledge.vectors import open_store
    from orchard.settings import load_settings

    settings = load_settings()
    store = open_store(settings)
    assert isinstance(store, LanceStore)
    assert Path(store.root) == settings.home / "knowledge" / "lancedb"
