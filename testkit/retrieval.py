"""A planted retrieval set on the demo corpus (Debian's python3.11-doc, the demo website):
20 questions, each worded unlike the page of the Python documentation that answers it,
and recall@k of a store's search over them. Used by tests/unit/test_knowledge_retrieval.py
(the pages' openings alone) and bench/rag.py (whole pages among others)."""

from __future__ import annotations

from orchard.knowledge.embeddings import Embedder
from orchard.knowledge.vectors import SearchMode, VectorStore

# page (library/<page>.html) -> a question it answers
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


def recall_at(
    store: VectorStore,
    collection: str,
    embedder: Embedder,
    owner: str,
    mode: SearchMode = "hybrid",
    k: int = 5,
) -> float:
    """The share of planted questions whose page (a chunk's `file_id` is the page's name,
    `glob` for glob.html) is among the first `k` hits."""
    vectors = embedder.embed(list(PLANTED.values()))
    found = 0
    for (page, question), vector in zip(PLANTED.items(), vectors, strict=True):
        hits = store.search(collection, owner=owner, text=question, vector=vector,
                            model=embedder.model, k=k, mode=mode)  # fmt: skip
        found += page in {hit.chunk.file_id for hit in hits}
    return found / len(PLANTED)
