"""Training jobs for administrators: the pipeline's DAGs triggered and listed through
Airflow's REST API with `orchard.airflow_client.AirflowClient`, the client (and the
admin credentials under `<home>/secrets`) that `orchard run` and `orchard dag trigger`
use.

What can go wrong, as the API tells it: Airflow not reachable, not set up, or refusing
the login (`JobsUnavailable`, 503); Airflow refusing a run's conf, i.e. its Param
validation (`ConfRefused`, 422, with Airflow's reason); any other answer from Airflow
(`AirflowFailed`, 502).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from orchard.airflow_client import AirflowClient, AirflowError, AirflowRefused
from orchard.pipeline import run_url
from orchard.settings import Settings


class JobsUnavailable(Exception):
    pass


class ConfRefused(Exception):
    pass


class AirflowFailed(Exception):
    pass


@contextmanager
def airflow(settings: Settings) -> Iterator[AirflowClient]:
    try:
        client = AirflowClient.from_settings(settings)
    except AirflowError as error:  # no admin password: Airflow was never set up here
        raise JobsUnavailable(str(error)) from None
    try:
        yield client
    finally:
        client.close()


def _unreachable(client: AirflowClient, error: httpx.HTTPError) -> JobsUnavailable:
    return JobsUnavailable(f"Airflow at {client.base_url} does not answer ({error})")


def _call(client: AirflowClient, method: str, path: str, **kwargs: Any) -> Any:
    try:
        response = client.request(method, path, **kwargs)
    except AirflowError as error:  # the login: unreachable, or the password refused
        raise JobsUnavailable(str(error)) from None
    except httpx.HTTPError as error:
        raise _unreachable(client, error) from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise AirflowFailed(f"Airflow answered {method} {path}: {response.status_code} {detail}")
    return response.json()


def _dag(client: AirflowClient, dag_id: str) -> dict[str, Any]:
    """The DAG's details (logs in first); unavailable when Airflow cannot run it."""
    try:
        dag = _call(client, "GET", f"/api/v2/dags/{dag_id}")
    except AirflowFailed as error:
        raise JobsUnavailable(f"{error}: has Airflow parsed Orchard's dags/ folder?") from None
    if dag.get("has_import_errors"):
        raise JobsUnavailable(f"DAG {dag_id} does not import in Airflow: see its Import errors")
    return dag


def run_view(settings: Settings, run: dict[str, Any]) -> dict[str, Any]:
    """An Airflow DAG run as `schemas.JobRun` fields."""
    fields = ("dag_id", "state", "run_type", "queued_at", "start_date", "end_date")
    view = {name: run.get(name) for name in fields}
    view["run_id"] = run["dag_run_id"]
    view["conf"] = run.get("conf") or {}
    view["airflow_url"] = run_url(settings, run["dag_id"], run["dag_run_id"])
    return view


def trigger(settings: Settings, dag_id: str, conf: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Start a run of `dag_id` with `conf`: the run (as `run_view`), and whether the DAG is
    paused (then the run waits, queued, until someone unpauses it in Airflow)."""
    with airflow(settings) as client:
        paused = bool(_dag(client, dag_id).get("is_paused"))
        try:
            run_id = client.trigger(dag_id, conf)
        except httpx.HTTPError as error:
            raise _unreachable(client, error) from None
        except AirflowRefused as error:
            raise ConfRefused(error.reason) from None
        except AirflowError as error:
            raise AirflowFailed(str(error)) from None
        try:
            run = _call(client, "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        except (JobsUnavailable, AirflowFailed):  # it was triggered: say so all the same
            run = {"dag_id": dag_id, "dag_run_id": run_id, "state": "queued", "conf": conf}
    return run_view(settings, run), paused


def list_runs(settings: Settings, dag_ids: list[str], limit: int) -> list[dict[str, Any]]:
    """The newest runs of `dag_ids` (as `run_view`), newest first."""
    body = {"dag_ids": dag_ids, "order_by": "-run_after", "page_limit": limit}
    with airflow(settings) as client:
        runs = _call(client, "POST", "/api/v2/dags/~/dagRuns/list", json=body)["dag_runs"]
    return [run_view(settings, run) for run in runs]
