"""The feedback step: the platform's feedback export becomes a versioned preference set.

Input: one export file (the JSON lines of `GET /admin/feedback/export`, which already
leaves out users who opted out; `orchard_feedback` fetches it) and, optionally, the
`chat_data` manifest whose evaluation tasks the set is decontaminated against (the
champion's). The export's sha256 is part of the config, so the step key, which names the
dataset version, changes exactly when the feedback does.

What becomes of each signal:
- a regeneration is a pair: the replacing answer chosen over the replaced one (`weak`),
  `strong` when the user's thumbs agree (chosen up or rejected down); none when they
  contradict it (the new answer rated down, or the old one up);
- thumbs up and down on the same prompt (same words, any user) pair every up with every
  down (`strong`), at most `pairs_per_prompt` per prompt;
- every thumb is also an unpaired row for KTO (`label`), and the answer to an edited
  question a weak negative (`label` false).
Every text is redacted with curate's PII rules (datatrove's `PIIFormatter` for e-mails
and IP addresses, `orchard.pii` for phone numbers), exact duplicates are dropped, and rows
sharing a 13-gram with an evaluation text are removed (`orchard.decontamination`).

The gate (Great Expectations; a failure fails the step with one line naming each rule,
the report kept under `feedback/failed-<key>/`):
- `enough_pairs`: at least `min_pairs` preference pairs (`method` dpo, the default), or
  `enough_rows`: at least `min_rows` labelled answers (`method` kto: the unpaired rows and
  each pair unfolded into a desirable and an undesirable answer, each answer once);
- `not_one_sided`: the share of positive judgements (a thumb up 1, down or an edit 0, a
  pair one of each; for kto each labelled answer) between `min_positive_share` and
  `max_positive_share`;
- `no_dominant_user`: no single user (pseudonym) behind more than `max_user_share` of the
  rows;
- `no_email`, `no_phone`: nothing the redaction should have caught is left;
- `unique_ids`.

Outputs: `preference/train.jsonl` (TRL's conversational preference format, `{"id",
"prompt", "chosen", "rejected", "source", "strength", "user", "model_version",
"variant"}`), `kto/train.jsonl` (`{"id", "prompt", "completion", "label", "source",
...}`), `decontamination.json`, `validation.json` and `data_docs/`. The step's MLflow run
records the preference set and the unpaired rows as dataset inputs (`mlflow.log_input`,
context `feedback`: `orchard-feedback-<version>` and `orchard-feedback-<version>-unpaired`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from orchard.errors import OrchardError
from orchard.settings import Settings
from orchard.steps import Manifest, StepConfig, StepContext, StepOutput, StepSpec

log = logging.getLogger("orchard.feedback")


class FeedbackConfig(StepConfig):
    export: str = Field(description="The feedback export (JSON lines) to build from.")
    export_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="sha256 of the export: the dataset's version."
    )
    opted_out_accounts: int = Field(
        0, ge=0, description="Accounts the export left out (recorded in the manifest)."
    )
    method: Literal["dpo", "kto"] = Field(
        "dpo",
        description="What the set is gated for: dpo trains on its pairs (enough_pairs), kto on "
        "every labelled answer, pairs unfolded (enough_rows).",
    )
    min_pairs: int = Field(8, ge=1, description="Fewest preference pairs the gate accepts.")
    min_rows: int = Field(
        16, ge=1, description="Fewest labelled answers the gate accepts (method kto)."
    )
    min_positive_share: float = Field(
        0.05, ge=0, le=1, description="Least share of positive judgements (one-sidedness)."
    )
    max_positive_share: float = Field(
        0.95, ge=0, le=1, description="Most share of positive judgements (one-sidedness)."
    )
    max_user_share: float = Field(
        0.5, gt=0, le=1, description="Most share of the rows one user may contribute."
    )
    pairs_per_prompt: int = Field(4, ge=1, description="Most rating pairs of one prompt.")
    sample_failures: int = Field(5, ge=1, description="Offending rows shown per failed rule.")
    # The path is where the export was staged, not what it holds (the sha256 is).
    not_in_key: ClassVar[frozenset[str]] = frozenset({"export", "sample_failures"})

    @model_validator(mode="after")
    def _shares(self) -> FeedbackConfig:
        if self.min_positive_share > self.max_positive_share:
            raise ValueError(
                f"min_positive_share {self.min_positive_share} > max_positive_share "
                f"{self.max_positive_share}: the gate could never pass"
            )
        return self


# -- redaction -------------------------------------------------------------------------------
class Redactor:
    """Curate's PII rules on one text: e-mails and IPs (datatrove), phone numbers (ours)."""

    def __init__(self) -> None:
        from datatrove.pipeline.formatters import PIIFormatter

        self._pii = PIIFormatter()

    def __call__(self, text: str) -> str:
        from orchard.pii import replace_phone_numbers

        return replace_phone_numbers(self._pii.format(text))

    def messages(self, messages: Iterable[dict]) -> list[dict]:
        return [{"role": m["role"], "content": self(str(m.get("content") or ""))} for m in messages]


# -- signals -> rows ---------------------------------------------------------------------------
def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _row_id(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def read_export(path: Path) -> list[dict]:
    if not path.is_file():
        raise OrchardError(f"no feedback export at {path}: run orchard_feedback's export task")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise OrchardError(f"{path} line {number} is not JSON ({error})") from None
        if record.get("kind", "rating") not in ("rating", "regeneration", "edit"):
            raise OrchardError(f"{path} line {number}: unknown kind {record.get('kind')!r}")
        records.append(record)
    return records


def preference_rows(
    records: list[dict], redact: Redactor, pairs_per_prompt: int
) -> tuple[list[dict], list[dict], Counter]:
    """(pairs, unpaired rows, counts by signal) from the export's records, redacted."""
    pairs: list[dict] = []
    unpaired: list[dict] = []
    counts: Counter = Counter()
    by_prompt: dict[str, dict[str, list[tuple[dict, list[dict]]]]] = {}
    for record in records:
        kind = record.get("kind", "rating")
        counts[f"signals.{kind}"] += 1
        prompt = redact.messages(record["prompt"])
        meta = {
            "user": record.get("user") or "unknown",
            "model_version": record.get("model_version"),
            "variant": record.get("variant"),
        }
        if kind == "regeneration":
            chosen, rejected = record["chosen"], record["rejected"]
            if chosen.get("rating") == "down" or rejected.get("rating") == "up":
                counts["pairs.contradicted"] += 1
                continue
            strong = chosen.get("rating") == "up" or rejected.get("rating") == "down"
            good, bad = redact(chosen["content"]), redact(rejected["content"])
            pairs.append(
                {
                    "id": _row_id(prompt, good, bad),
                    "prompt": prompt,
                    "chosen": _assistant(good),
                    "rejected": _assistant(bad),
                    "source": "regeneration",
                    "strength": "strong" if strong else "weak",
                    **meta,
                }
            )
            continue
        completion = redact.messages(record["completion"])
        label = bool(record["label"])
        unpaired.append(
            {
                "id": _row_id(prompt, completion, label),
                "prompt": prompt,
                "completion": completion,
                "label": label,
                "source": kind,
                "comment": redact(record.get("comment") or ""),
                **meta,
            }
        )
        if kind == "rating":
            key = json.dumps(prompt, sort_keys=True)
            side = "up" if label else "down"
            by_prompt.setdefault(key, {"up": [], "down": []})[side].append((meta, completion))
    for key, sides in by_prompt.items():
        prompt = json.loads(key)
        made = 0
        for up_meta, good in sides["up"]:
            for _, bad in sides["down"]:
                if made == pairs_per_prompt or good == bad:
                    continue
                made += 1
                pairs.append(
                    {
                        "id": _row_id(prompt, good, bad),
                        "prompt": prompt,
                        "chosen": good,
                        "rejected": bad,
                        "source": "ratings",
                        "strength": "strong",
                        **up_meta,
                    }
                )
    return pairs, unpaired, counts


def dedupe(rows: list[dict]) -> tuple[list[dict], int]:
    """The rows with each id once (the id hashes the content), in order."""
    seen: set[str] = set()
    kept = []
    for row in rows:
        if row["id"] not in seen:
            seen.add(row["id"])
            kept.append(row)
    return kept, len(rows) - len(kept)


# -- the gate --------------------------------------------------------------------------------
def gate_frame(pairs: list[dict], unpaired: list[dict], method: str = "dpo"):
    """One row per training row: its user, whether it is (from) a pair, its positive share
    and its text (what the PII rules check). For dpo a pair is one row, half positive, and
    each unpaired row one more judgement; for kto the rows KTO trains on (`kto_rows`: the
    unpaired rows and each pair unfolded into a positive and a negative row)."""
    import pandas as pd

    from orchard.decontamination import messages_text, preference_text
    from orchard.feedback import kto_rows

    def unpaired_row(u: dict) -> dict:
        return {
            "id": u["id"],
            "user": u["user"],
            "paired": int(u.get("paired", False)),
            "positive": 1.0 if u["label"] else 0.0,
            "text": messages_text([*u["prompt"], *u["completion"]]) + "\n" + u.get("comment", ""),
        }

    if method == "kto":
        rows = [unpaired_row(u) for u in kto_rows(pairs, unpaired)]
    else:
        rows = [
            {
                "id": p["id"],
                "user": p["user"],
                "paired": 1,
                "positive": 0.5,
                "text": preference_text(p),
            }
            for p in pairs
        ] + [unpaired_row(u) for u in unpaired]
    frame = pd.DataFrame(rows, columns=["id", "user", "paired", "positive", "text"])
    shares = frame["user"].map(frame["user"].value_counts(normalize=True)) if len(frame) else []
    frame["user_share"] = shares
    return frame


def gate_rules(config: FeedbackConfig) -> dict[str, Any]:
    import great_expectations.expectations as expect

    from orchard.pii import EMAIL, PHONE_NUMBER

    enough = (
        {"enough_rows": expect.ExpectTableRowCountToBeBetween(min_value=config.min_rows)}
        if config.method == "kto"
        else {
            "enough_pairs": expect.ExpectColumnSumToBeBetween(
                column="paired", min_value=config.min_pairs
            )
        }
    )
    return {
        **enough,
        "not_one_sided": expect.ExpectColumnMeanToBeBetween(
            column="positive",
            min_value=config.min_positive_share,
            max_value=config.max_positive_share,
        ),
        "no_dominant_user": expect.ExpectColumnMaxToBeBetween(
            column="user_share", max_value=config.max_user_share
        ),
        "no_email": expect.ExpectColumnValuesToNotMatchRegex(column="text", regex=EMAIL),
        "no_phone": expect.ExpectColumnValuesToNotMatchRegex(
            column="text", regex=PHONE_NUMBER.pattern
        ),
        "unique_ids": expect.ExpectColumnValuesToBeUnique(column="id"),
    }


def gate(config: FeedbackConfig, pairs: list[dict], unpaired: list[dict], ctx: StepContext):
    """Validate; a failure keeps the report beside the step's outputs and raises one line
    naming each failed rule with what it saw."""
    from orchard.expectations import failure_message, keep_report, run_suite

    frame = gate_frame(pairs, unpaired, config.method)
    summary = run_suite(
        "feedback",
        gate_rules(config),
        frame,
        ctx.out / "data_docs",
        config.sample_failures,
        config.model_dump(mode="json"),
    )
    (ctx.out / "validation.json").write_text(json.dumps(summary, indent=2, default=str))
    report = ctx.out.parent / f"failed-{ctx.key}"
    if summary["success"]:
        shutil.rmtree(report, ignore_errors=True)
        return summary
    keep_report(ctx.out, report)
    users = frame["user"].value_counts()
    positive = float(frame["positive"].mean()) if len(frame) else float("nan")
    seen = {
        "enough_pairs": f"{len(pairs)} pairs, need at least {config.min_pairs}",
        "enough_rows": f"{len(frame)} labelled answers ({int(frame['paired'].sum())} from "
        f"pairs), need at least {config.min_rows}",
        "not_one_sided": f"{positive:.0%} of judgements positive, allowed "
        f"{config.min_positive_share:.0%}-{config.max_positive_share:.0%}",
        "no_dominant_user": (
            f"one user gave {users.iloc[0]} of {len(frame)} rows "
            f"({users.iloc[0] / len(frame):.0%}), allowed {config.max_user_share:.0%}"
            if len(frame)
            else "no rows"
        ),
    }
    raise OrchardError(
        failure_message(summary, report, subject="the feedback dataset", seen=seen)
        + ". Collect more feedback or change the gate's Params (min_pairs or "
        "min_rows, min/max_positive_share, max_user_share)"
    )


# -- the step --------------------------------------------------------------------------------
def eval_index(chat: Manifest | None):
    """The n-grams of the evaluation tasks of `chat` (its held-out rows and the safety
    prompts); only the safety prompts without one."""
    from orchard.decontamination import EvalNgrams
    from orchard.eval_tasks import eval_texts, read_heldout, task_docs

    heldout = read_heldout(Path(chat.path)) if chat else []
    return EvalNgrams(eval_texts(task_docs(heldout)))


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))


def build(
    config: FeedbackConfig, chat: Manifest | None, ctx: StepContext, tracking_uri: str | None
) -> StepOutput:
    from orchard.decontamination import decontaminate, messages_text, preference_text
    from orchard.feedback import kto_rows

    records = read_export(Path(config.export))
    digest = hashlib.sha256(Path(config.export).read_bytes()).hexdigest()
    if digest != config.export_sha256:
        raise OrchardError(
            f"{config.export} has sha256 {digest}, not {config.export_sha256}: it changed "
            "after it was exported; export again"
        )
    pairs, unpaired, counts = preference_rows(records, Redactor(), config.pairs_per_prompt)
    pairs, dup_pairs = dedupe(pairs)
    unpaired, dup_unpaired = dedupe(unpaired)
    index = eval_index(chat)
    pairs, pair_report = decontaminate("feedback_pairs", pairs, preference_text, index)
    unpaired, kto_report = decontaminate(
        "feedback_kto",
        unpaired,
        lambda row: messages_text([*row["prompt"], *row["completion"]]),
        index,
    )
    (ctx.out / "decontamination.json").write_text(
        json.dumps({r.name: r.summary() for r in (pair_report, kto_report)}, indent=2)
    )
    gate(config, pairs, unpaired, ctx)
    _write(ctx.out / "preference" / "train.jsonl", pairs)
    _write(ctx.out / "kto" / "train.jsonl", unpaired)
    strength = Counter(p["strength"] for p in pairs)
    out_counts = {
        **dict(counts),
        "records": len(records),
        "pairs": len(pairs),
        "pairs.strong": strength["strong"],
        "pairs.weak": strength["weak"],
        "unpaired": len(unpaired),
        "labelled_answers": len(kto_rows(pairs, unpaired)),
        "users": len({row["user"] for row in [*pairs, *unpaired]}),
        "duplicates_removed": dup_pairs + dup_unpaired,
        "opted_out_accounts": config.opted_out_accounts,
        **pair_report.counts(),
        **kto_report.counts(),
    }
    run_id = log_dataset(ctx, pairs, unpaired, tracking_uri)
    log.info("feedback dataset %s: %d pairs, %d unpaired", ctx.key, len(pairs), len(unpaired))
    return StepOutput(
        counts=dict(sorted(out_counts.items())),
        facts={"export_sha256": config.export_sha256, "version": ctx.key, "method": config.method},
        artifacts=["data_docs"],
        mlflow_run_id=run_id,
    )


def log_dataset(
    ctx: StepContext, pairs: list[dict], unpaired: list[dict], tracking_uri: str | None
) -> str | None:
    """The pairs and the unpaired rows as MLflow dataset inputs of the step's run (None: no
    MLflow)."""
    if not tracking_uri:
        return None
    import mlflow

    from orchard.feedback import mlflow_dataset, mlflow_unpaired_dataset

    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.set_experiment("orchard-feedback")
    with mlflow.start_run(
        experiment_id=experiment.experiment_id,
        run_name=f"feedback-{ctx.key}",
        tags={"orchard.step": "feedback", "orchard.key": ctx.key},
    ) as run:
        if pairs:
            mlflow.log_input(mlflow_dataset(pairs, ctx.key, ctx.location), context="feedback")
        if unpaired:
            name = f"orchard-feedback-{ctx.key}-unpaired"
            dataset = mlflow_unpaired_dataset(unpaired, name, ctx.location)
            mlflow.log_input(dataset, context="feedback")
        return run.info.run_id


STEP = StepSpec("feedback", FeedbackConfig, default_name="feedback", doc=__doc__)


def run(
    config: FeedbackConfig,
    inputs: list[Manifest],
    settings: Settings,
    name: str = STEP.default_name,
    force: bool = False,
) -> Manifest:
    chats = [m for m in inputs if m.step == "chat_data"]
    if len(chats) > 1 or len(chats) != len(inputs):
        raise OrchardError(
            "feedback takes at most one chat_data manifest (whose evaluation tasks it is "
            f"decontaminated against); got {[m.step for m in inputs]}"
        )
    chat = chats[0] if chats else None
    return STEP.run(
        settings,
        config,
        lambda ctx: build(config, chat, ctx, settings.mlflow_uri),
        inputs,
        name,
        force,
    )


def main(argv: list[str] | None = None) -> int:
    return STEP.main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
