"""A registered version's model card, generated from the registry: what the model was
made from (the data steps and their counts, the tokenizer), every run behind it with links
to MLflow and Airflow, its eval scores against the champion's, what decontamination
removed, the feedback datasets it learned from, and its latest A/B review.

The card is read from MLflow alone (the version's tags, the runs its `orchard.lineage.*`
tags name), so the platform API (the admin models page) and the `orchard_ab_review` DAG
(which logs it as the artifact `model_card/` of the version's run) build the same card.

Tags it reads (ray_jobs/register.py writes the first four):
- `orchard.model_step`, `orchard.lineage.<step>` (manifest path),
  `orchard.lineage.<step>.mlflow_run`, `eval.<metric>`, `orchard.decontamination.<set>`;
- `orchard.feedback.*` (the loop's register step: dataset version, counts, the champion it
  started from) or `loop.feedback_dataset*`: the feedback datasets it learned from;
- `orchard.airflow_run.<dag_id>` = the Airflow run that made or reviewed the version;
- `ab.review`: the latest A/B review as JSON (orchard.ab_stats.review).
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

CARD_DIR = "model_card"
REVIEW_TAG = "ab.review"
FEEDBACK_TAG = "loop.feedback_dataset"
# What the loop's register step writes (ray_jobs/register.py feedback_tags, branch
# w3-feedback): the dataset version, the champion it started from, the row counts.
FEEDBACK_PREFIX = "orchard.feedback."
LOOP_TAGS = (f"{FEEDBACK_PREFIX}version", FEEDBACK_TAG)
AIRFLOW_RUN_TAG = "orchard.airflow_run."
# Which DAG runs each step (docs/steps.md), for the link when no run id is recorded.
STEP_DAGS = {
    "crawl": "orchard_data",
    "extract": "orchard_data",
    "curate": "orchard_data",
    "mix": "orchard_data",
    "validate": "orchard_data",
    "tokenizer": "orchard_tokenizer",
    "tokenize": "orchard_pretrain",
    "pretrain": "orchard_pretrain",
    "ingest": "orchard_data",
    "import": "orchard_import",
    "import_model": "orchard_import",
    "chat_data": "orchard_posttrain",
    "sft": "orchard_posttrain",
    "reward": "orchard_posttrain",
    "dpo": "orchard_posttrain",
    "kto": "orchard_posttrain",
    "grpo": "orchard_posttrain",
    "evaluate": "orchard_posttrain",
    "feedback": "orchard_feedback",
    "register": "orchard_posttrain",
}
DATA_STEPS = (
    "crawl",
    "ingest",
    "curate",
    "mix",
    "tokenize",
    "import",
    "import_model",
    "chat_data",
    "feedback",
)


def sig3(value: str | float | None) -> str:
    """3 significant figures (a value that is not a number is shown as it is)."""
    if value is None:
        return "—"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if number == 0 or 1e-4 <= abs(number) < 1e6:
        return f"{float(f'{number:.3g}'):g}"  # 1234.5 -> 1230, not 1.23e+03
    return f"{number:.2e}"


def _count(value: float) -> str:
    number = int(value)
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(number) >= size:
            return f"{number / size:.3g}{unit}"
    return str(number)


def _link(label: str, base: str | None, path: str) -> dict[str, str | None]:
    return {"label": label, "url": f"{base}{path}" if base else None}


def _web(url: str | None) -> str | None:
    return url.rstrip("/") if url and url.startswith(("http://", "https://")) else None


def build_card(
    version: str,
    aliases: list[str],
    tags: dict[str, str],
    champion_tags: dict[str, str] | None,
    runs: dict[str, dict[str, Any]],
    *,
    mlflow_url: str | None,
    airflow_url: str | None,
) -> dict[str, Any]:
    """The card as a JSON-ready dict (the platform API's `ModelCardPublic` less `artifact`).

    `runs`: MLflow run id -> {"experiment_id": ..., "metrics": {...}} for the runs the
    lineage tags name (missing runs are shown without counts and links)."""
    mlflow_url, airflow_url = _web(mlflow_url), _web(airflow_url)
    airflow_runs = {
        key.removeprefix(AIRFLOW_RUN_TAG): value
        for key, value in tags.items()
        if key.startswith(AIRFLOW_RUN_TAG)
    }
    steps = sorted(
        key.removeprefix("orchard.lineage.")
        for key in tags
        if key.startswith("orchard.lineage.") and not key.endswith(".mlflow_run")
    )
    run_rows, data = [], {}
    for step in steps:
        run_id = tags.get(f"orchard.lineage.{step}.mlflow_run")
        run = runs.get(run_id or "", {})
        mlflow = None
        if run_id:
            experiment = run.get("experiment_id")
            path = f"/#/experiments/{experiment}/runs/{run_id}" if experiment else None
            mlflow = _link(f"run {run_id[:8]}", mlflow_url if path else None, path or "")
        dag = STEP_DAGS.get(step)
        airflow = None
        if dag and dag in airflow_runs:
            airflow = _link(
                f"{dag} {airflow_runs[dag]}", airflow_url, f"/dags/{dag}/runs/{airflow_runs[dag]}"
            )
        elif dag:
            airflow = _link(f"{dag} runs", airflow_url, f"/dags/{dag}/runs")
        manifest = PurePosixPath(tags[f"orchard.lineage.{step}"].rstrip("/")).name
        run_rows.append({"step": step, "manifest": manifest, "mlflow": mlflow, "airflow": airflow})
        counts = {
            name.removeprefix("count."): value
            for name, value in (run.get("metrics") or {}).items()
            if name.startswith("count.") and not name.startswith("count.decontamination.")
        }
        if step in DATA_STEPS and counts:
            data[step] = ", ".join(f"{name} {_count(v)}" for name, v in sorted(counts.items()))
    for dag, run_id in sorted(airflow_runs.items()):
        if dag not in {STEP_DAGS.get(step) for step in steps}:
            run_rows.append(
                {
                    "step": dag,
                    "manifest": "",
                    "mlflow": None,
                    "airflow": _link(f"{dag} {run_id}", airflow_url, f"/dags/{dag}/runs/{run_id}"),
                }
            )
    champion_tags = champion_tags or {}
    metrics = [
        {
            "name": key.removeprefix("eval.").removeprefix("lm_eval/"),
            "value": sig3(value),
            "champion": sig3(champion_tags[key]) if key in champion_tags else None,
        }
        for key, value in sorted(tags.items())
        if key.startswith("eval.") and not key.endswith("/examples")
    ]
    tokenizer = tags.get("orchard.tokenizer")
    if tokenizer is None and "tokenizer" in steps:
        tokenizer = PurePosixPath(tags["orchard.lineage.tokenizer"].rstrip("/")).name
    review = None
    if REVIEW_TAG in tags:
        try:
            review = json.loads(tags[REVIEW_TAG])
        except ValueError:
            review = None
    card = {
        "version": version,
        "aliases": sorted(aliases),
        "model_step": tags.get("orchard.model_step"),
        "tokenizer": tokenizer,
        "data": data,
        "runs": run_rows,
        "metrics": metrics,
        "decontamination": {
            key.removeprefix("orchard.decontamination."): value
            for key, value in sorted(tags.items())
            if key.startswith("orchard.decontamination.")
        },
        "feedback_datasets": _feedback_datasets(tags),
        "review": review,
    }
    card["markdown"] = markdown(card)
    return card


def _feedback_datasets(tags: dict[str, str]) -> list[str]:
    """The feedback dataset versions the model learned from, with their counts."""
    found = [value for key, value in sorted(tags.items()) if key.startswith(FEEDBACK_TAG)]
    version = tags.get(f"{FEEDBACK_PREFIX}version")
    if version:
        counts = [
            f"{label} {tags[FEEDBACK_PREFIX + key]}"
            for key, label in (
                ("feedback_pairs", "feedback pairs"),
                ("original_pairs", "original pairs"),
                ("dataset_users", "users"),
                ("dataset_opted_out_accounts", "opted-out accounts left out"),
            )
            if FEEDBACK_PREFIX + key in tags
        ]
        start = tags.get(f"{FEEDBACK_PREFIX}from_champion")
        if start and start != "none":
            counts.append(f"from champion v{start}")
        found.insert(0, f"{version} ({', '.join(counts)})" if counts else version)
    return found


def _interval(entry: dict[str, Any], percent: bool) -> str:
    if entry.get("value") is None:
        return "—"
    scale, unit = (100, " %") if percent else (1, "")
    text = f"{sig3(entry['value'] * scale)}{unit}"
    if entry.get("low") is not None:
        text += f" [{sig3(entry['low'] * scale)}, {sig3(entry['high'] * scale)}]"
    return text


def markdown(card: dict[str, Any]) -> str:
    """The card as Markdown (the MLflow artifact, and what an admin may copy)."""
    lines = [f"# Model card: version {card['version']}", ""]
    if card["aliases"]:
        lines += [f"Aliases: {', '.join(card['aliases'])}.", ""]
    lines += [
        f"- Made by the **{card['model_step'] or 'unknown'}** step",
        f"- Tokenizer: {card['tokenizer'] or 'not recorded'}",
        "",
        "## Training data",
    ]
    lines += [f"- {step}: {counts}" for step, counts in card["data"].items()] or ["- not recorded"]
    lines += ["", "## Runs", "", "| step | manifest | MLflow | Airflow |", "|---|---|---|---|"]
    for run in card["runs"]:
        cells = []
        for link in (run["mlflow"], run["airflow"]):
            if link is None:
                cells.append("—")
            else:
                cells.append(f"[{link['label']}]({link['url']})" if link["url"] else link["label"])
        lines.append(f"| {run['step']} | {run['manifest'] or '—'} | {cells[0]} | {cells[1]} |")
    lines += ["", "## Eval scores", "", "| metric | this version | champion |", "|---|---|---|"]
    for metric in card["metrics"]:
        lines.append(f"| {metric['name']} | {metric['value']} | {metric['champion'] or '—'} |")
    lines += ["", "## Decontamination (13-gram overlap with the eval tasks)"]
    lines += [f"- {name}: {value}" for name, value in card["decontamination"].items()] or [
        "- not recorded"
    ]
    lines += ["", "## Feedback datasets"]
    lines += [f"- {name}" for name in card["feedback_datasets"]] or ["- none"]
    lines += ["", "## A/B review"]
    review = card["review"]
    if not review:
        lines.append("- no review yet")
    else:
        lines += [
            f"Verdict: **{review['verdict']}** ({review['reason']}); {review['test']}, "
            f"α = {review['alpha']}.",
            "",
            "| metric | champion | challenger |",
            "|---|---|---|",
        ]
        sides = review["sides"]
        for name in sides["champion"]:
            if name in ("answers", "rated"):
                continue
            percent = name.endswith("_rate")
            lines.append(
                f"| {name} | {_interval(sides['champion'][name], percent)} | "
                f"{_interval(sides['challenger'][name], percent)} |"
            )
        lines.append(
            f"| answers (rated) | {sides['champion']['answers']} ({sides['champion']['rated']}) | "
            f"{sides['challenger']['answers']} ({sides['challenger']['rated']}) |"
        )
    return "\n".join(lines) + "\n"


# -- reading and writing MLflow --------------------------------------------------------------
def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def card_for_version(
    tracking_uri: str,
    name: str,
    version: str,
    *,
    mlflow_url: str | None = None,
    airflow_url: str | None = None,
) -> dict[str, Any]:
    """Build version `version`'s card from the registry (MlflowException when it is not)."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    found = client.get_model_version(name, version)
    model = client.get_registered_model(name)
    aliases = {alias: str(v) for alias, v in model.aliases.items()}
    champion = aliases.get("champion")
    champion_tags = None
    if champion and champion != str(version):
        champion_tags = dict(client.get_model_version(name, champion).tags)
    tags = dict(found.tags)
    runs: dict[str, dict[str, Any]] = {}
    for key, run_id in tags.items():
        if key.endswith(".mlflow_run") and run_id not in runs:
            try:
                run = client.get_run(run_id)
            except MlflowException:
                continue
            runs[run_id] = {"experiment_id": run.info.experiment_id, "metrics": run.data.metrics}
    card = build_card(
        str(version),
        [alias for alias, v in aliases.items() if v == str(version)],
        tags,
        champion_tags,
        runs,
        mlflow_url=mlflow_url,
        airflow_url=airflow_url,
    )
    card["artifact"] = None
    if found.run_id:
        names = {PurePosixPath(f.path).name for f in client.list_artifacts(found.run_id, CARD_DIR)}
        if "model_card.md" in names:
            card["artifact"] = f"runs:/{found.run_id}/{CARD_DIR}/model_card.md"
    return card


def log_card(tracking_uri: str, name: str, version: str, card: dict[str, Any]) -> str:
    """Log the card (Markdown and JSON) as artifacts of the version's run; returns the
    Markdown's `runs:/` URI."""
    client = _client(tracking_uri)
    run_id = client.get_model_version(name, version).run_id
    if not run_id:
        raise ValueError(f"version {version} of {name} has no MLflow run to log its card to")
    client.log_text(run_id, card["markdown"], f"{CARD_DIR}/model_card.md")
    body = {key: value for key, value in card.items() if key not in ("markdown", "artifact")}
    client.log_dict(run_id, body, f"{CARD_DIR}/model_card.json")
    return f"runs:/{run_id}/{CARD_DIR}/model_card.md"
