"""Great Expectations suites run the same way by every step that validates data.

A step names its rules (`{rule name: expectation}`), hands a pandas frame over, and gets
back a JSON-able summary (one entry per rule, in suite order, with a few offending rows
by `id`) plus Data Docs HTML in `docs_dir`. `failure_message` turns a failed summary into
the one line people read; `keep_report` keeps the report of a failed run where it
outlives the discarded staging directory.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd


def run_suite(
    name: str,
    rules: Mapping[str, Any],
    frame: pd.DataFrame,
    docs_dir: Path,
    sample_failures: int,
    config_dump: dict[str, Any],
) -> dict[str, Any]:
    """Validate `frame` (which has an `id` column) against `rules`, build Data Docs in
    `docs_dir`, return `{"success", "rows", "config", "rules"}`."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX logs every store and action at INFO, and draws progress bars on stderr.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")  # may be shared in a process: unique names
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    unique = f"orchard-{name}-{uuid.uuid4().hex[:12]}"
    context.add_data_docs_site(
        site_name=unique,
        site_config={
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    source = context.data_sources.add_pandas(unique)
    batch = source.add_dataframe_asset(unique).add_batch_definition_whole_dataframe(unique)
    suite = context.suites.add(gx.ExpectationSuite(name=unique))
    for rule, expectation in rules.items():
        expectation.meta = {"rule": rule}
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=unique, data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=unique,
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data-docs", site_names=[unique])],
            result_format={
                "result_format": "SUMMARY",
                "partial_unexpected_count": sample_failures,
                "unexpected_index_column_names": ["id"],
            },
        )
    )
    try:
        outcome = checkpoint.run(batch_parameters={"dataframe": frame})
    finally:  # a long-lived process (a test session, a worker) validates many times
        context.checkpoints.delete(unique)
        context.validation_definitions.delete(unique)
        context.suites.delete(unique)
        context.data_sources.delete(unique)
        context.delete_data_docs_site(unique)
    (run_result,) = outcome.run_results.values()
    described = [describe(r.to_json_dict(), sample_failures) for r in run_result.results]
    order = list(rules)  # GX groups results by metric; people read them in suite order
    return {
        "success": bool(outcome.success),
        "rows": len(frame),
        "config": config_dump,
        "rules": sorted(described, key=lambda rule: order.index(rule["rule"])),
    }


def describe(result: dict[str, Any], sample: int) -> dict[str, Any]:
    """One rule's outcome: what it checked, what it saw, a few offending rows."""
    expectation = result["expectation_config"]
    kwargs = {k: v for k, v in expectation["kwargs"].items() if k != "batch_id"}
    outcome = result.get("result") or {}
    examples: list[dict[str, Any]] = []
    for row in (outcome.get("partial_unexpected_index_list") or [])[:sample]:
        value = row.get(kwargs.get("column"))
        if (
            "regex" in kwargs
            and isinstance(value, str)
            and (hit := re.search(kwargs["regex"], value))
        ):
            start = max(0, hit.start() - 40)  # the offending span and what leads to it
            value = ("…" if start else "") + value[start : hit.end()]
        examples.append({"id": row.get("id"), "value": short(value)})
    observed = outcome.get("observed_value")
    return {
        "rule": expectation["meta"]["rule"],
        "expectation": expectation["type"],
        "kwargs": kwargs,
        "success": bool(result["success"]),
        "observed": observed if observed is not None else outcome.get("unexpected_count"),
        "unexpected_count": outcome.get("unexpected_count"),
        "unexpected_percent": outcome.get("unexpected_percent"),
        "examples": examples,
        "error": (result.get("exception_info") or {}).get("exception_message"),
    }


def short(value: Any, limit: int = 200) -> Any:
    return value[:limit] + "…" if isinstance(value, str) and len(value) > limit else value


def failure_message(
    summary: dict[str, Any],
    report: Path,
    *,
    subject: str,
    seen: Mapping[str, str] | None = None,
) -> str:
    """One line naming each failed rule, its expectation, what it observed, an example.

    `subject` names what failed ("the corpus"); `seen` replaces the observation of the
    rules it names (an aggregate people read better in their own terms)."""
    parts = []
    for rule in (r for r in summary["rules"] if not r["success"]):
        column = rule["kwargs"].get("column")
        what = f"{rule['rule']} ({rule['expectation']}{f' on {column}' if column else ''})"
        if seen and rule["rule"] in seen:
            observed = seen[rule["rule"]]
        elif rule["unexpected_count"] is not None:
            observed = f"{rule['unexpected_count']} unexpected ({rule['unexpected_percent']:.3g}%)"
        else:
            observed = f"observed {rule['observed']!r}"
        first = rule["examples"][0] if rule["examples"] else {"value": None}
        where = first.get("id") or first.get("ids")
        if first["value"] is not None:
            observed += f", e.g. {first['value']!r:.80}" + (f" in {where}" if where else "")
        elif where:
            observed += f", e.g. in {where}"
        parts.append(f"{what}: {observed}")
    return (
        f"{subject} failed {len(parts)} of {len(summary['rules'])} expectations: "
        f"{'; '.join(parts)}. Report: {report / 'data_docs' / 'index.html'} "
        f"and {report / 'validation.json'}"
    )


def keep_report(out: Path, report: Path) -> None:
    """Copy the report where it outlives the discarded staging dir, replacing an older
    failure of the same key whole (never a mix of two runs)."""
    tmp = report.with_name(f".{report.name}.tmp-{uuid.uuid4().hex[:8]}")
    shutil.copytree(out, tmp)
    if report.exists():
        aside = report.with_name(f".{report.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(report, aside)
        shutil.rmtree(aside, ignore_errors=True)
    try:
        os.replace(tmp, report)
    except OSError:  # a concurrent run of the same key kept the same report first
        shutil.rmtree(tmp, ignore_errors=True)
