"""Steps as data: content-addressed outputs, manifests, skip-when-done.

Every `ray_jobs` step runs through `run_step`:

- its output directory is `<data_root>/<step>/<name>-<key>/`, where `key` hashes the
  step name, the config fields that change the result, and the keys of its inputs
  (`step_key`); fields that do not change the result (worker counts, log intervals)
  are declared in the config's `not_in_key` and left out;
- the step writes into a private staging directory next to it; `manifest.json` is
  written last, inside staging, and the directory is renamed into place, so the final
  path either holds a finished result or does not exist (a killed or retried task can
  never half-overwrite one);
- when the manifest already exists the step is skipped and that manifest returned;
  one written by another code version is reused with a loud warning, unless the caller
  forces a rebuild;
- it logs a run to MLflow (params, metrics, the manifest as an artifact) when a
  tracking URI is given.

The hash contract (same config -> same key; one result-changing field -> a new key) is
pinned by tests/unit/test_steps.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

import orchard

if TYPE_CHECKING:
    from orchard.settings import Settings

log = logging.getLogger("orchard.steps")

MANIFEST = "manifest.json"
KEY_LENGTH = 12


class StepConfig(BaseModel):
    """Base of every step's typed config: frozen, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    # Fields that do not change the step's result, left out of its key.
    not_in_key: ClassVar[frozenset[str]] = frozenset()

    def key_fields(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude=set(self.not_in_key))


class InputRef(BaseModel):
    step: str
    key: str
    path: str


class Manifest(BaseModel):
    """What a finished step made, from what, with which code: the lineage record."""

    step: str
    name: str
    key: str
    path: str
    config: dict[str, Any]
    inputs: list[InputRef] = []
    code_version: str
    counts: dict[str, int] = {}
    metrics: dict[str, float] = {}
    # Facts about the output that are not numbers (an imported model's licence, sha256).
    facts: dict[str, str] = {}
    timings: dict[str, float] = {}
    mlflow_run_id: str | None = None
    created_at: str

    @property
    def ref(self) -> InputRef:
        return InputRef(step=self.step, key=self.key, path=self.path)

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        return cls.model_validate_json((directory / MANIFEST).read_text())


@dataclass(frozen=True)
class StepContext:
    """Where a step's body works.

    `out` is the private staging directory: everything written there becomes the step's
    published output. `work` is scratch space that survives a killed attempt (same key
    -> same directory), for steps that resume (a crawl frontier, partial shards); it is
    removed once the step is published.
    """

    out: Path
    work: Path
    key: str


@dataclass
class StepOutput:
    """What a step's body reports; the files themselves are already in its directory.

    `artifacts` names output subdirectories (relative to `ctx.out`) to copy into the
    step's MLflow run as well, e.g. a validation report people open from the MLflow UI.
    `mlflow_run_id` is the run a long step already logs into while it works (loss curves):
    the manifest, params and artifacts then go into that run instead of a new one.
    `facts` are strings the manifest records and the MLflow run carries as
    `orchard.<fact>` tags (an imported model's source, licence, sha256).
    """

    counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    mlflow_run_id: str | None = None


def step_key(step: str, config: StepConfig, inputs: list[InputRef]) -> str:
    payload = {
        "step": step,
        "config": config.key_fields(),
        "inputs": sorted(f"{ref.step}:{ref.key}" for ref in inputs),
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:KEY_LENGTH]


@cache
def code_version() -> str:
    """The git commit of the code when run from a checkout, else the package version."""
    root = Path(orchard.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return f"git:{commit}"
    except (OSError, subprocess.SubprocessError):
        return f"orchard:{orchard.__version__}"


def _write_json_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_step(
    *,
    step: str,
    name: str,
    config: StepConfig,
    data_root: Path,
    body: Callable[[StepContext], StepOutput],
    inputs: list[Manifest] | None = None,
    force: bool = False,
    mlflow_uri: str | None = None,
) -> Manifest:
    """Run `body(context)` once per (config, inputs); return the step's manifest."""
    refs = [manifest.ref for manifest in inputs or []]
    key = step_key(step, config, refs)
    final = data_root / step / f"{name}-{key}"
    if (final / MANIFEST).exists() and not force:
        done = Manifest.read(final)
        if done.code_version != code_version():
            log.warning(
                "REUSING %s written by code %s (running %s): pass force=True to rebuild",
                final,
                done.code_version,
                code_version(),
            )
        else:
            log.info("skip %s: already done (%s)", step, final)
        return done

    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    work = final.parent / f".{final.name}.work"
    work.mkdir(exist_ok=True)
    started = time.monotonic()
    try:
        output = body(StepContext(out=staging, work=work, key=key))
        manifest = Manifest(
            step=step,
            name=name,
            key=key,
            path=str(final),
            config=config.model_dump(mode="json"),
            inputs=refs,
            code_version=code_version(),
            counts=output.counts,
            metrics=output.metrics,
            facts=output.facts,
            timings={"seconds": round(time.monotonic() - started, 3)},
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        if mlflow_uri:
            artifacts = {name: staging / name for name in output.artifacts}
            manifest.mlflow_run_id = _log_to_mlflow(
                mlflow_uri, manifest, artifacts, run_id=output.mlflow_run_id
            )
        _write_json_atomic(staging / MANIFEST, manifest.model_dump_json(indent=2))
        if (final / MANIFEST).exists() and not force:
            # A concurrent run of the same step finished first: keep its result.
            shutil.rmtree(staging, ignore_errors=True)
            return Manifest.read(final)
        _publish(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
    return manifest


def _publish(staging: Path, final: Path) -> None:
    """Rename the finished staging dir into place; a leftover without manifest goes."""
    if final.exists():
        # A forced rebuild, or an old layout without a manifest: move it aside first
        # so the final path is never a mix of two runs.
        aside = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, aside)
        os.replace(staging, final)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(staging, final)


def _log_to_mlflow(
    uri: str, manifest: Manifest, artifacts: dict[str, Path], run_id: str | None = None
) -> str:
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(f"orchard-{manifest.step}")
    tags = {"orchard.step": manifest.step, "orchard.key": manifest.key}
    tags |= {f"orchard.{name}": value for name, value in manifest.facts.items()}
    run_name = None if run_id else f"{manifest.name}-{manifest.key}"
    with mlflow.start_run(run_id=run_id, run_name=run_name, tags=tags) as run:
        mlflow.log_params(_flat(manifest.config))
        counts = {f"count.{name}": value for name, value in manifest.counts.items()}
        mlflow.log_metrics({**manifest.metrics, **counts})
        mlflow.log_dict(manifest.model_dump(mode="json"), MANIFEST)
        for name, directory in artifacts.items():
            mlflow.log_artifacts(str(directory), artifact_path=name)
    return run.info.run_id


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = str(value)[:500]
    return flat


def latest(data_root: Path, step: str) -> Manifest | None:
    """The newest finished output of `step` under `data_root` (by creation time), if any:
    what a manually triggered DAG builds on when no upstream run handed it a manifest."""
    done = [Manifest.read(path.parent) for path in (data_root / step).glob(f"*/{MANIFEST}")]
    return max(done, key=lambda manifest: manifest.created_at, default=None)


def ancestors(manifests: list[Manifest]) -> list[Manifest]:
    """`manifests` and every manifest behind them, nearest first, each once, found through
    the recorded inputs. An input whose directory is gone stands in by its key only."""
    seen: set[str] = set()
    found: list[Manifest] = []
    queue = list(manifests)
    while queue:
        manifest = queue.pop(0)
        if manifest.path in seen:
            continue
        seen.add(manifest.path)
        found.append(manifest)
        for ref in manifest.inputs:
            path = Path(ref.path)
            if (path / MANIFEST).is_file():
                queue.append(Manifest.read(path))
            elif ref.path not in seen:
                log.warning("lineage: %s (%s) is gone; recorded by its key only", path, ref.step)
                seen.add(ref.path)
                found.append(
                    Manifest(
                        step=ref.step,
                        name=path.name,
                        key=ref.key,
                        path=ref.path,
                        config={},
                        code_version="unknown",
                        created_at="",
                    )
                )
    return found


def lineage(manifests: list[Manifest]) -> dict[str, Manifest]:
    """Every step behind `manifests` -> its manifest (the nearest one for a step seen twice)."""
    found: dict[str, Manifest] = {}
    for manifest in ancestors(manifests):
        found.setdefault(manifest.step, manifest)
    return found


def locate(
    data_root: Path, step: str, name: str, config: StepConfig, inputs: list[Manifest]
) -> Path:
    """Where `run_step` puts (or has put) this step's output, without running it."""
    return data_root / step / f"{name}-{step_key(step, config, [m.ref for m in inputs])}"


@dataclass(frozen=True)
class StepSpec:
    """What a step module is, once: its step name, config class, the readable part of its
    output directory by default, and its module docstring (the first line describes its
    command). `run` runs a body under a `Settings`' data root and MLflow; `main` is the
    module's command line. A step module ends with

        STEP = StepSpec("mix", MixConfig, default_name="mix", doc=__doc__)

        def run(config, inputs, settings, name=STEP.default_name, force=False) -> Manifest:
            ...checks of the inputs...
            return STEP.run(settings, config, lambda ctx: mix(config, ...), inputs, name, force)

        def main(argv=None) -> int:
            return STEP.main(run, argv)
    """

    step: str
    config_cls: type[StepConfig]
    default_name: str
    doc: str

    def run(
        self,
        settings: Settings,
        config: StepConfig,
        body: Callable[[StepContext], StepOutput],
        inputs: list[Manifest] | None = None,
        name: str | None = None,
        force: bool = False,
    ) -> Manifest:
        """`run_step` of this step under the settings' data root and MLflow server."""
        return run_step(
            step=self.step,
            name=name or self.default_name,
            config=config,
            data_root=Path(settings.data_dir),
            body=body,
            inputs=inputs,
            force=force,
            mlflow_uri=settings.mlflow_uri,
        )

    def main(
        self, run: Callable[[Any, list[Manifest], Any, str, bool], Manifest], argv: list[str] | None
    ) -> int:
        """The shared command line (`step_main`) of this step, calling `run`."""
        return step_main(
            argv,
            description=self.doc.strip().splitlines()[0],
            config_cls=self.config_cls,
            run=run,
            default_name=self.default_name,
        )


def step_main(
    argv: list[str] | None,
    *,
    description: str,
    config_cls: type[StepConfig],
    run: Callable[[Any, list[Manifest], Any, str, bool], Manifest],
    default_name: str,
) -> int:
    """The command line every step module shares, so a DAG task submits each the same way:

        python -m ray_jobs.<step> --config JSON [--input manifest.json]... [--name N] [--force]

    Prints the manifest path; exit 2 for bad arguments, 1 when the step fails with an
    error meant for people, never a traceback for either.
    """
    import argparse
    import sys

    from pydantic import ValidationError

    from orchard.errors import OrchardError
    from orchard.settings import load_settings

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default="{}", help="The step's config as JSON.")
    parser.add_argument(
        "--input", action="append", default=[], help="An upstream step's manifest.json."
    )
    parser.add_argument("--name", default=default_name, help="Readable part of the output dir.")
    parser.add_argument("--force", action="store_true", help="Rebuild even if done.")
    args = parser.parse_args(argv)
    try:
        config = config_cls.model_validate_json(args.config)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "config"
        print(f"error: bad {where} in --config: {first['msg']}", file=sys.stderr)
        return 2
    inputs = []
    for path in args.input:
        manifest = Path(path)
        manifest = manifest / MANIFEST if manifest.is_dir() else manifest
        if not manifest.is_file():
            print(
                f"error: no manifest at {manifest}: pass a finished step's manifest.json",
                file=sys.stderr,
            )
            return 2
        inputs.append(Manifest.model_validate_json(manifest.read_text()))
    try:
        done = run(config, inputs, load_settings(), args.name, args.force)
    except OrchardError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"manifest: {Path(done.path) / MANIFEST}")
    return 0
