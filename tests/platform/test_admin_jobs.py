"""Training jobs without Airflow: who may call them, what they accept, and a clear 503
when Airflow cannot be reached or was never set up. (Triggering and listing against the
real Airflow: tests/integration/test_admin_jobs.py.)"""

from __future__ import annotations

import pytest

from orchard.settings import Settings
from orchard.stack import secrets
from orchard.stack.services import AIRFLOW_PASSWORD_SECRET
from tests.conftest import free_port
from tests.platform.serving_stub import ServingStub

AIRFLOW_PORT = free_port()  # nothing listens there


@pytest.fixture
def settings(clean_env, database_url: str, serving: ServingStub) -> Settings:
    settings = Settings(
        home=clean_env,
        database_url=database_url,
        serving_url=serving.url,
        airflow_url=f"http://127.0.0.1:{AIRFLOW_PORT}",
    )
    secrets.get_or_create(settings.secrets_dir, AIRFLOW_PASSWORD_SECRET)  # as `orchard up` does
    return settings


def test_users_are_refused_before_airflow_is_asked(api):
    alice = api.user("alice")
    body = {"dag": "orchard_build", "conf": {}}
    assert api.http.post("/admin/jobs", json=body, headers=alice.headers).status_code == 403
    assert api.http.get("/admin/jobs", headers=alice.headers).status_code == 403
    assert api.http.post("/admin/jobs", json=body).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"dag": "orchard_smoke", "conf": {}},
        {"dag": "orchard_data"},
        {"conf": {}},
        {"dag": "orchard_build", "conf": [1, 2]},
        {"dag": "orchard_build", "conf": "{}"},
        {"dag": "orchard_build", "conf": {"data": {"seeds": ["x" * 70_000]}}},
        {"dag": "orchard_build", "conf": {}, "run_id": "mine"},
    ],
)
def test_only_the_training_dags_with_an_object_conf(api, body):
    root = api.admin()
    response = api.http.post("/admin/jobs", json=body, headers=root.headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_request"


def test_a_listing_of_another_dag_or_too_many_is_refused(api):
    root = api.admin()
    for params in ({"dag": "orchard_smoke"}, {"limit": 0}, {"limit": 101}):
        assert api.http.get("/admin/jobs", params=params, headers=root.headers).status_code == 422


def test_airflow_unreachable_is_503_saying_so_and_nothing_is_audited(api):
    root = api.admin()
    body = {"dag": "orchard_posttrain", "conf": {"sft_steps": 10}}
    for response in (
        api.http.post("/admin/jobs", json=body, headers=root.headers),
        api.http.get("/admin/jobs", headers=root.headers),
    ):
        assert response.status_code == 503, response.text
        error = response.json()
        assert error["code"] == "airflow_unavailable"
        assert (
            f"127.0.0.1:{AIRFLOW_PORT}" in error["detail"] and "does not answer" in error["detail"]
        )
    audit = api.http.get("/admin/audit", params={"action": "job.trigger"}, headers=root.headers)
    assert audit.json() == []


def test_airflow_never_set_up_is_503_naming_orchard_up(api):
    (api.settings.secrets_dir / AIRFLOW_PASSWORD_SECRET).unlink()
    root = api.admin()
    response = api.http.get("/admin/jobs", headers=root.headers)
    assert response.status_code == 503
    assert "orchard up" in response.json()["detail"]
