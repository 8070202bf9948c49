"""What the stage DAGs share: their `@dag` arguments, the trigger form's upstream-manifest
Param, which upstream output a run builds on, and the body of a step task (one Ray job).

DAG files import this module when Airflow parses them, which is often: at module level it
imports only pendulum and `airflow.sdk`; everything else is imported inside the functions
that tasks call.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param

DAG_DEFAULTS: dict[str, Any] = {
    "start_date": pendulum.datetime(2026, 1, 1, tz="UTC"),
    "catchup": False,
    # Two runs of one step key would train into the same work directory: one at a time.
    "max_active_runs": 1,
    # A retried task re-attaches to its step's Ray job, or resumes from the step's work
    # directory (a pretraining run from its last checkpoint).
    "default_args": {"retries": 2, "retry_delay": timedelta(seconds=20)},
}
"""The `@dag` arguments of a stage that an upstream asset starts (tokenizer, pretrain,
posttrain): `@dag(dag_id=..., schedule=[ASSET], ..., **DAG_DEFAULTS)`."""


def manifest_param(step: str, output: str) -> Param:
    """The trigger form's optional first Param of a stage: which finished `step` output
    (`output`, e.g. "tokenized corpus") to build on. Left empty (None; "" is taken the same
    way), the run builds on what `upstream_manifest` finds."""
    return Param(
        None,
        type=["null", "string"],
        title=f"{output[0].upper()}{output[1:]} manifest",
        description=f"A {step} step's manifest.json, or its directory. Empty: the asset "
        f"event that triggered the run, else the newest {output}.",
    )


def upstream_manifest(context: dict, asset: Any, given: str | None, step: str) -> str:
    """Which upstream output to build on: the Param when given, else the asset event that
    triggered this run, else the newest finished `step` output. Its manifest.json path."""
    from pathlib import Path

    from airflow.sdk.exceptions import AirflowFailException

    from orchard.settings import load_settings
    from orchard.steps import latest
    from orchard.storage import Storage, is_uri, join, storage_for

    settings = load_settings()
    if given:
        if is_uri(given):  # an s3:// data root: the manifest object or its directory
            directory = given.rstrip("/").removesuffix("/manifest.json")
            if not storage_for(directory, settings).is_file(join(directory, "manifest.json")):
                raise AirflowFailException(f"no manifest at {given}: give a finished {step} output")
            return join(directory, "manifest.json")
        path = Path(given)
        path = path / "manifest.json" if path.is_dir() else path
        if not path.is_file():
            raise AirflowFailException(f"no manifest at {given}: give a finished {step} output")
        return str(path)
    events = (context.get("triggering_asset_events") or {}).get(asset) or []
    for event in reversed(list(events)):
        manifest = (event.extra or {}).get("manifest")
        if manifest and (
            storage_for(manifest, settings).is_file(manifest)
            if is_uri(manifest)
            else Path(manifest).is_file()
        ):
            return manifest
    newest = latest(Storage.from_settings(settings), step)
    if newest is None:
        raise AirflowFailException(
            f"no finished {step} output yet: run the DAG that makes it first"
        )
    return join(newest.path, "manifest.json")


def step_job(
    context: dict,
    params: dict,
    module: str,
    name: str,
    config: Any,
    inputs: list[str],
    *,
    step: str | None = None,
    settings: Any = None,
):
    """The body of a step task: run `ray_jobs.<module>` as a Ray job of this task run on
    the upstream outputs `inputs` (directories, or their manifest.json paths), with the
    Params' *Rebuild* (`force`). Returns the step's `Manifest`; a finished step is reused
    without a job. `step` is the step's name when it is not the module's."""
    from pathlib import Path

    from orchard.ray_submit import run_step_job, submission_base
    from orchard.settings import load_settings
    from orchard.steps import MANIFEST, Manifest

    step = step or module
    directories = [
        str(p).rstrip("/").removesuffix(f"/{MANIFEST}")
        if "://" in str(p)
        else Path(p).parent
        if Path(p).name == MANIFEST
        else Path(p)
        for p in inputs
    ]
    return run_step_job(
        settings or load_settings(),
        module=module,
        step=step,
        name=name,
        config=config,
        inputs=[Manifest.read(directory) for directory in directories],
        base_id=submission_base(context["dag"].dag_id, context["run_id"], step),
        force=params["force"],
    )
