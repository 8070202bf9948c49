"""The validate step: a Great Expectations suite over the curated corpus.

The corpus passes when there are documents, no text is missing or outside the length
bounds, ids are present and unique, URLs are unique where present (sources without URLs
are fine), no e-mail address or phone number is left (the placeholders curate writes are
fine), every language is a target, and the share of duplicated texts is within the bound.

Data Docs HTML (`data_docs/index.html`) and `validation.json` are written next to the
data and logged to the step's MLflow run. A failing suite fails the step: nothing is
published (mix never sees an unvalidated corpus), the report is kept under
`<data_root>/validate/failed-<key>/` for people to open, and the DAG stops there.

    python -m ray_jobs.validate --config '{"languages": ["en"]}' --curate-manifest M.json
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
from pydantic import Field, model_validator

from orchard.documents import DOCUMENTS, iter_documents
from orchard.errors import OrchardError
from orchard.expectations import failure_message as expectations_failure_message
from orchard.expectations import keep_report, short
from orchard.expectations import run_suite as expectations_run_suite
from orchard.pii import EMAIL, PHONE_NUMBER
from orchard.settings import Settings
from orchard.steps import Manifest, StepConfig, StepContext, StepOutput, StepSpec

log = logging.getLogger("orchard.validate")

# What curate leaves of PII must not look like PII. datatrove's PIIFormatter writes
# email@example.com / firstname.lastname@example.org (example.com/.org are reserved for
# examples, so no address there is anyone's: `EMAIL`, shared in orchard.pii,
# skips them) and a fixed set of public-looking IPs; curate writes <PHONE> for phone numbers.
# Curate's own phone pattern, so what curate keeps (a dotted IP placeholder such as
# datatrove's 22.214.171.124) is never called a phone number here.
PHONE = PHONE_NUMBER.pattern
COLUMNS = ["id", "url", "text", "n_chars", "language", "text_hash"]


class CorpusValidationError(OrchardError):
    """The corpus failed the suite; `report` is the kept Data Docs + validation.json."""

    def __init__(self, message: str, report: Path, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report
        self.summary = summary


class ValidateConfig(StepConfig):
    languages: tuple[str, ...] = Field(
        ("en",), description="Target languages; empty: any language (no language rule)."
    )
    min_chars: int = Field(50, ge=1, description="Shortest text allowed, in characters.")
    max_chars: int = Field(200_000, ge=1, description="Longest text allowed, in characters.")
    max_duplicate_rate: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Largest share of documents repeating an earlier document's text "
        "(after lowercasing and collapsing whitespace): 1 - distinct texts / documents.",
    )
    sample_failures: int = Field(20, ge=0, description="Failing examples kept per rule.")
    # How many examples a report shows does not change whether the corpus passes.
    not_in_key: ClassVar[frozenset[str]] = frozenset({"sample_failures"})

    @model_validator(mode="after")
    def _bounds(self) -> ValidateConfig:
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars {self.min_chars} is above max_chars {self.max_chars}")
        return self


def text_hash(text: str) -> str:
    """sha1 of the lowercased, whitespace-collapsed text: what counts as the same text."""
    return hashlib.sha1(" ".join(text.lower().split()).encode()).hexdigest()


def load_corpus(corpus: Path) -> pd.DataFrame:
    """Every document of the step output `corpus` as one row of the checked columns.

    Only what a rule reads is kept (the text, not the rest of the metadata), so ~100k
    documents cost about their text's size. A null text is read, for `text_present`."""
    columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    for doc in iter_documents(corpus, allow_null_text=True):
        meta, text = doc.metadata, doc.text
        columns["id"].append(doc.id)
        columns["url"].append(meta.get("url") or None)
        columns["text"].append(text)
        columns["n_chars"].append(len(text or ""))
        columns["language"].append(meta.get("language") or None)
        columns["text_hash"].append(text_hash(text or ""))
    return pd.DataFrame(columns)


def duplicate_rate(frame: pd.DataFrame) -> float:
    return 1 - frame["text_hash"].nunique() / len(frame) if len(frame) else 0.0


def expectations(config: ValidateConfig) -> dict[str, Any]:
    """The suite, by rule name; the name is what the error, metrics and report call it."""
    import great_expectations as gx

    expect = gx.expectations
    rules: dict[str, Any] = {
        "has_documents": expect.ExpectTableRowCountToBeBetween(min_value=1),
        "text_present": expect.ExpectColumnValuesToNotBeNull(column="text"),
        "text_length": expect.ExpectColumnValuesToBeBetween(
            column="n_chars", min_value=config.min_chars, max_value=config.max_chars
        ),
        "id_present": expect.ExpectColumnValuesToNotBeNull(column="id"),
        "id_unique": expect.ExpectColumnValuesToBeUnique(column="id"),
        # Map expectations skip nulls: documents without a URL never collide.
        "url_unique": expect.ExpectColumnValuesToBeUnique(column="url"),
        "no_email": expect.ExpectColumnValuesToNotMatchRegex(column="text", regex=EMAIL),
        "no_phone": expect.ExpectColumnValuesToNotMatchRegex(column="text", regex=PHONE),
    }
    if config.languages:
        rules["language_present"] = expect.ExpectColumnValuesToNotBeNull(column="language")
        rules["language_targeted"] = expect.ExpectColumnValuesToBeInSet(
            column="language", value_set=list(config.languages)
        )
    # Share of distinct texts = 1 - duplicate rate; rounded so the bound itself passes.
    rules["duplicate_rate"] = expect.ExpectColumnProportionOfUniqueValuesToBeBetween(
        column="text_hash", min_value=round(1 - config.max_duplicate_rate, 12)
    )
    for name, expectation in rules.items():
        expectation.meta = {"rule": name}
    return rules


def run_suite(config: ValidateConfig, frame: pd.DataFrame, docs_dir: Path) -> dict[str, Any]:
    """Validate `frame`, build Data Docs in `docs_dir`, return the JSON-able summary."""
    summary = expectations_run_suite(
        "corpus",
        expectations(config),
        frame,
        docs_dir,
        config.sample_failures,
        config.model_dump(mode="json"),
    )
    for rule in summary["rules"]:
        if rule["rule"] == "duplicate_rate" and not rule["success"]:
            rule["examples"] += _duplicate_examples(frame, config.sample_failures)
    return {
        "success": summary["success"],
        "documents": len(frame),
        "duplicate_rate": duplicate_rate(frame),
        "config": summary["config"],
        "rules": summary["rules"],
    }


def _duplicate_examples(frame: pd.DataFrame, sample: int) -> list[dict[str, Any]]:
    """A few groups of documents sharing a text: what the duplicate rate counts."""
    repeated = frame[frame["text_hash"].duplicated(keep=False)]
    return [
        {"ids": list(group[:5]), "value": short(frame.at[group.index[0], "text"])}
        for _, group in itertools.islice(repeated.groupby("text_hash", sort=False)["id"], sample)
    ]


def failure_message(summary: dict[str, Any], report: Path) -> str:
    """One line naming each failed rule, its expectation, what it observed, an example."""
    seen = {}
    if summary["documents"]:
        bound = summary["config"]["max_duplicate_rate"]
        seen["duplicate_rate"] = f"duplicate rate {summary['duplicate_rate']:.4g} > {bound}"
    return expectations_failure_message(summary, report, subject="the corpus", seen=seen)


def validate_corpus(config: ValidateConfig, corpus: Path, ctx: StepContext) -> StepOutput:
    """The step body: validate the documents of the step output `corpus` into `ctx.out`."""
    frame = load_corpus(corpus)
    log.info("validating %d documents from %s", len(frame), corpus / DOCUMENTS)
    summary = run_suite(config, frame, ctx.out / "data_docs")
    if not (ctx.out / "data_docs" / "index.html").is_file():
        raise OrchardError(f"Great Expectations built no Data Docs in {ctx.out / 'data_docs'}")
    (ctx.out / "validation.json").write_text(json.dumps(summary, indent=2, default=str))
    # Beside the step's outputs, where the DAG looks: locate(..., "validate", "failed", ...).
    report = ctx.out.parent / f"failed-{ctx.key}"
    if not summary["success"]:
        keep_report(ctx.out, report)
        raise CorpusValidationError(failure_message(summary, report), report, summary)
    shutil.rmtree(report, ignore_errors=True)  # an older failure of the same key is stale
    metrics = {
        "documents": float(len(frame)),
        "duplicate_rate": summary["duplicate_rate"],
        **{f"rule.{r['rule']}": float(r["success"]) for r in summary["rules"]},
    }
    return StepOutput(counts={"documents": len(frame)}, metrics=metrics, artifacts=["data_docs"])


STEP = StepSpec("validate", ValidateConfig, default_name="corpus", doc=__doc__)


def run(
    config: ValidateConfig,
    inputs: Manifest | Sequence[Manifest],
    settings: Settings,
    name: str = STEP.default_name,
    force: bool = False,
) -> Manifest:
    """Validate the corpus of a curate (or mix) manifest; return the validate manifest."""
    inputs = [inputs] if isinstance(inputs, Manifest) else list(inputs)
    corpora = [m for m in inputs if m.step in ("curate", "mix")]
    if len(corpora) != 1:
        raise OrchardError("validate needs exactly one curate (or mix) manifest as input")
    corpus = Path(corpora[0].path)
    try:
        return STEP.run(
            settings, config, lambda ctx: validate_corpus(config, corpus, ctx), inputs, name, force
        )
    except CorpusValidationError as error:
        if settings.mlflow_uri:
            _log_failure(settings.mlflow_uri, name, config, error)
        raise


def _log_failure(uri: str, name: str, config: ValidateConfig, error: CorpusValidationError) -> None:
    """run_step logs only finished steps; a failed validation is worth a (FAILED) run
    too, with its Data Docs, so MLflow shows every validation people may look for."""
    import mlflow

    key = error.report.name.removeprefix("failed-")
    summary = error.summary
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("orchard-validate")
        tags = {"orchard.step": "validate", "orchard.key": key, "orchard.outcome": "failed"}
        mlflow.start_run(run_name=f"{name}-{key}-failed", tags=tags)
        try:
            mlflow.log_params({k: str(v)[:500] for k, v in config.model_dump().items()})
            rules = {f"rule.{r['rule']}": float(r["success"]) for r in summary["rules"]}
            mlflow.log_metrics({k: summary[k] for k in ("documents", "duplicate_rate")} | rules)
            mlflow.log_artifacts(str(error.report / "data_docs"), artifact_path="data_docs")
            mlflow.log_artifact(str(error.report / "validation.json"))
        finally:
            mlflow.end_run(status="FAILED")
    except Exception as failure:  # the suite's verdict matters more than its bookkeeping
        log.warning("could not log the failed validation to MLflow at %s: %s", uri, failure)


def main(argv: list[str] | None = None) -> int:
    """`step_main`'s command line (what the DAG submits: `--input`), with the corpus also
    accepted as `--curate-manifest PATH`; exit 2 unless exactly one curate/mix is given."""
    import argparse

    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--input", "--curate-manifest", dest="inputs", action="append", default=[])
    known, rest = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    if not {"-h", "--help"} & set(rest):
        if len(known.inputs) != 1:
            print("error: pass the curated corpus as --curate-manifest PATH", file=sys.stderr)
            return 2
        manifest = Path(known.inputs[0])
        manifest = manifest / "manifest.json" if manifest.is_dir() else manifest
        step = json.loads(manifest.read_text()).get("step") if manifest.is_file() else "curate"
        if step not in ("curate", "mix"):
            print(f"error: {manifest} is a {step} manifest, not curate's", file=sys.stderr)
            return 2
    rest += [arg for path in known.inputs for arg in ("--input", path)]
    return STEP.main(run, rest)


if __name__ == "__main__":
    sys.exit(main())
