"""orchard_feedback's gate, the whole DAG in-process (`dag.test()`), no stack: the platform
API on loopback with the serving stand-in, one user's three ratings exported over HTTP
with an administrator's feedback:export key, and the run stops at `publish` with a report
naming the rules the set broke. Nothing is published and the asset gets no event."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from platform_api.app import create_app
from platform_api.manage import make_admin
from testkit.platform import FAST_ARGON2, LiveServer
from testkit.population import Population
from testkit.serving_stub import Reply, ServingStub

ADMIN = {"email": "root@example.org", "password": "correct horse battery"}


@pytest.fixture(scope="module")
def airflow_db():
    from airflow.utils import db

    db.initdb()


@pytest.mark.slow
def test_an_export_of_three_rows_stops_orchard_feedback_naming_the_rule(
    dagbag, airflow_db, clean_env, monkeypatch, tmp_path, capfd
):
    from orchard.settings import Settings

    monkeypatch.setenv("ORCHARD_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    serving = ServingStub()
    database = f"sqlite:///{tmp_path / 'platform.db'}"
    settings = Settings(home=tmp_path / "platform", database_url=database, serving_url=serving.url)
    server = LiveServer(create_app(settings, FAST_ARGON2))
    server.start()
    try:
        with Population(f"{server.url}/api/v1", 1, max_words=5, regenerations=0) as population:
            population.enrol()
            serving.script(*[Reply(pieces=["Short."]) for _ in range(3)])
            population.converse(["One?", "Two?", "Three?"])
        with httpx.Client(base_url=f"{server.url}/api/v1") as http:
            assert http.post("/auth/register", json=ADMIN).status_code == 201
            make_admin(database, ADMIN["email"])
            token = http.post("/auth/login", json=ADMIN).json()["access_token"]
            key = http.post(
                "/api-keys",
                json={"name": "orchard_feedback", "scopes": ["feedback:export"]},
                headers={"Authorization": f"Bearer {token}"},
            ).json()["key"]
        monkeypatch.setenv("ORCHARD_FEEDBACK_API_KEY", key)
        capfd.readouterr()
        run = dagbag.get_dag("orchard_feedback").test(run_conf={"api_url": server.url})
    finally:
        server.stop()
        serving.stop()

    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"export": "success", "evaluation_tasks": "success", "publish": "failed"}
    logged = "".join(capfd.readouterr())  # the task's failure, as Airflow logs it
    assert "the feedback dataset failed 3 of 6 expectations: enough_pairs" in logged
    assert "0 pairs, need at least 8" in logged
    assert "not_one_sided" in logged and "one user gave 3 of 3 rows (100%)" in logged
    feedback = Path(clean_env).parent / "home" / "data" / "feedback"
    (report,) = feedback.glob("failed-*")
    assert (report / "data_docs" / "index.html").is_file()
    assert not list(feedback.glob("feedback-*"))
