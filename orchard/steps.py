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
- with an `s3://bucket/prefix` data root (`orchard.storage`) staging is a local
  directory, published by uploading the data objects first and `manifest.json` last:
  the manifest is the publish marker, and a directory without one is ignored and
  rebuilt; inputs are downloaded into a local cache keyed by their manifest's content
  (`localize`), so step bodies read local files either way;
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

from pydantic import BaseModel, ConfigDict, PrivateAttr

import orchard
from orchard.storage import (
    Storage,
    cache_dir_for,
    download_published,
    is_uri,
    join,
    local_files,
    publish_remote,
    storage_for,
)

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
    # On object storage: the published files (relative name -> bytes), what readers fetch.
    files: dict[str, int] = {}
    # Where a distributed step's workers ran (Ray node id, hostname, address, ...), in
    # rank order: e.g. pretraining's Ray Train workers.
    workers: list[dict[str, str]] = []
    # Where a localized copy came from (`localize`): lineage records that, not the cache.
    _origin: str | None = PrivateAttr(default=None)

    @property
    def ref(self) -> InputRef:
        return InputRef(step=self.step, key=self.key, path=self._origin or self.path)

    @classmethod
    def read(cls, directory: Path | str, storage: Storage | None = None) -> Manifest:
        """The manifest in `directory`: a local path, or an `s3://` step directory."""
        if is_uri(directory):
            store = storage or storage_for(directory)
            return cls.model_validate_json(store.read_text(join(directory, MANIFEST)))
        return cls.model_validate_json((Path(directory) / MANIFEST).read_text())


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
    # Scratch that outlives the host (on S3: `<step>/.<name>-<key>.work/` in the bucket,
    # e.g. Ray Train checkpoints), and the pyarrow filesystem to reach it; None = `work`.
    durable_work: str | None = None
    filesystem: Any = None
    # Where the output is published (a local path or an s3:// URI), for lineage records
    # made while the body runs (an MLflow dataset's source).
    location: str = ""

    def durable(self, name: str) -> tuple[str, Any]:
        """(path, pyarrow filesystem or None) of `name` in the scratch space that outlives
        this host: Ray Train's `RunConfig(storage_path=..., storage_filesystem=...)`.
        Locally `work/name`; on S3 `bucket/<step>/.<name>-<key>.work/name`, its checkpoints
        then resume on any host."""
        if self.durable_work is None:
            return str(self.work / name), None
        return join(self.durable_work, name).removeprefix("s3://"), self.filesystem


@dataclass
class StepOutput:
    """What a step's body reports; the files themselves are already in its directory.

    `artifacts` names output subdirectories (relative to `ctx.out`) to copy into the
    step's MLflow run as well, e.g. a validation report people open from the MLflow UI.
    `mlflow_run_id` is the run a long step already logs into while it works (loss curves):
    the manifest, params and artifacts then go into that run instead of a new one.
    `facts` are strings the manifest records and the MLflow run carries as
    `orchard.<fact>` tags (an imported model's source, licence, sha256).
    `workers` records where a distributed step's workers ran (the manifest keeps it).
    """

    counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    mlflow_run_id: str | None = None
    workers: list[dict[str, str]] = field(default_factory=list)


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


def _manifest_of(
    output: StepOutput,
    step: str,
    name: str,
    key: str,
    path: str,
    config: StepConfig,
    refs: list[str],
    started: float,
    staging: Path,
    mlflow_uri: str | None,
) -> Manifest:
    """The manifest of a finished body (logged to MLflow when there is a URI)."""
    manifest = Manifest(
        step=step,
        name=name,
        key=key,
        path=path,
        config=config.model_dump(mode="json"),
        inputs=refs,
        code_version=code_version(),
        counts=output.counts,
        metrics=output.metrics,
        facts=output.facts,
        timings={"seconds": round(time.monotonic() - started, 3)},
        created_at=datetime.now(UTC).isoformat(timespec="microseconds"),
        workers=output.workers,
    )
    if mlflow_uri:
        artifacts = {name: staging / name for name in output.artifacts}
        manifest.mlflow_run_id = _log_to_mlflow(
            mlflow_uri, manifest, artifacts, run_id=output.mlflow_run_id
        )
    return manifest


def run_step(
    *,
    step: str,
    name: str,
    config: StepConfig,
    data_root: Path | Storage,
    body: Callable[[StepContext], StepOutput],
    inputs: list[Manifest] | None = None,
    force: bool = False,
    mlflow_uri: str | None = None,
) -> Manifest:
    """Run `body(context)` once per (config, inputs); return the step's manifest.
    `data_root` is a local directory or a `Storage` (`Storage.from_settings`)."""
    store = data_root if isinstance(data_root, Storage) else None
    if store is not None and store.remote:
        return _run_step_remote(step, name, config, store, body, inputs, force, mlflow_uri)
    data_root = Path(store.root) if store is not None else Path(data_root)
    refs = [manifest.ref for manifest in inputs or []]
    key = step_key(step, config, refs)
    final = data_root / step / f"{name}-{key}"
    if (final / MANIFEST).exists() and not force:
        return _reuse(Manifest.read(final), str(final), step)

    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    work = final.parent / f".{final.name}.work"
    work.mkdir(exist_ok=True)
    started = time.monotonic()
    try:
        output = body(StepContext(out=staging, work=work, key=key, location=str(final)))
        manifest = _manifest_of(
            output, step, name, key, str(final), config, refs, started, staging, mlflow_uri
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


def _reuse(done: Manifest, where: str, step: str) -> Manifest:
    if done.code_version != code_version():
        log.warning(
            "REUSING %s written by code %s (running %s): pass force=True to rebuild",
            where,
            done.code_version,
            code_version(),
        )
    else:
        log.info("skip %s: already done (%s)", step, where)
    return done


def _run_step_remote(
    step: str,
    name: str,
    config: StepConfig,
    store: Storage,
    body: Callable[[StepContext], StepOutput],
    inputs: list[Manifest] | None,
    force: bool,
    mlflow_uri: str | None,
) -> Manifest:
    """`run_step` on object storage: stage locally, then publish data first, manifest last."""
    refs = [manifest.ref for manifest in inputs or []]
    key = step_key(step, config, refs)
    final = store.join(step, f"{name}-{key}")
    marker = join(final, MANIFEST)
    if store.is_file(marker) and not force:
        return _reuse(Manifest.read(final, store), final, step)
    store.check_writable()
    local = store.cache / "steps" / step
    local.mkdir(parents=True, exist_ok=True)
    staging = local / f".{name}-{key}.staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    work = local / f".{name}-{key}.work"
    work.mkdir(exist_ok=True)
    durable = store.join(step, f".{name}-{key}.work")
    started = time.monotonic()
    context = StepContext(
        staging, work, key, durable_work=durable, filesystem=store.fs, location=final
    )
    try:
        try:
            output = body(context)
        except BaseException:
            # validate and chat_data keep a failure report beside their output: publish it.
            report = local / f"failed-{key}"
            if report.is_dir():
                for relative, path in local_files(report):
                    store.upload_file(path, store.join(step, f"failed-{key}", relative))
            raise
        manifest = _manifest_of(
            output, step, name, key, str(final), config, refs, started, staging, mlflow_uri
        )
        if store.is_file(marker):
            if not force:
                # A concurrent run of the same step finished first: keep its result.
                shutil.rmtree(staging, ignore_errors=True)
                return Manifest.read(final, store)
            store.delete(marker)  # a forced rebuild: unpublish first, never mix two runs

        def render(files: dict[str, int]) -> str:
            manifest.files = files
            return manifest.model_dump_json(indent=2)

        text = publish_remote(store, staging, final, MANIFEST, render)
        (staging / MANIFEST).write_text(text)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # The staged copy is what a later step on this host would download: keep it as such.
    cached = cache_dir_for(store, final, text)
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staging, cached)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    store.delete_tree(durable)
    return manifest


def localize(manifest: Manifest, store: Storage | None = None) -> Manifest:
    """`manifest` with `path` pointing at a local copy of its files: itself when it is
    local already, else a copy downloaded once into the cache (keyed by the manifest's
    content); its `ref` still names where it was published, for lineage."""
    if not is_uri(manifest.path):
        return manifest
    store = store or storage_for(manifest.path)
    text = store.read_text(join(manifest.path, MANIFEST))
    names = sorted(Manifest.model_validate_json(text).files) or None
    local = download_published(store, manifest.path, MANIFEST, text, names)
    copy = manifest.model_copy(update={"path": str(local)})
    copy._origin = manifest.path
    return copy


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


def latest(data_root: Path | Storage, step: str, name: str | None = None) -> Manifest | None:
    """The newest finished output of `step` under `data_root` (by creation time), if any
    (of those named `name`, when given): what a manually triggered DAG builds on when no
    upstream run handed it a manifest."""
    return max(finished(data_root, step, name), key=lambda m: m.created_at, default=None)


def finished(data_root: Path | Storage, step: str, name: str | None = None) -> list[Manifest]:
    """Every finished output of `step` under `data_root` (of those named `name`)."""
    if isinstance(data_root, Storage) and data_root.remote:
        store = data_root
        found = [store.join(step, d) for d in store.subdirs(store.join(step))]
        done = [
            Manifest.read(directory, store)
            for directory in found
            if not directory.rsplit("/", 1)[-1].startswith(".")
            and store.is_file(join(directory, MANIFEST))
        ]
    else:
        root = Path(data_root.root) if isinstance(data_root, Storage) else data_root
        done = [Manifest.read(path.parent) for path in (root / step).glob(f"*/{MANIFEST}")]
    return [m for m in done if name is None or m.name == name]


def _published(location: str) -> Manifest | None:
    """The manifest at a recorded input location, or None when it is gone."""
    if is_uri(location):
        store = storage_for(location)
        return Manifest.read(location, store) if store.is_file(join(location, MANIFEST)) else None
    path = Path(location)
    return Manifest.read(path) if (path / MANIFEST).is_file() else None


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
            upstream = _published(ref.path)
            if upstream is not None:
                queue.append(upstream)
            elif ref.path not in seen:
                log.warning(
                    "lineage: %s (%s) is gone; recorded by its key only", ref.path, ref.step
                )
                seen.add(ref.path)
                found.append(
                    Manifest(
                        step=ref.step,
                        name=ref.path.rstrip("/").rsplit("/", 1)[-1],
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


def output_location(
    store: Storage, step: str, name: str, config: StepConfig, inputs: list[Manifest]
) -> str:
    """`locate` for any data root: a local path or an `s3://` URI, as a string."""
    return store.join(step, f"{name}-{step_key(step, config, [m.ref for m in inputs])}")


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
            data_root=Storage.from_settings(settings),
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
    try:
        settings = load_settings()
        store = Storage.from_settings(settings)
        inputs = []
        for path in args.input:
            manifest = _input_manifest(path, settings)
            if manifest is None:
                print(
                    f"error: no manifest at {path}: pass a finished step's manifest.json",
                    file=sys.stderr,
                )
                return 2
            inputs.append(localize(manifest, store if is_uri(manifest.path) else None))
        done = run(config, inputs, settings, args.name, args.force)
    except OrchardError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"manifest: {join(done.path, MANIFEST)}")
    return 0


def _input_manifest(path: str, settings: Settings) -> Manifest | None:
    """The manifest an `--input` names (its manifest.json or its directory; a local path
    or an `s3://` URI), or None when there is none."""
    if is_uri(path):
        store = storage_for(path, settings)
        directory = path.rstrip("/").removesuffix(f"/{MANIFEST}")
        if not store.is_file(join(directory, MANIFEST)):
            return None
        return Manifest.read(directory, store)
    manifest = Path(path)
    manifest = manifest / MANIFEST if manifest.is_dir() else manifest
    if not manifest.is_file():
        return None
    return Manifest.model_validate_json(manifest.read_text())
