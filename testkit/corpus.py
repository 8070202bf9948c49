"""Synthetic documents for curation tests and benchmarks: readable English prose that
passes the quality filters, with planted duplicates, near-duplicates, PII and other
languages. Deterministic for a seed; no download, no model."""

from __future__ import annotations

import random
from dataclasses import dataclass

ADJECTIVES = (
    "quiet ancient bright careful distant early gentle hidden honest large modern narrow "
    "patient proud rapid rural silent simple steady strange sturdy sudden useful warm wild "
    "wooden yellow busy clever curious eager fresh golden heavy humble lively loyal"
).split()
NOUNS = (
    "river garden library teacher village engine bridge market harbor orchard window "
    "lantern farmer student mountain kitchen letter island station painter valley forest "
    "doctor museum journey theater captain festival meadow workshop pilot tower castle "
    "ribbon compass blanket violin canyon glacier desert"
).split()
VERBS = (
    "watches follows repairs describes visits guards measures crosses paints remembers "
    "carries explores protects studies collects builds opens finds reaches welcomes"
).split()
CONNECTORS = (
    "Later that day,",
    "In the morning,",
    "Every autumn,",
    "According to the records,",
    "For many years,",
    "After the storm,",
    "By the evening,",
    "As the story goes,",
)
FRENCH = (
    "Le matin, les habitants du village marchent vers le marché pour acheter du pain frais "
    "et des légumes. Ils parlent du temps qu'il fait et des nouvelles de la semaine. "
)
GERMAN = (
    "Am Morgen gehen die Bewohner des Dorfes zum Markt, um frisches Brot und Gemüse zu "
    "kaufen. Sie sprechen über das Wetter und die Neuigkeiten der Woche. "
)


def sentence(rng: random.Random) -> str:
    a, b = rng.sample(ADJECTIVES, 2)
    n1, n2, n3 = rng.sample(NOUNS, 3)
    lead = rng.choice(CONNECTORS) + " the" if rng.random() < 0.3 else "The"
    tail = rng.choice(("with the", "and then the", "to the edge of the", "that faces the"))
    return f"{lead} {a} {n1} {rng.choice(VERBS)} the {b} {n2} {tail} {n3}."


def paragraph(rng: random.Random, sentences: int = 5) -> str:
    return " ".join(sentence(rng) for _ in range(sentences))


def article(rng: random.Random, paragraphs: int = 4) -> str:
    """About 200 words in a few paragraphs, each line ending with punctuation."""
    return "\n\n".join(paragraph(rng) for _ in range(paragraphs))


def near_duplicate(text: str, rng: random.Random, edits: int = 3) -> str:
    """The same article with a few words replaced: Jaccard similarity stays around 0.9."""
    words = text.split(" ")
    for index in rng.sample(range(len(words)), edits):
        if words[index].isalpha():
            words[index] = rng.choice(NOUNS)
    return " ".join(words)


def foreign(rng: random.Random, language: str) -> str:
    base = FRENCH if language == "fr" else GERMAN
    return "\n\n".join(base * 3 for _ in range(3))


@dataclass
class PlantedCorpus:
    """Documents by id, and which ids a correct curation drops and keeps."""

    documents: dict[str, str]
    distinct: set[str]
    near_duplicates: dict[str, str]  # planted copy id -> original id
    exact_duplicates: dict[str, str]
    foreign: set[str]
    with_pii: set[str]


def planted_corpus(
    distinct: int = 40, near: int = 10, exact: int = 5, foreign_docs: int = 4, seed: int = 0
) -> PlantedCorpus:
    rng = random.Random(seed)
    docs: dict[str, str] = {}
    for i in range(distinct):
        docs[f"doc-{i:04d}"] = article(rng)
    originals = sorted(docs)
    near_map = {}
    for i, original in enumerate(rng.sample(originals, near)):
        near_map[f"near-{i:04d}"] = original
        docs[f"near-{i:04d}"] = near_duplicate(docs[original], rng)
    exact_map = {}
    for i, original in enumerate(rng.sample(originals, exact)):
        exact_map[f"exact-{i:04d}"] = original
        docs[f"exact-{i:04d}"] = docs[original]
    foreign_ids = set()
    for i in range(foreign_docs):
        doc_id = f"foreign-{i:04d}"
        docs[doc_id] = foreign(rng, "fr" if i % 2 == 0 else "de")
        foreign_ids.add(doc_id)
    pii = set()
    for original in rng.sample([d for d in originals if d not in near_map.values()], 3):
        docs[original] += (
            "\n\nWrite to jane.doe@example-corp.com or call +1 415-555-0132 for the schedule. "
            "The archive server at 93.184.216.34 keeps the old records."
        )
        pii.add(original)
    return PlantedCorpus(docs, set(originals), near_map, exact_map, foreign_ids, pii)


SITE_PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title></head><body>
<nav><a href="index.html">Home</a> | <a href="about.html">About</a></nav>
<main><h1>{title}</h1>
{paragraphs}
</main>
<footer>Copyright 2026 The Fixture Site. All rights reserved.</footer>
</body></html>
"""


def write_site(root, corpus: PlantedCorpus) -> dict[str, str]:
    """A static website of the planted corpus: one page per document, an index linking
    them all, and a robots.txt that disallows /private/. Returns page path -> doc id."""
    from html import escape
    from pathlib import Path

    root = Path(root)
    (root / "private").mkdir(parents=True, exist_ok=True)
    pages = {}
    for doc_id, text in sorted(corpus.documents.items()):
        name = f"{doc_id}.html"
        lang = "en" if doc_id not in corpus.foreign else "fr"
        paragraphs = "\n".join(f"<p>{escape(p)}</p>" for p in text.split("\n\n"))
        (root / name).write_text(SITE_PAGE.format(lang=lang, title=doc_id, paragraphs=paragraphs))
        pages[name] = doc_id
    secret = "The private ledger lists every payment. " * 30
    (root / "private" / "ledger.html").write_text(
        SITE_PAGE.format(lang="en", title="ledger", paragraphs=f"<p>{secret}</p>")
    )
    links = "\n".join(f'<li><a href="{name}">{name}</a></li>' for name in pages)
    links += '\n<li><a href="private/ledger.html">ledger</a></li>'
    (root / "index.html").write_text(
        SITE_PAGE.format(lang="en", title="Fixture site", paragraphs=f"<ul>{links}</ul>")
    )
    (root / "robots.txt").write_text("User-agent: *\nDisallow: /private/\n")
    return pages


def corpus_step(data_root, documents: int = 120, seed: int = 0):
    """A finished `mix`-step output of `documents` prose articles under `data_root`, as the
    model steps (tokenizer, tokenize, pretrain) find the curated corpus."""
    import gzip
    import json

    from orchard.steps import StepConfig, StepOutput, run_step

    class FixtureCorpus(StepConfig):
        documents: int
        seed: int

    def body(ctx) -> StepOutput:
        rng = random.Random(seed)
        (ctx.out / "documents").mkdir()
        with gzip.open(ctx.out / "documents" / "00000.jsonl.gz", "wt") as handle:
            for i in range(documents):
                doc = {"text": article(rng), "id": f"doc-{i}", "metadata": {"category": "web"}}
                handle.write(json.dumps(doc) + "\n")
        return StepOutput(counts={"documents": documents})

    config = FixtureCorpus(documents=documents, seed=seed)
    return run_step(step="mix", name="fixture", config=config, data_root=data_root, body=body)
