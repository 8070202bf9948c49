"""The step plumbing of the steps that train or evaluate a Hugging Face model (sft, reward,
dpo, kto, grpo, evaluate): their common config, their inputs, the MLflow run the trainer logs
into, and their entry (`run` and `main` from one `StepSpec` and the step's body).

The model code they call (TRL trainer arguments, loading and saving `hf/`) is in
`model/posttrain.py`, which knows nothing of steps, settings or MLflow runs.
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
from orchard.steps import Manifest, StepConfig, StepContext, StepOutput, StepSpec

CHAT_DATA = "chat_data"

# The body of a model step: (config, inputs, ctx, MLflow tracking URI or None) -> output.
ModelStepBody = Callable[[Any, list[Manifest], StepContext, str | None], StepOutput]


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
    """The rows of one JSONL file (`sft/train.jsonl`, ...) of a chat_data output."""
    path = Path(chat.path) / name
    if not path.is_file():
        raise OrchardError(f"{path} is missing: pass a finished chat_data manifest")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise OrchardError(f"{path} is empty: the chat data has nothing to train on")
    return rows


@contextlib.contextmanager
def scoped_environ(**values: str) -> Iterator[None]:
    """`os.environ` with `values` set inside the block and as it was after it."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def tracked_run(step: str, key: str, tracking_uri: str | None) -> Iterator[str | None]:
    """An MLflow run the trainer's MLflow callback logs into (it reuses an active run);
    yields its id, or None without a tracking server.

    The callback reads its server and experiment from `MLFLOW_TRACKING_URI` and
    `MLFLOW_EXPERIMENT_NAME` only: they are set for the block and restored after it."""
    if not tracking_uri:
        yield None
        return
    import mlflow

    experiment_name = f"orchard-{step}"  # orchard.steps logs the manifest into this run
    with scoped_environ(MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_EXPERIMENT_NAME=experiment_name):
        mlflow.set_tracking_uri(tracking_uri)
        experiment = mlflow.set_experiment(experiment_name)
        with mlflow.start_run(
            experiment_id=experiment.experiment_id,
            run_name=f"{step}-{key}",
            tags={"orchard.step": step, "orchard.key": key},
        ) as run:
            yield run.info.run_id


def model_step(
    spec: StepSpec, body: ModelStepBody
) -> tuple[Callable[..., Manifest], Callable[[list[str] | None], int]]:
    """`run` and `main` of a step module whose body is `body(config, inputs, ctx,
    tracking_uri)`: `run(config, inputs, settings, name, force)` runs it under the
    settings' data root and MLflow server, `main(argv)` is its command line."""

    def run(
        config: StepConfig,
        inputs: list[Manifest],
        settings: Settings,
        name: str = spec.default_name,
        force: bool = False,
    ) -> Manifest:
        return spec.run(
            settings,
            config,
            lambda ctx: body(config, inputs, ctx, settings.mlflow_uri),
            inputs,
            name,
            force,
        )

    def main(argv: list[str] | None = None) -> int:
        return spec.main(run, argv)

    run.__doc__ = f"Run the {spec.step} step on `inputs`; return its manifest."
    return run, main
