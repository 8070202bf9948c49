"""Administrators: training jobs. Trigger `orchard_build` (the whole pipeline) or
`orchard_posttrain` with Params, through Airflow's REST API (`jobs.py`), and follow their
runs with links to Airflow's and MLflow's UIs (their public addresses when set: the
servers' own are not always what a browser reaches). Each trigger is in the audit log."""

from __future__ import annotations

import json
from typing import get_args

from fastapi import APIRouter, Query, Request
from sqlmodel import select

from orchard.pipeline import airflow_ui_url, mlflow_ui_url
from platform_api import jobs
from platform_api.audit import audit
from platform_api.deps import AdminUser, SessionDep
from platform_api.errors import ApiError
from platform_api.models import AuditEntry
from platform_api.schemas import JobDag, JobRun, JobRuns, JobTrigger, JobTriggered

router = APIRouter(prefix="/admin", tags=["admin"])
JOB_DAGS: tuple[str, ...] = get_args(JobDag)
TRIGGER_ACTION = "job.trigger"


def _airflow(fn, *args):
    try:
        return fn(*args)
    except jobs.JobsUnavailable as error:
        raise ApiError(503, "airflow_unavailable", f"{error}; try again later") from None
    except jobs.ConfRefused as error:
        raise ApiError(422, "conf_refused", f"Airflow refused the conf: {error}") from None
    except jobs.AirflowFailed as error:
        raise ApiError(502, "airflow_failed", str(error)) from None


def _triggered_by(session, runs: list[dict]) -> dict[str, str]:
    """`dag_id/run_id` -> the e-mail of the administrator who triggered it here."""
    targets = [f"{run['dag_id']}/{run['run_id']}" for run in runs]
    if not targets:
        return {}
    entries = session.exec(
        select(AuditEntry.target, AuditEntry.detail).where(
            AuditEntry.action == TRIGGER_ACTION, AuditEntry.target.in_(targets)
        )
    )
    return {target: json.loads(detail).get("actor_email") for target, detail in entries}


@router.post("/jobs", response_model=JobTriggered, status_code=201)
def trigger_job(
    body: JobTrigger, request: Request, admin: AdminUser, session: SessionDep
) -> JobTriggered:
    """Start a run; Airflow validates `conf` against the DAG's Params (422 with its reason).
    A paused DAG keeps the run queued (`dag_paused`)."""
    settings = request.app.state.settings
    run, paused = _airflow(jobs.trigger, settings, body.dag, body.conf)
    audit(session, admin, TRIGGER_ACTION, f"{body.dag}/{run['run_id']}", conf=body.conf)
    session.commit()
    return JobTriggered(
        **run, triggered_by=admin.email, dag_paused=paused, mlflow_url=mlflow_ui_url(settings)
    )


@router.get("/jobs", response_model=JobRuns)
def list_jobs(
    request: Request,
    admin: AdminUser,
    session: SessionDep,
    dag: JobDag | None = Query(None, description="Only this DAG's runs."),
    limit: int = Query(25, ge=1, le=100),
) -> JobRuns:
    """The newest runs of the training DAGs (whoever started them), newest first."""
    settings = request.app.state.settings
    runs = _airflow(jobs.list_runs, settings, [dag] if dag else list(JOB_DAGS), limit)
    who = _triggered_by(session, runs)
    return JobRuns(
        runs=[
            JobRun(**run, triggered_by=who.get(f"{run['dag_id']}/{run['run_id']}")) for run in runs
        ],
        airflow_url=airflow_ui_url(settings),
        mlflow_url=mlflow_ui_url(settings),
    )
