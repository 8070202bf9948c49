"""Prometheus in the local stack: every service a healthy target, the alert rules loaded,
and after a small workload every query of every Grafana dashboard returns data."""

from __future__ import annotations

import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from orchard import dashboards
from orchard.airflow_client import AirflowClient
from orchard.stack import process
from testkit import observability as workload
from testkit.observability import Prometheus

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JOBS = {"ray", "api", "mlflow", "airflow", "prometheus"}


@pytest.fixture(scope="module")
def prometheus(stack) -> Prometheus:
    return Prometheus(stack.settings().prometheus_base_url)


@pytest.fixture(scope="module")
def after_workload(stack, prometheus, tmp_path_factory) -> float:
    """Runs the workload; returns when it started (the window the panels are asked about)."""
    settings = stack.settings()
    started = time.time()
    airflow = AirflowClient.from_settings(settings)
    airflow.wait_for_dag("orchard_smoke")
    with ThreadPoolExecutor(4) as pool:
        training = pool.submit(workload.train, settings, f"observe-{uuid.uuid4().hex[:6]}", 8)
        runs = [airflow.trigger("orchard_smoke", {"fail": True}) for _ in range(2)]
        runs.append(airflow.trigger("orchard_smoke", {"message": "observed"}))
        workload.serve_champion(settings, tmp_path_factory.mktemp("observe"))
        workload.chat_through_serving(settings, answers=1)
        workload.chat_through_the_api(settings)
        states = [airflow.wait_for_run("orchard_smoke", run, timeout=300) for run in runs]
        training.result()
    # Rates need a series seen before it grows: serve again once Prometheus has the first
    # answer's series (a series born with its only requests shows no rate), and last, so
    # the increase is inside the panels' 5-minute windows however long the training took.
    for series in ("time_to_first_token_seconds_count", "requests_total"):
        assert prometheus.wait(f"ray_orchard_serve_{series}", timeout=60)
    workload.chat_through_serving(settings)
    airflow.close()
    assert states == ["failed", "failed", "success"]
    # Two scrapes after the last of it (Ray exports its metrics every few seconds too).
    time.sleep(3 * settings.prometheus_scrape_interval_s)
    return started


def test_every_service_is_a_healthy_target(stack, prometheus):
    deadline = time.monotonic() + 60
    while True:
        targets = prometheus.targets()
        down = [(t["labels"]["job"], t["lastError"]) for t in targets if t["health"] != "up"]
        if {t["labels"]["job"] for t in targets} == JOBS and not down:
            break
        assert time.monotonic() < deadline, f"targets not all up: {down}"
        time.sleep(2)
    durations = {t["labels"]["job"]: t["lastScrapeDuration"] for t in targets}
    record = process.read_record(stack.settings().run_dir, "prometheus")
    memory = process.resident_bytes(record) / 2**20
    print(f"scrape durations (s): {durations}; Prometheus resident memory {memory:.0f} MiB")


def test_the_alert_rules_are_loaded(prometheus):
    groups = prometheus.http.get("/api/v1/rules").json()["data"]["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    assert {
        "OrchardTrainingStalled",
        "OrchardServingErrorRate",
        "OrchardDagFailingRepeatedly",
    } <= loaded
    assert all(rule["health"] == "ok" for group in groups for rule in group["rules"])


def test_every_dashboard_panel_returns_data_after_a_workload(after_workload, prometheus):
    end = time.time()
    has_gpu = bool(prometheus.query("ray_node_gpus_available"))
    empty, panels = [], 0
    for name, board in dashboards.load().items():
        for panel in board["panels"]:
            panels += 1
            if dashboards.GPU_ONLY in panel["description"] and not has_gpu:
                continue
            for target in panel["targets"]:
                result = prometheus.query_range(target["expr"], after_workload, end, step=5)
                values = [float(v) for series in result for _, v in series["values"]]
                if not any(math.isfinite(v) for v in values):  # NaN: e.g. 0/0, no rate
                    empty.append(f"{name}: {panel['title']}: {target['expr']}")
    print(f"{panels} panels in {len(dashboards.load())} dashboards asked of Prometheus")
    assert not empty, "queries without a finite value:\n" + "\n".join(empty)


def test_a_dag_failing_twice_fires_its_alert(after_workload, prometheus):
    deadline = time.monotonic() + 30
    while True:
        alerts = prometheus.http.get("/api/v1/alerts").json()["data"]["alerts"]
        firing = {
            a["labels"].get("dag_id")
            for a in alerts
            if a["labels"]["alertname"] == "OrchardDagFailingRepeatedly" and a["state"] == "firing"
        }
        if "orchard_smoke" in firing or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert "orchard_smoke" in firing


def test_the_admin_health_reads_serving_from_prometheus(stack, after_workload):
    import httpx

    from platform_api.db import database_url
    from testkit.platform import Api

    settings = stack.settings()
    with httpx.Client(base_url=f"{settings.api_url}/api/v1", timeout=30) as http:
        api = Api(
            http=http, root=settings.api_url, settings=settings, database_url=database_url(settings)
        )
        root = api.admin(f"ops-{uuid.uuid4().hex[:6]}")
        health = http.get("/admin/health", headers=root.headers).json()
    assert health["available"] is True, health
    assert health["serving"]["ttft_p95_seconds"] > 0
    assert health["serving"]["requests_per_second"] > 0
    assert 0 <= health["serving"]["error_ratio"] < 1
    assert {t["job"] for t in health["targets"] if t["up"]} == JOBS
    assert "OrchardDagFailingRepeatedly" in health["firing_alerts"]
    assert health["links"]["airflow"] == settings.airflow_base_url
