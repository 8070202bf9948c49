"""The register step: a trained chat model becomes a version of `orchard-chat` in MLflow.

Input: the manifest of the step whose `hf/` directory is the model (pretrain, sft, dpo, kto,
grpo, …) and, optionally, the evaluate manifest of that same model. The model is logged
with MLflow's `transformers` flavor (tokenizer and chat template included) through
`orchard.registry.register_hf_model`, registered as a new version, given the alias
`challenger`, and tagged with every manifest behind it (walked through the manifests'
inputs down to the crawl or the imported base model, whose source, licence, sha256 and
tokenizer are `orchard.base.*`), with the evaluation metrics (`eval.<name>`, lm-eval's as
`eval.lm_eval/<task>/<metric>`) and with the decontamination counts of every training set
behind it (`orchard.decontamination.<set>`: "<removed> of <checked> removed"). Its
description is the model card (`model_card`): the lm-eval scores and the decontamination
counts in words, also kept as `model_card.md`. `champion` is never moved here,
except that `champion_if_none` lets the first version of a registry with no champion yet
become it, so a fresh install has a model to serve.

Registration is the one step whose effect lives outside its output directory, so it is
made idempotent on its own: the version carries the step key as a tag, and a retried
attempt that finds a version with its key reuses it instead of registering a second one.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

from pydantic import Field

from orchard.errors import OrchardError
from orchard.registry import BASE_TAG
from orchard.settings import Settings
from orchard.steps import Manifest, StepConfig, StepContext, StepOutput, StepSpec, lineage

log = logging.getLogger("orchard.register")

KEY_TAG = "orchard.register_key"
EVALUATE = "evaluate"
IMPORT = "import_model"


class RegisterConfig(StepConfig):
    model_name: str = Field(
        "orchard-chat", min_length=1, description="Registered model name in MLflow."
    )
    alias: str = Field(
        "challenger", pattern=r"^[a-z][a-z0-9_-]*$", description="Alias moved to the version."
    )
    champion_if_none: bool = Field(
        False,
        description="Also make the new version `champion` when the registry has none yet.",
    )


def _split(inputs: list[Manifest]) -> tuple[Manifest, Manifest | None]:
    models = [m for m in inputs if m.step != EVALUATE]
    evaluations = [m for m in inputs if m.step == EVALUATE]
    if len(models) != 1 or len(evaluations) > 1:
        raise OrchardError(
            "register takes one model manifest (a step with an hf/ directory: pretrain, "
            "sft, dpo, kto, grpo) and at most one evaluate manifest; got "
            f"{[m.step for m in inputs]}"
        )
    model = models[0]
    if not (Path(model.path) / "hf" / "config.json").is_file():
        raise OrchardError(
            f"{model.path} has no hf/config.json: pass the manifest of a step that "
            "writes a Hugging Face model (pretrain, sft, dpo, kto, grpo)"
        )
    evaluation = evaluations[0] if evaluations else None
    if evaluation and model.key not in {ref.key for ref in evaluation.inputs}:
        raise OrchardError(
            f"the evaluation {evaluation.path} is not of the model {model.path}: "
            "pass the evaluate manifest whose input is this model"
        )
    return model, evaluation


def version_tags(model: Manifest, evaluation: Manifest | None) -> dict[str, str]:
    """The tags a registered version carries: one per manifest behind it, the MLflow run
    of each, and the evaluation metrics."""
    behind = lineage([model] + ([evaluation] if evaluation else []))
    tags = {"orchard.model_step": model.step}
    for step, manifest in sorted(behind.items()):
        # ref.path: where it is published (an s3:// location), not this host's local copy.
        tags[f"orchard.lineage.{step}"] = manifest.ref.path
        if manifest.mlflow_run_id:
            tags[f"orchard.lineage.{step}.mlflow_run"] = manifest.mlflow_run_id
    tags |= base_tags(behind)
    for name, value in sorted((evaluation.metrics if evaluation else {}).items()):
        tags[f"eval.{name}"] = f"{value:.6g}"
    for name, (removed, checked) in decontamination(behind.values()).items():
        tags[f"orchard.decontamination.{name}"] = f"{removed} of {checked} removed"
    return tags | feedback_tags(behind)


def feedback_tags(behind: dict[str, Manifest]) -> dict[str, str]:
    """A model trained on users' feedback (orchard_feedback → dpo or kto): which feedback
    dataset version, the method, the champion it started from, and the row counts."""
    feedback = behind.get("feedback")
    trained = next((m for m in behind.values() if "feedback_version" in m.facts), None)
    if feedback is None or trained is None:
        return {}
    tags = {
        "orchard.feedback.version": feedback.key,
        "orchard.feedback.dataset": feedback.ref.path,
        "orchard.feedback.from_champion": trained.facts.get("from_champion") or "none",
        "orchard.feedback.method": trained.step,
    }
    for name in ("feedback_pairs", "original_pairs", "feedback_rows", "original_rows"):
        if name in trained.counts:
            tags[f"orchard.feedback.{name}"] = str(trained.counts[name])
    for name in (
        "records",
        "pairs",
        "unpaired",
        "labelled_answers",
        "users",
        "opted_out_accounts",
    ):
        if name in feedback.counts:
            tags[f"orchard.feedback.dataset_{name}"] = str(feedback.counts[name])
    return tags


def base_tags(behind: dict[str, Manifest]) -> dict[str, str]:
    """`orchard.base.*`: the imported base model a version was adapted from (its source,
    licence, sha256, architecture and name from the import's manifest, and the tokenizer
    it kept); none for a model pretrained from scratch, whose tokenizer is the
    `orchard.lineage.tokenizer` step."""
    base = behind.get(IMPORT)
    if base is None:
        return {}
    tags = {
        f"{BASE_TAG}.{fact}": str(base.facts[fact])
        for fact in ("source", "licence", "sha256", "architecture", "display_name")
        if fact in base.facts
    }
    tags[f"{BASE_TAG}.tokenizer"] = f"{base.ref.path.rstrip('/')}/tokenizer"
    return tags


def decontamination(manifests: Iterable[Manifest]) -> dict[str, tuple[int, int]]:
    """Training set -> (rows removed, rows checked), from the manifests' counts
    (`decontamination.<set>.removed` / `.checked`, written by mix and chat_data)."""
    found: dict[str, tuple[int, int]] = {}
    for manifest in manifests:
        for key, checked in manifest.counts.items():
            if key.startswith("decontamination.") and key.endswith(".checked"):
                name = key.removeprefix("decontamination.").removesuffix(".checked")
                found[name] = (manifest.counts.get(f"decontamination.{name}.removed", 0), checked)
    return dict(sorted(found.items()))


def model_card(model: Manifest, evaluation: Manifest | None) -> str:
    """The registered version's description: what the model is, its lm-eval scores on
    Orchard's local tasks, and what decontamination removed from its training data."""
    behind = lineage([model] + ([evaluation] if evaluation else []))
    published = model.ref.path.rstrip("/").rsplit("/", 1)[-1]  # not the local copy's name
    lines = [f"Orchard chat model from the {model.step} step ({published})."]
    base = base_tags(behind)
    if base:
        lines.append(
            f"Adapted from the base model {base.get(f'{BASE_TAG}.display_name', '?')} "
            f"({base.get(f'{BASE_TAG}.source', '?')}, licence "
            f"{base.get(f'{BASE_TAG}.licence', 'unknown')}, sha256 "
            f"{base.get(f'{BASE_TAG}.sha256', '?')})."
        )
    scores: dict[str, list[str]] = {}
    for name, value in sorted((evaluation.metrics if evaluation else {}).items()):
        if name.startswith("lm_eval/") and name.count("/") == 2:
            _, task, metric = name.split("/")
            if metric != "examples":
                scores.setdefault(task, []).append(f"{metric} {value:.4g}")
    if scores:
        lines.append(
            "lm-eval (local held-out tasks): "
            + "; ".join(f"{task}: {', '.join(values)}" for task, values in scores.items())
            + "."
        )
    else:
        lines.append("lm-eval: not run.")
    counts = decontamination(behind.values())
    if counts:
        lines.append(
            "Decontamination (13-gram overlap with the eval tasks): "
            + "; ".join(f"{name} {r} of {c} rows removed" for name, (r, c) in counts.items())
            + "."
        )
    else:
        lines.append("Decontamination: no training set behind this model records it.")
    return "\n".join(lines)


def register(
    config: RegisterConfig, inputs: list[Manifest], ctx: StepContext, tracking_uri: str
) -> StepOutput:
    import mlflow
    from mlflow import MlflowClient

    from orchard.registry import aliases, find_version, register_hf_model

    model, evaluation = _split(inputs)
    tags = version_tags(model, evaluation) | {KEY_TAG: ctx.key}
    version = find_version(tracking_uri, config.model_name, KEY_TAG, ctx.key)
    run_id = None
    if version:
        log.info("version %s of %s already registered by this step", version, config.model_name)
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        run_id = client.get_model_version(config.model_name, version).run_id
        client.set_registered_model_alias(config.model_name, config.alias, version)
    else:
        mlflow.set_tracking_uri(tracking_uri)
        experiment = mlflow.set_experiment("orchard-register")
        with mlflow.start_run(
            experiment_id=experiment.experiment_id,
            run_name=f"{config.model_name}-{ctx.key}",
            tags={"orchard.step": "register", "orchard.key": ctx.key},
        ) as run:
            run_id = run.info.run_id
            if evaluation:
                mlflow.log_metrics(evaluation.metrics)
            version = register_hf_model(
                Path(model.path) / "hf",
                tracking_uri=tracking_uri,
                name=config.model_name,
                alias=config.alias,
                tags=tags,
            )
    card = model_card(model, evaluation)
    (ctx.out / "model_card.md").write_text(card + "\n")
    MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).update_model_version(
        config.model_name, version, description=card
    )
    became_champion = False
    if config.champion_if_none and "champion" not in aliases(tracking_uri, config.model_name):
        MlflowClient(
            tracking_uri=tracking_uri, registry_uri=tracking_uri
        ).set_registered_model_alias(config.model_name, "champion", version)
        became_champion = True
        log.info("no champion yet: version %s is champion", version)
    record = {
        "model_name": config.model_name,
        "version": version,
        "uri": f"models:/{config.model_name}/{version}",
        "aliases": [config.alias] + (["champion"] if became_champion else []),
        "tags": tags,
        "description": card,
    }
    (ctx.out / "registered.json").write_text(json.dumps(record, indent=2))
    log.info("registered %s version %s as @%s", config.model_name, version, config.alias)
    return StepOutput(counts={"version": int(version)}, mlflow_run_id=run_id)


STEP = StepSpec("register", RegisterConfig, default_name="model", doc=__doc__)


def run(
    config: RegisterConfig,
    inputs: list[Manifest],
    settings: Settings,
    name: str = STEP.default_name,
    force: bool = False,
) -> Manifest:
    if not settings.mlflow_uri:
        raise OrchardError("register needs the MLflow server: set ORCHARD_MLFLOW_URI")
    return STEP.run(
        settings,
        config,
        lambda ctx: register(config, inputs, ctx, settings.mlflow_uri),
        inputs,
        name,
        force,
    )


def main(argv: list[str] | None = None) -> int:
    return STEP.main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
