"""
### orchard_smoke

Checks the whole local stack in one click: the task submits the `ray_jobs.smoke` step
as a Ray job, streams the job's log into this task's log, and the job logs a run to
MLflow (experiment `orchard-smoke`). The task fails, red, when the Ray job fails.

Set **fail** to see what a failing job looks like.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task


@dag(
    dag_id="orchard_smoke",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["orchard", "smoke"],
    # A smoke test reports the stack's health; a retry would hide a flaky stack.
    default_args={"retries": 0},
    params={
        "message": Param(
            "hello from Airflow",
            type="string",
            minLength=1,
            maxLength=200,
            title="Message",
            description="Logged as a parameter of the MLflow run.",
        ),
        "fail": Param(
            False,
            type="boolean",
            title="Make the Ray job fail",
            description="Check that a failing Ray job turns this task red.",
        ),
    },
)
def orchard_smoke():
    @task
    def ray_smoke_job(params: dict | None = None, run_id: str | None = None) -> str:
        import shlex

        from orchard.ray_submit import run_ray_job, submission_base
        from orchard.settings import load_settings

        args = ["python", "-m", "ray_jobs.smoke", "--message", params["message"]]
        args += ["--airflow-run-id", run_id]
        if params["fail"]:
            args.append("--fail")
        result = run_ray_job(
            load_settings(),
            base_id=submission_base("orchard_smoke", run_id),
            entrypoint=shlex.join(args),
        )
        return result.submission_id

    ray_smoke_job()


orchard_smoke()
