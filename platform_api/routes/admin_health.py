"""Administrators: the platform's health from Prometheus (serving's time to first token,
error ratio and queue; every scrape target; the alerts firing) and links to the
operations UIs (Grafana, Prometheus, Airflow, MLflow, Ray) from the settings.

Prometheus is `ORCHARD_PROMETHEUS_URL`, else the local stack's. When it does not answer,
the page still gets its links, with `available: false` and why."""

from __future__ import annotations

import math

import httpx
from fastapi import APIRouter, Request

from orchard.pipeline import airflow_ui_url, mlflow_ui_url
from orchard.settings import Settings
from platform_api.deps import AdminUser
from platform_api.schemas import OpsHealth, OpsLinks, ServingHealth, TargetHealth

router = APIRouter(prefix="/admin", tags=["admin"])
TIMEOUT_S = 3.0
SERVE = "ray_orchard_serve"
QUERIES = {
    "requests_per_second": f"sum(rate({SERVE}_requests_total[5m]))",
    "error_ratio": f'(sum(rate({SERVE}_requests_total{{status=~"5.."}}[5m])) or vector(0))'
    f" / sum(rate({SERVE}_requests_total[5m]))",
    "ttft_p95_seconds": "histogram_quantile(0.95, sum by (le) "
    f"(rate({SERVE}_time_to_first_token_seconds_bucket[5m])))",
    "queue_depth": f"sum({SERVE}_queue_depth)",
}


def links(settings: Settings) -> OpsLinks:
    grafana = f"{settings.grafana_url}/dashboards/f/orchard" if settings.grafana_url else None
    return OpsLinks(
        grafana=grafana,
        prometheus=settings.prometheus_base_url,
        airflow=airflow_ui_url(settings),
        mlflow=mlflow_ui_url(settings),
        ray=settings.ray_dashboard_url,
    )


def _scalar(client: httpx.Client, expr: str) -> float | None:
    body = client.get("/api/v1/query", params={"query": expr}).raise_for_status().json()
    result = body["data"]["result"]
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) or math.isinf(value) else value


@router.get("/health", response_model=OpsHealth)
def ops_health(request: Request, admin: AdminUser) -> OpsHealth:
    settings: Settings = request.app.state.settings
    try:
        with httpx.Client(base_url=settings.prometheus_base_url, timeout=TIMEOUT_S) as client:
            serving = ServingHealth(**{k: _scalar(client, q) for k, q in QUERIES.items()})
            targets = client.get("/api/v1/targets").raise_for_status().json()
            alerts = client.get("/api/v1/alerts").raise_for_status().json()
    except (httpx.HTTPError, ValueError, KeyError) as error:
        return OpsHealth(
            available=False,
            detail=f"Prometheus at {settings.prometheus_base_url} did not answer: {error}",
            serving=ServingHealth(),
            targets=[],
            firing_alerts=[],
            links=links(settings),
        )
    return OpsHealth(
        available=True,
        serving=serving,
        targets=sorted(
            (
                TargetHealth(job=t["labels"]["job"], up=t["health"] == "up")
                for t in targets["data"]["activeTargets"]
            ),
            key=lambda t: t.job,
        ),
        firing_alerts=sorted(
            {a["labels"]["alertname"] for a in alerts["data"]["alerts"] if a["state"] == "firing"}
        ),
        links=links(settings),
    )
