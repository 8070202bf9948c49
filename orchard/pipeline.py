"""Following DAG runs through Airflow's REST API: what `orchard run`, `orchard dag trigger`
and the `orchard_build` DAG share.

The pipeline is a chain of DAGs wired by Airflow Assets (`orchard_data` publishes the
curated corpus, which triggers `orchard_tokenizer`, and so on to `orchard_posttrain`).
Following it means: unpause every DAG of the chain (a paused DAG ignores asset events),
trigger the head, then pick up the run each asset started after that moment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchard.airflow_client import AirflowClient
from orchard.errors import OrchardError
from orchard.settings import Settings

LOG_TAIL_LINES = 25


class RunFailed(OrchardError):
    """A followed DAG run ended in failure; the message carries its failed tasks' logs."""


def airflow_ui_url(settings: Settings) -> str:
    """Airflow's UI as a browser reaches it: `airflow_public_url` when set (an ingress, a
    proxy), else the address Orchard itself talks to, which is right on one machine."""
    return (settings.airflow_public_url or settings.airflow_base_url).rstrip("/")


def mlflow_ui_url(settings: Settings) -> str:
    """MLflow's UI as a browser reaches it: `mlflow_public_url`, else the tracking server."""
    return (settings.mlflow_public_url or settings.mlflow_uri).rstrip("/")


def run_url(settings: Settings, dag_id: str, run_id: str) -> str:
    """The run in Airflow's UI, for people: printed by the CLI and the DAGs, linked by the
    admin dashboard."""
    return f"{airflow_ui_url(settings)}/dags/{dag_id}/runs/{run_id}"


def failure_report(client: AirflowClient, dag_id: str, run_id: str) -> str:
    """The end of each failed task's log, for people reading a terminal or a task log."""
    parts = []
    for ti in client.task_instances(dag_id, run_id):
        if ti["state"] not in ("success", "skipped"):
            log = client.task_log(dag_id, run_id, ti["task_id"], max(ti["try_number"], 1))
            tail = "\n".join(log.splitlines()[-LOG_TAIL_LINES:])
            parts.append(f"task {ti['task_id']} {ti['state']}; its log ends:\n{tail}")
    return "\n".join(parts)


def follow(
    settings: Settings,
    client: AirflowClient,
    dag_id: str,
    run_id: str,
    on_state: Callable[[str], None] | None = None,
    timeout: float = 3600.0,
    on_poll: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Wait for a run to end; raise `RunFailed` (with the failed tasks' log tails) unless
    it succeeded. `on_state` and `on_poll` as in `AirflowClient.wait_for_run`."""
    state = client.wait_for_run(dag_id, run_id, timeout=timeout, on_state=on_state, on_poll=on_poll)
    if state != "success":
        raise RunFailed(
            f"{dag_id} run {run_id} {state}: see {run_url(settings, dag_id, run_id)}\n"
            + failure_report(client, dag_id, run_id)
        )


def unpause_chain(client: AirflowClient, dag_ids: tuple[str, ...] | list[str]) -> None:
    for dag_id in dag_ids:
        client.wait_for_dag(dag_id)
        client.unpause(dag_id)
