"""Administrators and training jobs, against the stack's real Airflow: triggering
`orchard_build` and `orchard_posttrain` with Params through the platform API, Airflow's
Param validation passed back as a 422, the runs listed with their state and links, and
every trigger in the audit log.

The two DAGs are paused meanwhile, so the runs this file triggers wait queued and train
nothing; they are deleted afterwards and the DAGs left as they were."""

from __future__ import annotations

import httpx
import pytest

from orchard.airflow_client import AirflowClient
from platform_api.app import create_app
from tests.platform.conftest import FAST_ARGON2, Api, LiveServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DAGS = ("orchard_build", "orchard_posttrain")


@pytest.fixture(scope="module")
def airflow(stack):
    """Airflow with the training DAGs paused; yields the client and a list the tests add
    their runs to, for deletion."""
    client = AirflowClient.from_settings(stack.settings())
    paused = {dag: client.wait_for_dag(dag)["is_paused"] for dag in DAGS}
    for dag in DAGS:
        client.pause(dag)
    runs: list[tuple[str, str]] = []
    try:
        yield client, runs
    finally:
        for dag, run_id in runs:
            client.request("DELETE", f"/api/v2/dags/{dag}/dagRuns/{run_id}")
        for dag, was_paused in paused.items():
            if not was_paused:
                client.unpause(dag)
        client.close()


@pytest.fixture
def platform(stack, airflow, tmp_path):
    """The platform API on its own database, with the stack's Airflow (and the Airflow
    admin password under the stack's home)."""
    settings = stack.settings().model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'platform.db'}"}
    )
    server = LiveServer(create_app(settings, FAST_ARGON2))
    server.start()
    http = httpx.Client(base_url=f"{server.url}/api/v1", timeout=120)
    api = Api(http=http, root=server.url, settings=settings, database_url=settings.database_url)
    try:
        yield http, api.user("alice"), api.admin("root")
    finally:
        http.close()
        server.stop()


CONFS = {
    "orchard_build": {"data": {"max_pages": 5}},
    "orchard_posttrain": {"stages": ["sft"], "sft_steps": 3},
}


@pytest.mark.parametrize("dag", DAGS)
def test_a_trigger_starts_the_run_with_its_params_lists_it_and_is_audited(
    stack, airflow, platform, dag
):
    client, created = airflow
    http, alice, root = platform
    settings = stack.settings()
    body = {"dag": dag, "conf": CONFS[dag]}
    assert http.post("/admin/jobs", json=body, headers=alice.headers).status_code == 403

    response = http.post("/admin/jobs", json=body, headers=root.headers)
    assert response.status_code == 201, response.text
    run = response.json()
    created.append((dag, run["run_id"]))
    assert (run["dag_id"], run["state"], run["dag_paused"]) == (dag, "queued", True)
    assert run["conf"] == CONFS[dag] and run["triggered_by"] == root.email
    assert run["airflow_url"] == f"{settings.airflow_base_url}/dags/{dag}/runs/{run['run_id']}"
    assert run["mlflow_url"] == settings.mlflow_uri

    # Airflow has it, with the conf as sent.
    in_airflow = client.request("GET", f"/api/v2/dags/{dag}/dagRuns/{run['run_id']}").json()
    assert (in_airflow["state"], in_airflow["conf"]) == ("queued", CONFS[dag])
    assert httpx.get(run["airflow_url"], timeout=30).status_code == 200  # the UI's page

    listed = http.get("/admin/jobs", params={"dag": dag}, headers=root.headers)
    assert listed.status_code == 200, listed.text
    runs = listed.json()
    assert runs["runs"][0]["run_id"] == run["run_id"]  # newest first
    assert {r["dag_id"] for r in runs["runs"]} == {dag}
    assert runs["runs"][0]["triggered_by"] == root.email
    assert (runs["airflow_url"], runs["mlflow_url"]) == (
        settings.airflow_base_url,
        settings.mlflow_uri,
    )
    both = http.get("/admin/jobs", headers=root.headers).json()["runs"]
    assert run["run_id"] in [r["run_id"] for r in both]
    assert http.get("/admin/jobs", headers=alice.headers).status_code == 403

    (entry,) = http.get(
        "/admin/audit", params={"action": "job.trigger"}, headers=root.headers
    ).json()
    assert entry["target"] == f"{dag}/{run['run_id']}" and entry["actor_id"] == root.id
    assert entry["detail"]["conf"] == CONFS[dag]


@pytest.mark.parametrize(
    ("dag", "conf", "param"),
    [
        ("orchard_posttrain", {"sft_steps": 0}, "sft_steps"),
        ("orchard_posttrain", {"stages": ["pretrain"]}, "stages"),
        ("orchard_build", {"data": "everything"}, "data"),
    ],
)
def test_a_conf_airflow_refuses_is_422_with_its_reason_and_runs_nothing(
    airflow, platform, dag, conf, param
):
    client, _ = airflow
    http, _, root = platform
    before = client.request("GET", f"/api/v2/dags/{dag}/dagRuns").json()["total_entries"]
    response = http.post("/admin/jobs", json={"dag": dag, "conf": conf}, headers=root.headers)
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["code"] == "conf_refused" and param in error["detail"]
    assert "\n" not in error["detail"]  # Airflow's reason, not its schema dump
    after = client.request("GET", f"/api/v2/dags/{dag}/dagRuns").json()["total_entries"]
    assert after == before
    audit = http.get("/admin/audit", params={"action": "job.trigger"}, headers=root.headers)
    assert audit.json() == []
