"""The index step turns a curated corpus into the shared knowledge base "the crawled site":
real pages of the demo website (Debian's python3.11-doc) as the curated corpus, the
packaged embedding model, the LanceDB store. A question about the docs finds its page; a
re-run switches the base to a new collection whole; a run that fails half-way leaves the
published base as it was and no collection behind; the same corpus again does no work."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from orchard.errors import OrchardError
from orchard.knowledge import shared
from orchard.knowledge.embeddings import load_embedder
from orchard.knowledge.files import FileLimits, parse_file
from orchard.knowledge.lance import LanceStore
from orchard.knowledge.shared import SHARED_OWNER, published
from orchard.settings import Settings
from orchard.steps import Manifest, StepContext, StepOutput, run_step
from orchard.storage import Storage
from ray_jobs.index import IndexConfig, corpus_of, index_corpus

DOCS = Path("/usr/share/doc/python3.11/html/library")
SITE = "http://127.0.0.1:8000/library"
PAGES = ("json", "csv", "pathlib", "heapq", "secrets", "textwrap")
PAGE_CHARS = 2500  # each page's opening: the test embeds a few dozen chunks


def page_text(page: str) -> str:
    parsed = parse_file((DOCS / f"{page}.html").read_bytes(), f"{page}.html", FileLimits())
    text = "\n\n".join(
        (f"## {s.heading}\n\n{s.text}" if s.heading else s.text) for s in parsed.sections
    )
    return text[:PAGE_CHARS]


def curated(root: Path, label: str, lines: list[str]) -> Manifest:
    """A finished curate step whose one shard holds `lines` (JSON or broken)."""

    def body(ctx: StepContext) -> StepOutput:
        (ctx.out / "documents").mkdir()
        with gzip.open(ctx.out / "documents" / "00000.jsonl.gz", "wt") as handle:
            handle.writelines(line + "\n" for line in lines)
        return StepOutput()

    from tests.unit.test_mix import FixtureCorpus

    return run_step(
        step="curate", name=label, config=FixtureCorpus(label=label), data_root=root, body=body
    )


def page_lines(pages) -> list[str]:
    return [
        json.dumps({"id": p, "text": page_text(p), "metadata": {"url": f"{SITE}/{p}.html"}})
        for p in pages
    ]


def index(settings: Settings, corpus: Manifest, force: bool = False, **config) -> Manifest:
    """The step as its Ray job runs it (without MLflow)."""
    cfg = IndexConfig(**config)
    return run_step(
        step="index",
        name=cfg.knowledge_base,
        config=cfg,
        data_root=Storage.from_settings(settings),
        inputs=[corpus],
        body=lambda ctx: index_corpus(cfg, Path(corpus_of([corpus]).path), settings, ctx),
        force=force,
    )


def collections(settings: Settings) -> set[str]:
    store = LanceStore(settings.home / "knowledge" / "lancedb")
    return {name for name in store.db.table_names() if name.startswith("shared_")}


def ask(settings: Settings, question: str, k: int = 3) -> list[str]:
    base = published(settings)["crawled-site"]
    embedder = load_embedder()
    store = LanceStore(settings.home / "knowledge" / "lancedb")
    hits = store.search(
        base.collection,
        owner=SHARED_OWNER,
        text=question,
        vector=embedder.embed([question])[0],
        model=embedder.model,
        k=k,
    )
    return [hit.chunk.source for hit in hits]


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    if not DOCS.is_dir():
        pytest.skip(f"no {DOCS}: install Debian's python3.11-doc (make demo-site)")
    home = tmp_path_factory.mktemp("home")
    return Settings(home=home, data_root=str(home / "data"))


def test_the_crawled_site_answers_a_docs_question_and_a_rerun_swaps_it_whole(settings):
    corpus = curated(Path(settings.data_dir), "site", page_lines(PAGES))
    first = index(settings, corpus)
    base = published(settings)["crawled-site"]
    model = load_embedder().model
    assert (base.model, base.documents, base.title) == (model, len(PAGES), "the crawled site")
    assert base.chunks == first.counts["chunks"] > len(PAGES)
    assert first.facts["embedding_dimension"] == "384"
    assert ask(settings, "How do I turn a Python dict into a JSON string?")[0] == (
        f"{SITE}/json.html"
    )

    # The same corpus again: the finished index is reused, nothing new is written.
    assert index(settings, corpus).key == first.key
    assert collections(settings) == {base.collection}

    # A new corpus (the csv page gone): the base moves to a new collection as a whole.
    smaller = curated(Path(settings.data_dir), "site-2", page_lines(p for p in PAGES if p != "csv"))
    index(settings, smaller)
    second = published(settings)["crawled-site"]
    assert second.collection != base.collection and second.documents == len(PAGES) - 1
    hits = ask(settings, "read and write comma-separated values files", k=10)
    assert f"{SITE}/csv.html" not in hits and hits
    # The old collection stays until the next run (a search may still be reading it).
    assert collections(settings) == {base.collection, second.collection}
    index(settings, corpus, force=True)
    third = published(settings)["crawled-site"]
    assert collections(settings) == {second.collection, third.collection}
    assert ask(settings, "read and write comma-separated values files")[0] == f"{SITE}/csv.html"


def test_a_run_that_fails_half_way_publishes_nothing_and_leaves_no_collection(
    settings, monkeypatch
):
    good = curated(Path(settings.data_dir), "good", page_lines(PAGES[:2]))
    index(settings, good, knowledge_base="half-way")
    before = published(settings)["half-way"]
    existing = collections(settings)
    # Chunks are added two at a time, so some are in the new collection when the shard's
    # broken line stops the run.
    monkeypatch.setattr(shared, "EMBED_BATCH", 2)
    broken = curated(Path(settings.data_dir), "broken", [*page_lines(PAGES[2:4]), '{"id": "x", '])
    with pytest.raises(OrchardError, match="00000.jsonl.gz"):
        index(settings, broken, knowledge_base="half-way")
    assert published(settings)["half-way"] == before
    assert collections(settings) == existing


def test_bad_configs_and_inputs_are_refused_clearly(settings):
    with pytest.raises(ValueError, match="lower-case letters"):
        IndexConfig(knowledge_base="../etc")
    with pytest.raises(OrchardError, match="exactly one corpus"):
        corpus_of([])
    corpus = curated(Path(settings.data_dir), "one", page_lines(PAGES[:1]))
    with pytest.raises(OrchardError, match="ORCHARD_EMBEDDING_MODEL"):
        index(settings, corpus, knowledge_base="other-model", embedding_model="some/other-model")


def test_only_the_opening_chunks_of_each_page_when_asked(settings):
    corpus = curated(Path(settings.data_dir), "openings", page_lines(PAGES[:3]))
    done = index(settings, corpus, knowledge_base="openings", max_chunks_per_document=1)
    assert done.counts == {"documents": 3, "chunks": 3}
    assert published(settings)["openings"].chunks == 3
