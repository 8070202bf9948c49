"""Training jobs without Airflow: who may call them, what they accept, and a clear 503
when Airflow cannot be reached or was never set up. (Triggering and listing against the
real Airflow: tests/integration/test_admin_jobs.py.)"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchard import credentials
from orchard.credentials import AIRFLOW_PASSWORD_SECRET
from orchard.settings import Settings
from testkit.serving_stub import ServingStub
from tests.conftest import free_port

AIRFLOW_PORT = free_port()  # nothing listens there


@pytest.fixture
def settings(clean_env, database_url: str, serving: ServingStub) -> Settings:
    settings = Settings(
        home=clean_env,
        database_url=database_url,
        serving_url=serving.url,
        airflow_url=f"http://127.0.0.1:{AIRFLOW_PORT}",
    )
    credentials.get_or_create(settings.secrets_dir, AIRFLOW_PASSWORD_SECRET)  # as `orchard up` does
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


def test_airflow_without_credentials_is_503_naming_the_settings_to_set(api):
    (api.settings.secrets_dir / AIRFLOW_PASSWORD_SECRET).unlink()
    root = api.admin()
    response = api.http.get("/admin/jobs", headers=root.headers)
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert api.settings.airflow_url in detail
    assert "ORCHARD_AIRFLOW_PASSWORD" in detail and "ORCHARD_AIRFLOW_TOKEN" in detail


class AirflowStub:
    """Airflow's REST API as admin jobs uses it (login, a DAG, trigger, a run, the list),
    on loopback, so the links the platform builds can be checked without Airflow."""

    RUN = {"dag_id": "orchard_build", "dag_run_id": "manual__1", "state": "queued", "conf": {}}

    def __init__(self) -> None:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.endswith("/dagRuns/manual__1"):
                    return stub.reply(self, stub.RUN)
                return stub.reply(self, {"dag_id": "orchard_build", "is_paused": False})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/auth/token":
                    return stub.reply(self, {"access_token": "token"})
                if self.path == "/api/v2/dags/~/dagRuns/list":
                    return stub.reply(self, {"dag_runs": [stub.RUN], "total_entries": 1})
                return stub.reply(self, {"dag_run_id": "manual__1"})

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def reply(handler: BaseHTTPRequestHandler, body: dict) -> None:
        data = json.dumps(body).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TestBrowserLinks:
    """Links to Airflow's and MLflow's UIs: the public addresses when set (what a browser
    reaches behind an ingress), else the servers' own."""

    @pytest.fixture(params=[False, True], ids=["server-addresses", "public-addresses"])
    def public(self, request) -> bool:
        return request.param

    @pytest.fixture
    def airflow(self) -> Iterator[AirflowStub]:
        stub = AirflowStub()
        try:
            yield stub
        finally:
            stub.stop()

    @pytest.fixture
    def settings(self, clean_env, database_url, serving, airflow, public) -> Settings:
        extra = (
            {
                "airflow_public_url": "https://airflow.example.org/",
                "mlflow_public_url": "https://mlflow.example.org",
            }
            if public
            else {}
        )
        settings = Settings(
            home=clean_env,
            database_url=database_url,
            serving_url=serving.url,
            airflow_url=airflow.url,
            **extra,
        )
        credentials.get_or_create(settings.secrets_dir, AIRFLOW_PASSWORD_SECRET)
        return settings

    def expected(self, api, public: bool) -> tuple[str, str]:
        if public:
            return "https://airflow.example.org", "https://mlflow.example.org"
        return api.settings.airflow_base_url, api.settings.mlflow_uri

    def test_listing_links(self, api, airflow, public):
        airflow_ui, mlflow_ui = self.expected(api, public)
        assert (airflow_ui == airflow.url) is not public
        root = api.admin()
        listing = api.http.get("/admin/jobs", headers=root.headers)
        assert listing.status_code == 200, listing.text
        body = listing.json()
        assert (body["airflow_url"], body["mlflow_url"]) == (airflow_ui, mlflow_ui)
        assert [run["airflow_url"] for run in body["runs"]] == [
            f"{airflow_ui}/dags/orchard_build/runs/manual__1"
        ]

    def test_trigger_links(self, api, public):
        airflow_ui, mlflow_ui = self.expected(api, public)
        root = api.admin()
        body = {"dag": "orchard_build", "conf": {}}
        triggered = api.http.post("/admin/jobs", json=body, headers=root.headers)
        assert triggered.status_code == 201, triggered.text
        run = triggered.json()
        assert run["airflow_url"] == f"{airflow_ui}/dags/orchard_build/runs/manual__1"
        assert run["mlflow_url"] == mlflow_ui
