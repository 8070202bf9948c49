"""Retrieval quality on the demo corpus: 20 questions planted on 20 pages of the Python
documentation (Debian's python3.11-doc, the demo website), asked in other words than the
pages use (testkit/retrieval.py). The opening chunks of the pages go through the whole
ingestion path (HTML parsing, chunking, the packaged embedding model, the LanceDB store)
and each question must find its page among the first five hits of a hybrid search:
recall@5 >= 0.9 (the figure is printed)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from orchard.knowledge.chunking import chunk_sections
from orchard.knowledge.embeddings import load_embedder
from orchard.knowledge.files import FileLimits, parse_file
from orchard.knowledge.lance import LanceStore
from orchard.knowledge.vectors import Chunk
from testkit.retrieval import PLANTED, recall_at

CHUNKS_PER_PAGE = 4  # each page's opening: 80 passages, embedded in seconds on 2 cores
DOCS = Path("/usr/share/doc/python3.11/html/library")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    if not DOCS.is_dir():
        pytest.skip(f"no {DOCS}: install Debian's python3.11-doc (make demo-site)")
    embedder = load_embedder()
    store = LanceStore(tmp_path_factory.mktemp("lancedb"))
    collection = "kb_python_docs"
    store.create_collection(collection, embedder.model)
    for page in PLANTED:
        parsed = parse_file((DOCS / f"{page}.html").read_bytes(), f"{page}.html", FileLimits())
        pieces = chunk_sections(parsed.sections)[:CHUNKS_PER_PAGE]
        chunks = [
            Chunk(uuid.uuid4().hex, "demo", page, i, p.text, f"{page}.html", p.page, p.heading)
            for i, p in enumerate(pieces)
        ]
        vectors = embedder.embed([p.embedding_text for p in pieces])
        store.add(collection, chunks, vectors, embedder.model)
    return store, collection, embedder


def test_planted_questions_find_their_page(indexed, capsys):
    store, collection, embedder = indexed
    figures = {
        mode: recall_at(store, collection, embedder, "demo", mode)
        for mode in ("hybrid", "vector", "keyword")
    }
    with capsys.disabled():
        print(
            f"\nrecall@5 on {len(PLANTED)} planted questions (python3.11-doc, LanceDB): "
            + ", ".join(f"{mode} {value:.2f}" for mode, value in figures.items())
        )
    assert figures["hybrid"] >= 0.9
