"""Retrieval quality on the demo corpus: 20 questions planted on 20 pages of the Python
documentation (Debian's python3.11-doc, the demo website), asked in other words than the
pages use. The opening chunks of the pages go through the whole ingestion path (HTML
parsing, chunking, the packaged embedding model, the LanceDB store) and each question
must find its page among the first five hits of a hybrid search: recall@5 >= 0.9 (the
figure is printed)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from orchard.knowledge.chunking import chunk_sections
from orchard.knowledge.embeddings import load_embedder
from orchard.knowledge.files import FileLimits, parse_file
from orchard.knowledge.lance import LanceStore
from orchard.knowledge.vectors import Chunk

CHUNKS_PER_PAGE = 4  # each page's opening: 80 passages, embedded in seconds on 2 cores
DOCS = Path("/usr/share/doc/python3.11/html/library")
PLANTED = {
    "glob": "find every file path that matches a wildcard such as *.txt",
    "fnmatch": "does this file name match a Unix shell-style pattern",
    "secrets": "make a hard-to-guess token for a password reset link",
    "uuid": "create a universally unique identifier from random bits",
    "bisect": "insert into a list that is already sorted and keep it in order",
    "heapq": "priority queue where I always pop the smallest item",
    "textwrap": "break a long paragraph into lines of at most 70 characters",
    "getpass": "ask the user for their password without showing what they type",
    "sched": "run events at given times with a general-purpose event scheduler",
    "queue": "hand work items from one thread to another safely",
    "contextvars": "state that is local to an asyncio task instead of a thread",
    "graphlib": "order the nodes of a dependency graph so each comes after its dependencies",
    "webbrowser": "show a web page to the user in their browser from a script",
    "wave": "read the frames of a WAV sound file",
    "colorsys": "convert a colour from RGB to HSV",
    "calendar": "is a given year a leap year",
    "gzip": "compress a file the way the gzip program does",
    "base64": "turn binary data into printable ASCII text and back",
    "zlib": "compute a CRC-32 checksum",
    "timeit": "measure how long a small piece of code takes to run",
}


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


def recall_at_5(indexed, mode: str) -> float:
    store, collection, embedder = indexed
    vectors = embedder.embed(list(PLANTED.values()))
    found = 0
    for (page, question), vector in zip(PLANTED.items(), vectors, strict=True):
        hits = store.search(collection, owner="demo", text=question, vector=vector,
                            model=embedder.model, k=5, mode=mode)  # fmt: skip
        found += page in {hit.chunk.file_id for hit in hits}
    return found / len(PLANTED)


def test_planted_questions_find_their_page(indexed, capsys):
    figures = {mode: recall_at_5(indexed, mode) for mode in ("hybrid", "vector", "keyword")}
    with capsys.disabled():
        print(
            f"\nrecall@5 on {len(PLANTED)} planted questions (python3.11-doc, LanceDB): "
            + ", ".join(f"{mode} {value:.2f}" for mode, value in figures.items())
        )
    assert figures["hybrid"] >= 0.9
