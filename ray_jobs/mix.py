"""The mix step: sample curated sources to target proportions into the final corpus.

Documents carry a category in their metadata (`web`, `books`, `code`, `conversations`,
`instructions`; crawled pages without one count as `web`). Given weights per category,
the step takes the largest corpus it can without repeating a document (or exactly
`total_documents` when set and available), samples each category to its share, shuffles,
and records the proportions it achieved beside the ones asked for.

Decontamination comes first: a document sharing a 13-gram (normalised,
`orchard.decontamination`) with an evaluation task is not mixed. The tasks checked are the
safety set's held-out prompts (always) and the held-out tasks of every `chat_data`
manifest among the inputs (`orchard.eval_tasks`: docs QA, signature choices, held-out
text). In the default chain chat_data runs after pretraining, from the curated pages
themselves, so its held-out answers are page text the pretrained model is meant to have
read: pass a chat_data manifest as an input to keep those pages out as well. Counts:
`decontamination.mix.{checked,removed}`; `decontamination.json` lists the removed ids.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from orchard.decontamination import Decontaminated, EvalNgrams
from orchard.documents import DOCUMENTS, iter_documents
from orchard.errors import OrchardError
from orchard.eval_tasks import eval_texts, read_heldout, task_docs
from orchard.settings import Settings
from orchard.steps import Manifest, StepConfig, StepContext, StepOutput, StepSpec

log = logging.getLogger("orchard.mix")

Category = Literal["web", "books", "code", "conversations", "instructions"]


class MixConfig(StepConfig):
    weights: dict[Category, float] = Field(
        default_factory=lambda: {"web": 1.0},
        description="Target share of each category (normalised to sum to 1).",
    )
    total_documents: int | None = Field(
        None, ge=1, description="Documents in the mix (default: as many as the weights allow)."
    )
    shard_documents: int = Field(10_000, ge=1, description="Documents per output shard.")
    seed: int = Field(0, description="Sampling seed.")
    not_in_key: ClassVar[frozenset[str]] = frozenset({"shard_documents"})

    @field_validator("weights")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        if not value or any(weight < 0 for weight in value.values()) or sum(value.values()) <= 0:
            raise ValueError("weights must be non-negative with a positive sum, e.g. {'web': 1}")
        return value


def plan(config: MixConfig, available: dict[str, int]) -> dict[str, int]:
    """How many documents of each category the mix takes."""
    weights = {cat: w for cat, w in config.weights.items() if w > 0}
    missing = [cat for cat in weights if not available.get(cat)]
    for cat in missing:
        log.warning("no %s documents in the sources: the mix goes without them", cat)
        del weights[cat]
    if not weights:
        raise OrchardError(
            f"none of the weighted categories {sorted(config.weights)} has documents "
            f"(available: {dict(available) or 'none'}): fix the weights or the sources"
        )
    total_weight = sum(weights.values())
    share = {cat: w / total_weight for cat, w in weights.items()}
    largest = int(min(available[cat] / share[cat] for cat in share))
    total = config.total_documents or largest
    if total > largest:
        log.warning("asked for %d documents, the weights allow %d without repeats", total, largest)
        total = largest
    return {cat: min(available[cat], round(total * share[cat])) for cat in share}


def mix(
    config: MixConfig, corpora: list[Path], ctx: StepContext, eval_sets: Sequence[Path] = ()
) -> StepOutput:
    """The step body; `eval_sets`: chat_data outputs whose held-out tasks are checked."""
    heldout = [row for chat in eval_sets for row in read_heldout(chat)]
    index = EvalNgrams(eval_texts(task_docs(heldout)))
    removed = Decontaminated("mix")
    by_category: dict[str, list[bytes]] = defaultdict(list)  # the lines as written
    for corpus in corpora:
        for doc in iter_documents(corpus):
            removed.checked += 1
            shared = index.match(doc.text or "")
            if shared is not None:
                doc_id = str(doc.record.get("id") or f"{doc.shard.name}:{doc.line}")
                removed.removed_ids.append(doc_id)
                removed.examples.append({"id": doc_id, "shared": " ".join(shared)})
                continue
            by_category[doc.metadata.get("category") or "web"].append(doc.raw)
    (ctx.out / "decontamination.json").write_text(
        json.dumps(
            {"eval_sets": [str(p) for p in eval_sets], "n": index.n, "eval_texts": index.texts}
            | {"mix": removed.summary()},
            indent=2,
        )
    )
    if removed.removed:
        log.warning(
            "%d of %d documents overlap an evaluation task: not mixed",
            removed.removed,
            removed.checked,
        )
    available = {cat: len(lines) for cat, lines in by_category.items()}
    counts = plan(config, available)
    rng = random.Random(config.seed)
    chosen = [(cat, line) for cat, n in counts.items() for line in rng.sample(by_category[cat], n)]
    rng.shuffle(chosen)
    out = ctx.out / DOCUMENTS
    out.mkdir()
    for index in range(0, len(chosen), config.shard_documents):
        shard = out / f"{index // config.shard_documents:05d}.jsonl.gz"
        with gzip.open(shard, "wb") as handle:
            handle.writelines(line for _, line in chosen[index : index + config.shard_documents])
    achieved = Counter(cat for cat, _ in chosen)
    total = sum(achieved.values())
    proportions = {cat: achieved[cat] / total for cat in achieved} if total else {}
    report = {
        "asked": {c: w / sum(config.weights.values()) for c, w in config.weights.items()},
        "achieved": proportions,
        "available": available,
        "documents": dict(achieved),
    }
    (ctx.out / "mix.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    return StepOutput(
        counts={"documents": total}
        | {f"documents.{c}": n for c, n in achieved.items()}
        | removed.counts(),
        metrics={f"share.{c}": p for c, p in proportions.items()},
    )


STEP = StepSpec("mix", MixConfig, default_name="mix", doc=__doc__)


def run(
    config: MixConfig,
    inputs: list[Manifest],
    settings: Settings,
    name: str = STEP.default_name,
    force=False,
) -> Manifest:
    """Mix the curated corpora among `inputs`, without the documents that overlap the
    evaluation tasks of the chat_data manifests among them (other inputs, e.g. a
    validation, only order the step after them and enter its key)."""
    corpora = [Path(m.path) for m in inputs if m.step == "curate"]
    if not corpora:
        raise OrchardError("mix needs at least one curate manifest among its --input")
    eval_sets = [Path(m.path) for m in inputs if m.step == "chat_data"]
    return STEP.run(
        settings, config, lambda ctx: mix(config, corpora, ctx, eval_sets), inputs, name, force
    )


def main(argv: list[str] | None = None) -> int:
    return STEP.main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
