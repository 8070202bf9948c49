"""Run a `ray_jobs` step as a Ray job and follow it to the end (used by DAG tasks).

Airflow 3 has no maintained Ray provider, so tasks use Ray's own `JobSubmissionClient`,
which talks to a local head and a KubeRay head alike. Submission ids are derived from a
stable base (e.g. the DAG run and task), so a retried task whose previous job is still
running or already succeeded re-attaches to it instead of starting a second one; only a
failed or stopped job is submitted again, under the next id.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass

from ray.job_submission import JobStatus, JobSubmissionClient

from orchard.credentials import ray_auth_headers
from orchard.errors import OrchardError
from orchard.settings import Settings
from orchard.steps import MANIFEST, Manifest, StepConfig, output_location
from orchard.storage import Storage, join

TERMINAL = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
AIRFLOW_LOGIN_VARIABLES = {"ORCHARD_AIRFLOW_PASSWORD", "ORCHARD_AIRFLOW_TOKEN"}


class RayJobFailed(OrchardError):
    pass


@dataclass(frozen=True)
class RayJobResult:
    submission_id: str
    status: str
    logs: str


def submission_base(*parts: str) -> str:
    """A Ray-safe id from readable parts (Airflow run ids carry ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", "-".join(parts)).strip("-")[:180]


def _attempt_ids(client: JobSubmissionClient, base: str) -> list[tuple[int, str]]:
    pattern = re.compile(rf"^{re.escape(base)}-a(\d+)$")
    found = []
    for job in client.list_jobs():
        match = pattern.match(job.submission_id or "")
        if match:
            found.append((int(match.group(1)), job.submission_id))
    return sorted(found)


def job_env(settings: Settings) -> dict[str, str]:
    """The settings a job runs with, as `ORCHARD_*` variables, less the Airflow login: a
    job's environment shows in the Ray dashboard, and jobs never call Airflow."""
    env = {k: v for k, v in settings.to_env().items() if k not in AIRFLOW_LOGIN_VARIABLES}
    if (settings.mlflow_tracking_uri or "").startswith("file:"):
        # MLflow 3 refuses its file store unless told: naming one is that choice.
        env["MLFLOW_ALLOW_FILE_STORE"] = "true"
    return env


def submit_or_attach(
    client: JobSubmissionClient,
    base: str,
    entrypoint: str,
    env_vars: dict[str, str],
    log: Callable[[str], None],
) -> str:
    attempts = _attempt_ids(client, base)
    if attempts:
        number, latest = attempts[-1]
        status = client.get_job_status(latest)
        if status not in (JobStatus.FAILED, JobStatus.STOPPED):
            log(f"re-attaching to Ray job {latest} ({status.value})")
            return latest
        next_number = number + 1
    else:
        next_number = 1
    submission_id = f"{base}-a{next_number}"
    client.submit_job(
        entrypoint=entrypoint,
        submission_id=submission_id,
        runtime_env={"env_vars": env_vars},
    )
    log(f"submitted Ray job {submission_id}: {entrypoint}")
    return submission_id


def run_ray_job(
    settings: Settings,
    *,
    base_id: str,
    entrypoint: str,
    log: Callable[[str], None] = print,
    poll_seconds: float = 1.0,
) -> RayJobResult:
    """Submit (or re-attach to) a job, stream its log through `log`, raise if it fails."""
    # The token goes in explicitly: Ray reads RAY_AUTH_* once per process, and a DAG
    # task's process may have imported Ray before.
    client = JobSubmissionClient(settings.ray_dashboard_url, headers=ray_auth_headers(settings))
    submission_id = submit_or_attach(client, base_id, entrypoint, job_env(settings), log)
    printed = 0
    status = client.get_job_status(submission_id)
    try:
        while True:
            status = client.get_job_status(submission_id)
            logs = client.get_job_logs(submission_id)
            for line in logs[printed:].splitlines():
                log(f"[ray job] {line}")
            printed = len(logs)
            if status in TERMINAL:
                break
            time.sleep(poll_seconds)
    except BaseException:
        # The task is being killed (timeout, marked failed): do not leave the job running.
        if status not in TERMINAL:
            client.stop_job(submission_id)
        raise
    if status != JobStatus.SUCCEEDED:
        message = client.get_job_info(submission_id).message or ""
        raise RayJobFailed(f"Ray job {submission_id} {status.value}: {message.strip()[-500:]}")
    return RayJobResult(submission_id, status.value, logs)


def run_step_job(
    settings: Settings,
    *,
    module: str,
    step: str,
    name: str,
    config: StepConfig,
    inputs: list[Manifest],
    base_id: str,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> Manifest:
    """Run `ray_jobs.<module>` as a Ray job unless its output already exists; return its
    manifest. The output path is derived here from the same config and inputs the job
    gets, so a finished step costs no job at all on a re-run."""
    store = Storage.from_settings(settings)
    final = output_location(store, step, name, config, inputs)
    if store.is_file(join(final, MANIFEST)) and not force:
        log(f"{step}: already done, skipped: {final}")
        return Manifest.read(final, store)
    args = ["python", "-m", f"ray_jobs.{module}", "--config", config.model_dump_json()]
    args += ["--name", name]
    for manifest in inputs:
        args += ["--input", join(manifest.ref.path, MANIFEST)]
    if force:
        args.append("--force")
    run_ray_job(settings, base_id=base_id, entrypoint=shlex.join(args), log=log)
    if not store.is_file(join(final, MANIFEST)):
        raise OrchardError(f"the {step} job succeeded but left no manifest at {final}")
    return Manifest.read(final, store)
