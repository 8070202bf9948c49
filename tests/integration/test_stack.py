"""The local stack end to end: `orchard up`, health, the smoke DAG through Airflow's
REST API, Ray and MLflow behind it, then `orchard down` leaves nothing running."""

from __future__ import annotations

import sqlite3
import threading
import uuid

import httpx
import mlflow
import psutil
import pytest

from orchard.airflow_client import AirflowClient, AirflowError
from orchard.credentials import ray_auth_headers
from orchard.ray_submit import run_ray_job, submission_base
from orchard.stack import process
from orchard.stack.services import SERVICE_NAMES
from tests.conftest import orchard, stack_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def airflow(stack) -> AirflowClient:
    client = AirflowClient.from_settings(stack.settings())
    client.wait_for_dag("orchard_smoke")
    yield client
    client.close()


def test_up_prints_urls_and_the_generated_password_once(stack):
    settings = stack.settings()
    for url in (settings.api_url, settings.mlflow_uri, settings.airflow_base_url):
        assert url in stack.up_output
    password = (settings.secrets_dir / "airflow-admin-password").read_text().strip()
    assert f"Airflow admin password (shown once): {password}" in stack.up_output
    assert (settings.secrets_dir / "airflow-admin-password").stat().st_mode & 0o077 == 0


def test_every_health_endpoint_answers(stack):
    settings = stack.settings()
    with httpx.Client(timeout=10) as client:
        assert client.get(f"{settings.api_url}/healthz").json()["status"] == "ok"
        assert client.get(f"{settings.mlflow_uri}/health").status_code == 200
        health = client.get(f"{settings.airflow_base_url}/api/v2/monitor/health").json()
        for part in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
            assert health[part]["status"] == "healthy"
        ray = f"{settings.ray_dashboard_url}/api/version"
        assert client.get(ray, headers=ray_auth_headers(settings)).status_code == 200
        # The Ray head binds every interface, so it must refuse callers without the token.
        assert client.get(ray).status_code in (401, 403)


def test_status_shows_every_service_healthy(stack):
    result = orchard(stack.env, "status")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in SERVICE_NAMES:
        line = next(line for line in result.stdout.splitlines() if f" {name} " in line)
        assert "healthy" in line and "unhealthy" not in line


def test_up_when_up_says_so_and_changes_nothing(stack):
    settings = stack.settings()
    before = {name: process.read_record(settings.run_dir, name) for name in SERVICE_NAMES}
    result = orchard(stack.env, "up")
    assert result.returncode == 0, result.stderr
    assert "already up" in result.stdout
    assert "shown once" not in result.stdout
    after = {name: process.read_record(settings.run_dir, name) for name in SERVICE_NAMES}
    assert before == after


def test_a_taken_port_names_the_port_and_the_setting(stack, tmp_path):
    env = stack_env(tmp_path / "other")
    env["ORCHARD_API_PORT"] = stack.env["ORCHARD_API_PORT"]  # the running stack holds it
    result = orchard(env, "up")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert f"port {stack.env['ORCHARD_API_PORT']}" in lines[0]
    assert "ORCHARD_API_PORT" in lines[0]
    assert not list((tmp_path / "other" / "run").glob("*.pid.json"))


def test_smoke_dag_params_are_in_the_trigger_form(airflow):
    details = airflow._json("GET", "/api/v2/dags/orchard_smoke/details")
    params = details["params"]
    assert params["message"]["schema"]["type"] == "string"
    assert params["message"]["description"]
    assert params["fail"]["value"] is False


def test_smoke_dag_runs_a_ray_job_that_logs_to_mlflow(stack, airflow):
    message = f"smoke {uuid.uuid4().hex[:8]}"
    run_id = airflow.trigger("orchard_smoke", {"message": message})
    assert airflow.wait_for_run("orchard_smoke", run_id, timeout=300) == "success"

    log = airflow.task_log("orchard_smoke", run_id, "ray_smoke_job")
    assert f"[ray job] orchard-smoke: {message!r} -> sum of squares 140" in log

    mlflow.set_tracking_uri(stack.settings().mlflow_uri)
    runs = mlflow.search_runs(
        experiment_names=["orchard-smoke"],
        filter_string=f"tags.`airflow.run_id` = '{run_id}'",
        output_format="list",
    )
    assert len(runs) == 1
    assert runs[0].data.params["message"] == message
    assert runs[0].data.metrics["sum_of_squares"] == 140

    # A retried task re-attaches to the job that already succeeded: no second job, no
    # second MLflow run.
    result = run_ray_job(
        stack.settings(),
        base_id=submission_base("orchard_smoke", run_id),
        entrypoint="python -c 'raise SystemExit(1)'",
        log=lambda line: None,
    )
    assert result.submission_id.endswith("-a1") and result.status == "SUCCEEDED"


def test_a_failing_ray_job_turns_the_task_red(airflow):
    run_id = airflow.trigger("orchard_smoke", {"fail": True})
    assert airflow.wait_for_run("orchard_smoke", run_id, timeout=300) == "failed"
    (task,) = airflow.task_instances("orchard_smoke", run_id)
    assert task["state"] == "failed"
    log = airflow.task_log("orchard_smoke", run_id, "ray_smoke_job")
    assert "smoke job asked to fail" in log


def test_a_param_outside_its_schema_is_refused(airflow):
    with pytest.raises(AirflowError, match="message"):
        airflow.trigger("orchard_smoke", {"message": ""})


def test_a_dag_is_paused_while_another_process_holds_airflows_database(stack, airflow):
    """Airflow's SQLite database lets one writer in at a time, and Airflow answers 500
    "Database error" after waiting 5 s for the lock; the client tries an idempotent call
    again, so the user's pause is slow, not an error."""
    database = stack.settings().home / "airflow" / "airflow.db"
    holder = sqlite3.connect(database, timeout=30, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held past sqlite3's default 5 s
    release = threading.Timer(7, holder.rollback)
    release.start()
    try:
        airflow.pause("orchard_smoke")
        assert airflow._json("GET", "/api/v2/dags/orchard_smoke")["is_paused"] is True
    finally:
        release.join()
        holder.close()
        airflow.unpause("orchard_smoke")


@pytest.mark.stops_stack
def test_down_leaves_no_orchard_process(stack):
    settings = stack.settings()
    records = [process.read_record(settings.run_dir, name) for name in SERVICE_NAMES]
    families = {p.pid for r in records if r for p in process.family(r)}
    assert len(families) > len(SERVICE_NAMES)  # supervisors have children

    result = stack.down()
    assert result.returncode == 0, result.stderr
    for name in SERVICE_NAMES:
        assert f"stopped {name}" in result.stdout

    alive = [pid for pid in families if psutil.pid_exists(pid)]
    alive = [pid for pid in alive if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive
    home = str(stack.home)
    leftovers = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            marker = proc.environ().get(process.MARKER_ENV, "")
        except psutil.Error:
            continue
        if marker.startswith(home):
            leftovers.append(proc.info)
    assert not leftovers
    # A port may be taken again at once by a test on the other xdist worker: what must
    # not listen there is a process of this stack.
    listeners = {
        conn.laddr.port: conn.pid
        for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN
    }
    for name, port in settings.local_ports().items():
        pid = listeners.get(port)
        assert pid is None or pid not in families, f"{name} {port} still listening ({pid})"
    assert not list(settings.run_dir.glob("*.pid.json"))
    assert "Nothing to stop" in orchard(stack.env, "down").stdout
