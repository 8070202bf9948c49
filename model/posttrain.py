"""What the TRL post-training steps (sft, reward, dpo, grpo) share: their common config,
reading their inputs, the trainer arguments, MLflow tracking and saving the result as a
Hugging Face directory (`hf/`) that evaluation, registration and serving load.

Every trainer runs in fp32 on a CPU host (`use_cpu`, no bf16) and on the accelerator
elsewhere; losses and rewards go to MLflow experiment `orchard-<step>`, into the one run
of the step, which also gets its params and manifest.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from orchard.errors import OrchardError
from orchard.settings import Settings
from orchard.steps import Manifest, StepConfig, StepContext, StepOutput, run_step

CHAT_DATA = "chat_data"


class TrainStepConfig(StepConfig):
    """Fields every post-training step has."""

    steps: int = Field(100, ge=1, description="Optimizer steps.")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate (cosine decay, warmup).")
    batch_size: int = Field(8, ge=1, description="Examples per device per step.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    max_length: int = Field(256, ge=16, description="Tokens of a conversation trained on.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps warming up.")
    seed: int = Field(0, description="Seed of data order and initialisation.")
    logging_steps: int = Field(10, ge=1, description="Steps between logged losses.")
    not_in_key: ClassVar[frozenset[str]] = frozenset({"logging_steps"})


def split_inputs(
    step: str, inputs: list[Manifest], models: list[str], optional: tuple[str, ...] = ()
) -> tuple[Manifest, dict[str, Manifest]]:
    """The one chat_data manifest and the models by role. `models` names the roles in
    order: "policy" (any step with a causal LM in hf/) and "reward" (the reward step)."""
    chat = [m for m in inputs if m.step == CHAT_DATA]
    rewards = [m for m in inputs if m.step == "reward"]
    policies = [m for m in inputs if m.step not in (CHAT_DATA, "reward")]
    found: dict[str, Manifest] = {}
    wanted = {"policy": policies, "reward": rewards}
    ok = len(chat) == 1
    for role in {*models, *optional}:
        group = wanted[role]
        ok = ok and (len(group) == 1 or (role in optional and not group))
        if group:
            found[role] = group[0]
    extra = [m for role, group in wanted.items() if role not in {*models, *optional} for m in group]
    if not ok or extra:
        roles = ", ".join([*models, *(f"optional {r}" for r in optional)])
        raise OrchardError(
            f"{step} takes one chat_data manifest and one model per role ({roles}); got "
            f"{[m.step for m in inputs]}"
        )
    for manifest in found.values():
        if not (Path(manifest.path) / "hf" / "config.json").is_file():
            raise OrchardError(f"{manifest.path} ({manifest.step}) has no hf/ model directory")
    return chat[0], found


def read_rows(chat: Manifest, name: str) -> list[dict[str, Any]]:
    path = Path(chat.path) / name
    if not path.is_file():
        raise OrchardError(f"{path} is missing: pass a finished chat_data manifest")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise OrchardError(f"{path} is empty: the chat data has nothing to train on")
    return rows


def spread(rows: list[Any], limit: int) -> list[Any]:
    """At most `limit` rows evenly spaced over `rows` (all of them if they fit): a sample of
    a held-out file that covers every page and kind, since chat_data writes them in runs."""
    if len(rows) <= limit:
        return list(rows)
    return [rows[i * len(rows) // limit] for i in range(limit)]


def train_rows(rows: list[dict[str, Any]], config: TrainStepConfig) -> list[dict[str, Any]]:
    """The training rows `config.steps` can reach: a seeded random sample of steps × batch ×
    accumulation rows (all of them when there are fewer). The trainer's sampler shuffles
    with the same seed either way; this only spares tokenizing rows no step would see."""
    needed = config.steps * config.batch_size * config.grad_accum
    if len(rows) <= needed:
        return rows
    import random

    return random.Random(config.seed).sample(rows, needed)


def dataset(rows: list[dict[str, Any]], columns: tuple[str, ...]):
    import datasets
    from datasets import Dataset

    datasets.disable_progress_bars()  # one bar per map() in a job log says nothing
    return Dataset.from_list([{c: row[c] for c in columns} for row in rows])


def load_tokenizer(hf_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    if not getattr(tokenizer, "chat_template", None):
        raise OrchardError(f"the tokenizer in {hf_dir} has no chat template")
    return tokenizer


def load_causal_lm(hf_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)


def trainer_args(config: TrainStepConfig, work: Path, tracking: bool) -> dict[str, Any]:
    """Keyword arguments every TRL config class takes, from the step's config."""
    import torch

    on_gpu = torch.cuda.is_available()
    return {
        "output_dir": str(work / "trainer"),
        "max_steps": config.steps,
        "learning_rate": config.lr,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "lr_scheduler_type": "cosine",
        "warmup_steps": int(config.warmup_ratio * config.steps),
        "logging_steps": config.logging_steps,
        "seed": config.seed,
        "data_seed": config.seed,
        "use_cpu": not on_gpu,
        "bf16": on_gpu and torch.cuda.is_bf16_supported(),
        "save_strategy": "no",
        "report_to": ["mlflow"] if tracking else "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


@contextlib.contextmanager
def tracked_run(step: str, key: str, tracking_uri: str | None) -> Iterator[str | None]:
    """An MLflow run the trainer's MLflow callback logs into (it reuses an active run);
    yields its id, or None without a tracking server."""
    if not tracking_uri:
        yield None
        return
    import mlflow

    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    # The experiment of every step's run (orchard.steps logs the manifest into this run).
    os.environ["MLFLOW_EXPERIMENT_NAME"] = f"orchard-{step}"
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.set_experiment(f"orchard-{step}")
    with mlflow.start_run(
        experiment_id=experiment.experiment_id,
        run_name=f"{step}-{key}",
        tags={"orchard.step": step, "orchard.key": key},
    ) as run:
        yield run.info.run_id


def save_model(model, tokenizer, out: Path) -> None:
    """`out/hf`: safetensors weights, the tokenizer with its chat template, and a
    generation config that stops at the end of a turn."""
    target = out / "hf"
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)


def logged(trainer, name: str) -> list[float]:
    """Every value of metric `name` the trainer logged, in order."""
    return [entry[name] for entry in trainer.state.log_history if name in entry]


def run_model_step(
    step: str,
    body: Callable[[Any, list[Manifest], StepContext, str | None], StepOutput],
    config: StepConfig,
    inputs: list[Manifest],
    settings: Settings,
    name: str,
    force: bool,
) -> Manifest:
    """`run_step` of a post-training or evaluation step whose body is
    `body(config, inputs, ctx, mlflow_uri)`, under the settings' data root and MLflow."""
    return run_step(
        step=step,
        name=name,
        config=config,
        data_root=Path(settings.data_dir),
        body=lambda ctx: body(config, inputs, ctx, settings.mlflow_uri),
        inputs=inputs,
        force=force,
        mlflow_uri=settings.mlflow_uri,
    )
