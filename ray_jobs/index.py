"""The index step: chunk and embed a corpus into a shared knowledge base.

The curated corpus (a mix or curate output) is read document by document; each page is
cut at its headings into overlapping chunks (orchard/knowledge/chunking.py), embedded by
the configured sentence-transformers model (the packaged all-MiniLM-L6-v2 by default) and
added to a new collection of the vector store (LanceDB under `<home>/knowledge/lancedb`,
or Weaviate when `ORCHARD_WEAVIATE_URL` is set). A chunk's source is its page's URL, so
an answer cites the crawled page.

The swap is atomic for readers: the platform API reads the newest finished `index`
manifest of the base, and this manifest, naming the new collection, the embedding model
and its dimension, is published only after every chunk is in (orchard/knowledge/shared.py).
A failed run drops its collection and publishes nothing. The step is content-addressed:
the same corpus, config and embedding model reuse the finished index without any work.

Output:
    report.json    documents, chunks, the collection, the model and how long it took
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from pydantic import Field, field_validator

from orchard.documents import iter_documents
from orchard.errors import OrchardError
from orchard.knowledge.chunking import MAX_CHARS, OVERLAP
from orchard.knowledge.embeddings import load_embedder
from orchard.knowledge.shared import (
    CRAWLED_SITE,
    INDEX_STEP,
    SharedDocument,
    build_collection,
    check_slug,
    prune,
    published,
)
from orchard.knowledge.vectors import open_store
from orchard.settings import Settings
from orchard.steps import Manifest, StepConfig, StepContext, StepOutput, StepSpec
from orchard.storage import is_uri

log = logging.getLogger("orchard.index")

CORPUS_STEPS = ("mix", "curate")
REPORT = "report.json"


class IndexConfig(StepConfig):
    knowledge_base: str = Field(
        CRAWLED_SITE, description="Slug of the shared knowledge base the corpus becomes."
    )
    title: str = Field(
        "the crawled site", max_length=100, description="The base's name as users see it."
    )
    embedding_model: str = Field(
        "",
        description="Name of the embedding model the vectors must come from (the DAG sets "
        "the configured one, so a new model makes a new key); empty: whatever is configured.",
    )
    max_chars: int = Field(MAX_CHARS, ge=200, le=8000, description="Most characters a chunk.")
    overlap: int = Field(OVERLAP, ge=0, le=2000, description="Characters chunks overlap by.")
    max_documents: int = Field(
        0, ge=0, description="Index at most this many documents (0: all of them)."
    )
    max_chunks_per_document: int = Field(
        0,
        ge=0,
        description="Index only the first chunks of each document (0: all): the opening of "
        "a documentation page (what the module is, its main functions) for a fraction of "
        "the embedding time.",
    )

    @field_validator("knowledge_base")
    @classmethod
    def _slug(cls, value: str) -> str:
        try:
            return check_slug(value)
        except OrchardError as error:
            raise ValueError(str(error)) from None


def documents(corpus: Path, limit: int):
    """The corpus as `SharedDocument`s: text, the page URL (or the id) and the title."""
    for count, document in enumerate(iter_documents(corpus)):
        if limit and count >= limit:
            return
        meta = document.metadata
        source = meta.get("url") or f"{corpus.name}#{document.key}"
        yield SharedDocument(text=document.text, source=source, title=meta.get("title") or "")


def index_corpus(config: IndexConfig, corpus: Path, settings: Settings, ctx: StepContext):
    embedder = load_embedder(settings.embedding_model)
    if config.embedding_model and config.embedding_model != embedder.model.name:
        raise OrchardError(
            f"the index was asked for vectors of {config.embedding_model} but this job's "
            f"settings load {embedder.model.name}: give the job the DAG's "
            "ORCHARD_EMBEDDING_MODEL"
        )
    store = open_store(settings)
    try:
        current = published(settings).get(config.knowledge_base)
        started = time.monotonic()
        collection, n_documents, n_chunks = build_collection(
            store,
            embedder,
            config.knowledge_base,
            documents(corpus, config.max_documents),
            max_chars=config.max_chars,
            overlap=config.overlap,
            max_chunks_per_document=config.max_chunks_per_document,
        )
        seconds = time.monotonic() - started
        keep = {collection} | ({current.collection} if current else set())
        dropped = prune(store, settings, config.knowledge_base, keep)
    finally:
        store.close()
    report = {
        "knowledge_base": config.knowledge_base,
        "collection": collection,
        "embedding_model": embedder.model.name,
        "embedding_dimension": embedder.model.dimension,
        "documents": n_documents,
        "chunks": n_chunks,
        "seconds": round(seconds, 2),
        "dropped_collections": dropped,
    }
    (ctx.out / REPORT).write_text(json.dumps(report, indent=2))
    log.info("indexed %d chunks of %d documents in %.1f s", n_chunks, n_documents, seconds)
    facts = {
        "collection": collection,
        "title": config.title,
        "embedding_model": embedder.model.name,
        "embedding_dimension": str(embedder.model.dimension),
    }
    if current is not None:
        facts["previous_collection"] = current.collection
    return StepOutput(
        counts={"documents": n_documents, "chunks": n_chunks},
        metrics={"seconds": seconds, "chunks_per_second": n_chunks / max(seconds, 1e-9)},
        facts=facts,
    )


def corpus_of(inputs: list[Manifest]) -> Manifest:
    corpora = [m for m in inputs if m.step in CORPUS_STEPS]
    if len(corpora) != 1:
        raise OrchardError(
            f"the index step needs exactly one corpus among its --input (a mix or curate "
            f"manifest), got {len(corpora)}: {', '.join(m.step for m in inputs) or 'none'}"
        )
    return corpora[0]


def host_local_vectors_note(settings: Settings) -> str:
    """The one line an index run on an s3:// data root prints when its vectors stay on
    this host (LanceDB): the manifest goes to object storage, the collection does not."""
    return (
        f"note: the index manifest goes to {settings.data_dir}, but its vectors go to LanceDB "
        f"under {settings.home / 'knowledge' / 'lancedb'} on this host only: the platform "
        "must run here, or set ORCHARD_WEAVIATE_URL for a vector store every host reaches"
    )


STEP = StepSpec(INDEX_STEP, IndexConfig, default_name=CRAWLED_SITE, doc=__doc__)


def run(
    config: IndexConfig,
    inputs: list[Manifest],
    settings: Settings,
    name: str | None = None,
    force: bool = False,
) -> Manifest:
    """Index the corpus among `inputs` into the shared base `config.knowledge_base` (the
    step's output is named after the base, whatever `name` says)."""
    corpus = Path(corpus_of(inputs).path)
    if is_uri(settings.data_dir) and not settings.weaviate_url:
        print(host_local_vectors_note(settings), flush=True)
    return STEP.run(
        settings,
        config,
        lambda ctx: index_corpus(config, corpus, settings, ctx),
        inputs,
        config.knowledge_base,
        force,
    )


def main(argv: list[str] | None = None) -> int:
    return STEP.main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
