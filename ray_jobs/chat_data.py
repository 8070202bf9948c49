"""The chat_data step: instruction and preference data grounded in the curated corpus.

Inputs: one or more `curate` manifests (required) and at most one model (any step with an
`hf/` directory, e.g. `pretrain`) whose own greedy answers become hard negatives.

Entries. The raw HTML behind the curated documents is found by following each curate
manifest's inputs back to the crawl/import outputs (`*.warc.gz`); only pages whose URL
survived curation are parsed. Every entry has a reference answer in the page's own words
(PII replaced as curate does, Sphinx "¶" permalinks removed):
- a Sphinx object (`<dl class="py function|class|method|...">`, also the C domain): `dt[id]`
  is its qualified name, `dt`'s text its signature, the first paragraph(s) of its `dd`
  (at most `answer_chars`, cut at a sentence end) its answer; it is asked what it does,
  its signature (callables) and which module provides it;
- a section (an h1/h2/h3 and the paragraphs that follow it, also on non-Sphinx pages):
  "What does the <module/page> documentation say about <heading>?";
- a document without HTML (or whose HTML gives no entry): its title line and first
  paragraph, when it has them.
Question templates are picked by a seeded hash; a question asked twice is kept once.

Splits. Entries (not questions) are held out by a seeded hash (`heldout_fraction`, at
least one entry when there are two or more): every question of a held-out entry is held
out, and no held-out entry reaches a training file, not even as another row's negative.
Refusals of `orchard.safety.TRAIN` and uploaded conversations (`uploads`, JSONL rows
`{"messages": [{"role", "content"}, ...]}`) are training data only.

Decontamination. Every training row (SFT and preference, uploads included) that shares a
13-gram with an evaluation task built from the held-out rows (`orchard.eval_tasks`:
their questions and answers, the signature choices, the safety prompts) is removed
(`orchard.decontamination`); the counts are `decontamination.{sft,preference}.{checked,
removed}` and `decontamination.json` lists the removed ids.

Outputs (rows in a fixed order: the same inputs give byte-identical files):
- `sft/train.jsonl`, `sft/heldout.jsonl`: `{"id", "messages", "source", "entry", "kind"}`
  (`kind`: the question kind, e.g. `describe`, `signature`, `module`, `section`);
- `preference/train.jsonl`, `preference/heldout.jsonl`: TRL's conversational preference
  format `{"id", "prompt", "chosen", "rejected", "negative"}`, the negative being another
  answer from the same module/page (`same_module`), the answer cut short (`truncated`)
  or the base model's own greedy answer (`base_sample`, when a model is an input);
- `data_docs/sft/`, `data_docs/preference/` and `validation.json`: the Great Expectations
  suites both sets must pass (a failure fails the step and keeps the report under
  `<data_root>/chat_data/failed-<key>/`).

    python -m ray_jobs.chat_data --config '{"uploads": ["extra.jsonl"]}' \\
        --input curate/manifest.json [--input pretrain/manifest.json]
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd
from pydantic import Field, model_validator

from model.sampling import greedy_answers
from orchard.chat_checks import (
    NEGATIVES,
    SPLITS,
    preference_frame,
    preference_rules,
    read_uploads,
    sft_frame,
    sft_rules,
    uploads_sha256,
)
from orchard.decontamination import EvalNgrams, decontaminate, messages_text, preference_text
from orchard.documents import DOCUMENTS, document_shards, iter_documents
from orchard.errors import OrchardError
from orchard.eval_tasks import eval_texts, task_docs
from orchard.expectations import failure_message, keep_report, run_suite
from orchard.page_entries import (
    Cleaner,
    Entry,
    first_sentence,
    parse_page,
    quote_title,
    raw_html,
    text_entry,
)
from orchard.settings import Settings
from orchard.steps import Manifest, StepConfig, StepContext, StepOutput, StepSpec

log = logging.getLogger("orchard.chat_data")

# Sphinx object kinds whose description says what a call does.
CALLABLE = {
    "function",
    "method",
    "classmethod",
    "staticmethod",
    "abstractmethod",
    "coroutinefunction",
    "coroutinemethod",
    "decorator",
    "decoratormethod",
    "macro",
}
DESCRIBE = {
    "callable": (
        "What does `{name}` do?",
        "What does {name}() do?",
        "Explain what `{name}` does.",
        "What is {name} used for?",
    ),
    "class": (
        "What is the `{name}` class?",
        "What does the class {name} represent?",
        "Describe the `{name}` class.",
    ),
    "exception": (
        "What is the `{name}` exception?",
        "What does the exception {name} signal?",
        "Describe the `{name}` exception.",
    ),
    "other": ("What is `{name}`?", "What does `{name}` mean?", "Describe {name}."),
}
SIGNATURE = (
    "What is the signature of {name}?",
    "How is `{name}` called?",
    "What arguments does {name} take?",
)
MODULE = (
    "Which module provides `{name}`?",
    "Which module is {name} in?",
    "Where does {name} come from?",
)
PAGE = ("What is {title} about?", "What does the page {title} cover?")
SECTION = (
    "What does the {page} documentation say about {heading}?",
    "In the {page} documentation, what is said about {heading}?",
)


class ChatDataConfig(StepConfig):
    heldout_fraction: float = Field(
        0.1, gt=0, le=0.5, description="Share of entries held out (at least one of two)."
    )
    seed: int = Field(0, description="Seed of the split and of the question templates.")
    answer_chars: int = Field(
        600, ge=80, description="Longest reference answer taken from a page, in characters."
    )
    min_answer_chars: int = Field(
        20, ge=1, description="Shorter descriptions are not made into entries."
    )
    questions_per_entry: int = Field(
        3, ge=1, le=3, description="Questions per entry: what it is, signature, module."
    )
    system_prompt: str | None = Field(None, description="A system turn opening every row.")
    safety: bool = Field(True, description="Add refusals of orchard.safety.TRAIN.")
    uploads: list[str] = Field(
        default_factory=list, description="JSONL files of conversations added to training."
    )
    uploads_sha256: str | None = Field(
        None, description="Content hash of the uploads (filled in by run())."
    )
    negatives: tuple[Literal[NEGATIVES], ...] = Field(  # type: ignore[valid-type]
        NEGATIVES, description="Kinds of rejected answers in the preference pairs."
    )
    base_samples: int = Field(64, ge=0, description="Questions the base model answers.")
    max_new_tokens: int = Field(64, ge=1, le=1024, description="Base answer length cap.")
    batch_size: int = Field(16, ge=1, description="Base answers generated together.")
    max_chars: int = Field(
        8000, ge=1, description="Validation: longest assistant answer, in characters."
    )
    sample_failures: int = Field(20, ge=0, description="Failing examples kept per rule.")
    not_in_key: ClassVar[frozenset[str]] = frozenset({"sample_failures"})

    @model_validator(mode="after")
    def _bounds(self) -> ChatDataConfig:
        if self.min_answer_chars > self.max_chars:
            raise ValueError(f"min_answer_chars {self.min_answer_chars} > max_chars")
        return self


def _hash(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8])


def _pick(options: Sequence[str], *parts: object) -> str:
    return options[_hash(*parts) % len(options)]


# -- inputs ------------------------------------------------------------------------------


def _roles(inputs: Sequence[Manifest]) -> tuple[list[Manifest], Manifest | None]:
    corpora = [m for m in inputs if m.step == "curate"]
    models = [m for m in inputs if m.step != "curate"]
    if not corpora or len(models) > 1:
        raise OrchardError(
            "chat_data takes one or more curate manifests and at most one model (a step "
            f"with hf/, e.g. pretrain); got {[m.step for m in inputs] or 'no input'}"
        )
    for model in models:
        if not (Path(model.path) / "hf" / "config.json").is_file():
            raise OrchardError(
                f"{model.path} ({model.step}) has no hf/ model directory: pass a pretrain "
                "(or sft) manifest whose model was exported, or no model at all"
            )
    return corpora, (models[0] if models else None)


def load_documents(corpus: Path) -> list[dict]:
    """The curated documents of the step output `corpus`, as {id, text, metadata}."""
    if not document_shards(corpus):
        raise OrchardError(
            f"no curated documents under {corpus / DOCUMENTS}: rebuild the curate step"
        )
    return [
        {"id": str(doc.record.get("id", "")), "text": doc.text, "metadata": doc.metadata}
        for doc in iter_documents(corpus)
    ]


# -- questions, splits, pairs -----------------------------------------------------------


def questions(entry: Entry, config: ChatDataConfig) -> list[tuple[str, str, str]]:
    """(question kind, question, reference answer) of one entry."""
    seed, name = config.seed, entry.name
    if entry.source == "sphinx":
        bucket = (
            "callable"
            if entry.kind in CALLABLE
            else entry.kind
            if entry.kind in ("class", "exception")
            else "other"
        )
        asked = [("describe", _pick(DESCRIBE[bucket], seed, entry.id, "d"), entry.answer)]
        if entry.signature and "(" in entry.signature and entry.signature != name:
            asked.append(("signature", _pick(SIGNATURE, seed, entry.id, "s"), entry.signature))
        if entry.module:
            answer = (
                f"The `{entry.module}` module provides `{name}`: {first_sentence(entry.answer)}"
            )
            asked.append(("module", _pick(MODULE, seed, entry.id, "m"), answer))
        asked = asked[: config.questions_per_entry]
        return [(kind, q.format(name=name), a) for kind, q, a in asked]
    if entry.source == "section" and entry.level > 1:
        heading = name.rstrip("?") or name  # "...say about Can I delete Python?"
        question = _pick(SECTION, seed, entry.id).format(page=entry.page, heading=heading)
    else:
        question = _pick(PAGE, seed, entry.id).format(title=quote_title(name))
    return [(entry.kind, question, entry.answer)]


def heldout_entries(entries: Sequence[Entry], config: ChatDataConfig) -> set[str]:
    """Entries held out by a seeded hash; at least one (and one kept) of two or more."""
    ranked = sorted(entries, key=lambda e: (_hash(config.seed, "split", e.id), e.id))
    scale = 2**64
    held = {
        e.id for e in ranked if _hash(config.seed, "split", e.id) / scale < config.heldout_fraction
    }
    if len(ranked) >= 2 and not held:
        held = {ranked[0].id}
    if len(ranked) >= 2 and len(held) == len(ranked):
        held.discard(ranked[-1].id)
    return held


def truncate(answer: str, key: str, seed: int) -> str | None:
    """The first 30-50% of the answer's words, without a closing stop: clearly unfinished."""
    words = answer.split()
    if len(words) < 8:
        return None
    share = 0.3 + (_hash(seed, "cut", key) % 21) / 100
    return " ".join(words[: max(3, round(len(words) * share))]).rstrip(".,;:!?")


def _fallback(kind: str, other: Entry) -> str | None:
    """What another entry answers to a kind of question it was not asked: its reference
    answer, except for signature and module questions (a description is no signature)."""
    return None if kind in ("signature", "module") else other.answer


def _messages(config: ChatDataConfig, question: str, answer: str) -> list[dict]:
    system = [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []
    return [
        *system,
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]


# -- the step ----------------------------------------------------------------------------


def build_entries(
    corpora: Sequence[Manifest], config: ChatDataConfig, clean: Cleaner, counts: Counter
) -> list[Entry]:
    entries: list[Entry] = []
    seen: set[str] = set()
    for corpus in corpora:
        docs = sorted(
            load_documents(Path(corpus.path)),
            key=lambda d: (str(d["metadata"].get("url") or ""), d["id"]),
        )
        counts["documents"] += len(docs)
        urls = {d["metadata"]["url"] for d in docs if isinstance(d["metadata"].get("url"), str)}
        pages = raw_html(corpus, urls)
        counts["pages_html"] += len(pages)
        for doc in docs:
            url = doc["metadata"].get("url")
            found = parse_page(pages[url], url, config, clean) if url in pages else []
            if not found:
                entry = text_entry(doc, config, clean)
                found = [entry] if entry else []
                counts["documents_text_only" if url not in pages else "pages_without_entries"] += 1
            for entry in found:
                if entry.id not in seen:
                    seen.add(entry.id)
                    entries.append(entry)
    return entries


@dataclass
class Asked:
    """The SFT rows by split, and what the preference pairs need of the corpus questions."""

    sft: dict[str, list[dict]]
    corpus_rows: list[tuple[str, dict]]  # (split, row) of the corpus questions, in order
    answers_of: dict[str, dict[str, str]]  # entry -> question kind -> answer
    kinds: dict[tuple[str, str], str]  # (entry, question) -> question kind


def ask(entries: Sequence[Entry], held: set[str], config: ChatDataConfig, counts: Counter) -> Asked:
    """The questions of every entry (each asked once) by split, then the refusals and the
    uploaded conversations (training only)."""
    sft: dict[str, list[dict]] = {split: [] for split in SPLITS}
    asked: set[str] = set()
    answers_of: dict[str, dict[str, str]] = {}
    kinds: dict[tuple[str, str], str] = {}
    for entry in entries:
        split = "heldout" if entry.id in held else "train"
        counts[f"entries.{entry.source}"] += 1
        asks = questions(entry, config)
        answers_of[entry.id] = {kind: answer for kind, _, answer in asks}
        for kind, question, answer in asks:
            normal = " ".join(question.casefold().split())
            if normal in asked:
                counts["questions_deduplicated"] += 1
                continue
            asked.add(normal)
            kinds[entry.id, question] = kind
            row_id = (
                f"{entry.source}-{hashlib.sha1(f'{entry.id}|{kind}'.encode()).hexdigest()[:16]}"
            )
            sft[split].append(
                {
                    "id": row_id,
                    "messages": _messages(config, question, answer),
                    "source": entry.source,
                    "entry": entry.id,
                    "kind": kind,
                }
            )
    corpus_rows = [(split, row) for split in SPLITS for row in sft[split]]
    if config.safety:
        from orchard.safety import REFUSAL, TRAIN

        for i, prompt in enumerate(TRAIN):
            sft["train"].append(
                {
                    "id": f"safety-{i}",
                    "messages": _messages(config, prompt, REFUSAL),
                    "source": "safety",
                    "entry": None,
                    "kind": "refusal",
                }
            )
    for row_id, messages in read_uploads(config.uploads):
        sft["train"].append(
            {"id": row_id, "messages": messages, "source": "upload", "entry": None, "kind": None}
        )
    return Asked(sft, corpus_rows, answers_of, kinds)


def base_answers(
    model: Manifest, corpus_rows: list[tuple[str, dict]], config: ChatDataConfig
) -> dict[str, str]:
    """Row id -> the model's own greedy answer, for `base_samples` rows picked by hash."""
    chosen = sorted(
        corpus_rows, key=lambda pair: (_hash(config.seed, "base", pair[1]["id"]), pair[1]["id"])
    )
    chosen = chosen[: config.base_samples]
    prompts = [row["messages"][:-1] for _, row in chosen]
    log.info("sampling %d base answers from %s", len(prompts), model.path)
    samples = greedy_answers(
        Path(model.path) / "hf", prompts, config.max_new_tokens, config.batch_size
    )
    return {row["id"]: text for (_, row), text in zip(chosen, samples, strict=True)}


def pairs(
    entries: Sequence[Entry],
    held: set[str],
    asked: Asked,
    base: dict[str, str],
    config: ChatDataConfig,
    counts: Counter,
) -> dict[str, list[dict]]:
    """Preference pairs over the corpus questions: the grounded answer against each kind
    of hard negative the config asks for. `_leak` marks a pair that lets a held-out entry
    into training (the suite's `no_heldout_in_train` refuses it)."""
    by_id = {e.id: e for e in entries}
    by_group: dict[str, list[Entry]] = {}
    for entry in entries:
        by_group.setdefault(entry.group, []).append(entry)
    preference: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for split, row in asked.corpus_rows:
        entry = by_id[row["entry"]]
        answer = row["messages"][-1]["content"]
        rejected: list[tuple[str, str, bool]] = []  # negative, text, leaks held-out
        if "same_module" in config.negatives:
            # Another entry of the page answering the same kind of question: its
            # description, its signature, the module sentence of another object.
            kind = asked.kinds[entry.id, row["messages"][-2]["content"]]
            others = [
                (other, text)
                for other in by_group[entry.group]
                if other.id != entry.id
                and (split == "heldout" or other.id not in held)
                and (text := asked.answers_of[other.id].get(kind, _fallback(kind, other)))
                and text.strip() != answer.strip()
            ]
            if others:
                other, text = others[_hash(config.seed, "neg", row["id"]) % len(others)]
                rejected.append(("same_module", text, split == "train" and other.id in held))
        if "truncated" in config.negatives and (short := truncate(answer, row["id"], config.seed)):
            rejected.append(("truncated", short, False))
        sample = base.get(row["id"])
        if sample is not None:
            if sample and sample.strip() != answer.strip():
                rejected.append(("base_sample", sample, False))
            else:
                counts["base_samples_skipped"] += 1
        for negative, text, leak in rejected:
            preference[split].append(
                {
                    "id": f"{row['id']}-{negative}",
                    "prompt": row["messages"][:-1],
                    "chosen": [{"role": "assistant", "content": answer}],
                    "rejected": [{"role": "assistant", "content": text}],
                    "negative": negative,
                    "_leak": leak or (split == "train" and entry.id in held),
                }
            )
            counts[f"preference_{split}.{negative}"] += 1
    return preference


def decontaminate_sets(
    sft: dict[str, list[dict]], preference: dict[str, list[dict]], ctx: StepContext
) -> dict[str, int]:
    """Remove from both training sets every row sharing a 13-gram with an evaluation task
    built from the held-out rows (`orchard.eval_tasks`, the tasks `evaluate` runs);
    `decontamination.json` lists what went. Returns the counts for the manifest."""
    index = EvalNgrams(eval_texts(task_docs(sft["heldout"])))
    sft["train"], of_sft = decontaminate(
        "sft", sft["train"], lambda row: messages_text(row["messages"]), index
    )
    preference["train"], of_preference = decontaminate(
        "preference", preference["train"], preference_text, index
    )
    reports = {"n": index.n, "eval_texts": index.texts, "ngrams": len(index)}
    for report in (of_sft, of_preference):
        reports[report.name] = report.summary()
        if report.removed:
            log.warning(
                "removed %d of %d %s training rows that overlap an evaluation task",
                report.removed,
                report.checked,
                report.name,
            )
    (ctx.out / "decontamination.json").write_text(json.dumps(reports, indent=2))
    return of_sft.counts() | of_preference.counts()


def validate_sets(
    config: ChatDataConfig,
    sft: dict[str, list[dict]],
    preference: dict[str, list[dict]],
    held: set[str],
    ctx: StepContext,
) -> dict[str, dict[str, Any]]:
    """Both suites, with Data Docs and `validation.json` in `ctx.out`; a failure keeps the
    report under `failed-<key>` and raises naming each failed rule."""
    summaries = {
        "sft": validate_set(config, "sft", sft_rules(config.max_chars), sft_frame(sft, held), ctx),
        "preference": validate_set(
            config,
            "preference",
            preference_rules(config.max_chars),
            preference_frame(preference),
            ctx,
        ),
    }
    (ctx.out / "validation.json").write_text(json.dumps(summaries, indent=2, default=str))
    report = ctx.out.parent / f"failed-{ctx.key}"
    failed = [name for name, summary in summaries.items() if not summary["success"]]
    if failed:
        keep_report(ctx.out, report)
        raise OrchardError(
            " ".join(
                failure_message(summaries[name], report, subject=f"the chat data's {name} set")
                for name in failed
            )
        )
    shutil.rmtree(report, ignore_errors=True)  # an older failure of the same key is stale
    return summaries


def chat_data(config: ChatDataConfig, inputs: Sequence[Manifest], ctx: StepContext) -> StepOutput:
    """The step body: entries -> SFT and preference sets in `ctx.out`, validated."""
    corpora, model = _roles(inputs)
    counts: Counter[str] = Counter()
    entries = build_entries(corpora, config, Cleaner(), counts)
    held = heldout_entries(entries, config)
    log.info(
        "%d entries (%d held out) from %d documents", len(entries), len(held), counts["documents"]
    )
    asked = ask(entries, held, config, counts)
    sft = asked.sft
    base: dict[str, str] = {}
    if model is not None and "base_sample" in config.negatives and config.base_samples:
        base = base_answers(model, asked.corpus_rows, config)
        counts["base_samples"] = len(base)
    preference = pairs(entries, held, asked, base, config, counts)
    # Kept apart: `Counter |=` below drops zero counts, and "0 removed" is a result.
    decontaminated = decontaminate_sets(sft, preference, ctx)
    for split in SPLITS:
        counts[f"sft_{split}"] = len(sft[split])
        for row in sft[split]:
            counts[f"sft_{split}.{row['source']}"] += 1
    summaries = validate_sets(config, sft, preference, held, ctx)

    for folder, sets in (("sft", sft), ("preference", preference)):
        (ctx.out / folder).mkdir()
        for split in SPLITS:
            with (ctx.out / folder / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
                for row in sets[split]:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts |= {
        "entries": len(entries),
        "entries_heldout": len(held),
        "preference_train": len(preference["train"]),
        "preference_heldout": len(preference["heldout"]),
    }
    answers = [row["messages"][-1]["content"] for split in SPLITS for row in sft[split]]
    metrics = {
        "entries": float(len(entries)),
        "heldout_entry_fraction": len(held) / len(entries) if entries else 0.0,
        "mean_answer_chars": sum(map(len, answers)) / len(answers) if answers else 0.0,
        **{
            f"rule.{s}.{r['rule']}": float(r["success"])
            for s, v in summaries.items()
            for r in v["rules"]
        },
    }
    return StepOutput(
        counts=dict(sorted((dict(counts) | decontaminated).items())),
        metrics=metrics,
        artifacts=["data_docs"],
    )


def validate_set(
    config: ChatDataConfig, name: str, rules: dict[str, Any], frame: pd.DataFrame, ctx: StepContext
) -> dict[str, Any]:
    docs = ctx.out / "data_docs" / name
    summary = run_suite(
        f"chat-{name}", rules, frame, docs, config.sample_failures, config.model_dump(mode="json")
    )
    if not (docs / "index.html").is_file():
        raise OrchardError(f"Great Expectations built no Data Docs in {docs}")
    return summary


STEP = StepSpec("chat_data", ChatDataConfig, default_name="demo", doc=__doc__)


def run(
    config: ChatDataConfig,
    inputs: Manifest | Sequence[Manifest],
    settings: Settings,
    name: str = STEP.default_name,
    force: bool = False,
) -> Manifest:
    """Build the chat data of the curate manifest(s) in `inputs` (plus an optional model
    for base-sample negatives); return the chat_data manifest."""
    inputs = [inputs] if isinstance(inputs, Manifest) else list(inputs)
    _roles(inputs)
    if config.uploads:  # the uploads' content, not only their names, is in the key
        config = config.model_copy(update={"uploads_sha256": uploads_sha256(config.uploads)})
    return STEP.run(
        settings, config, lambda ctx: chat_data(config, inputs, ctx), inputs, name, force
    )


def main(argv: list[str] | None = None) -> int:
    return STEP.main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
