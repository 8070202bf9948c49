"""The admin health page's data: links to the operations UIs from the settings, and an
honest "unavailable" when Prometheus does not answer (tests/integration/
test_observability.py reads real numbers from the stack's Prometheus)."""

from __future__ import annotations

import pytest

from tests.conftest import free_port


@pytest.fixture
def settings(settings):
    closed = free_port()  # nothing listens there
    return settings.model_copy(
        update={
            "prometheus_url": f"http://127.0.0.1:{closed}",
            "grafana_url": "https://grafana.example.org",
            "airflow_public_url": "https://airflow.example.org",
        }
    )


def test_admins_get_links_and_the_reason_prometheus_is_unavailable(api, settings):
    root, alice = api.admin(), api.user("alice")
    assert api.http.get("/admin/health", headers=alice.headers).status_code == 403
    response = api.http.get("/admin/health", headers=root.headers)
    assert response.status_code == 200, response.text
    health = response.json()
    assert health["available"] is False
    assert f"Prometheus at {settings.prometheus_url} did not answer" in health["detail"]
    assert health["serving"] == {
        "requests_per_second": None,
        "error_ratio": None,
        "ttft_p95_seconds": None,
        "queue_depth": None,
    }
    assert health["links"] == {
        "grafana": "https://grafana.example.org/dashboards/f/orchard",
        "prometheus": settings.prometheus_url,
        "airflow": "https://airflow.example.org",
        "mlflow": settings.mlflow_uri,
        "ray": settings.ray_dashboard_url,
    }
