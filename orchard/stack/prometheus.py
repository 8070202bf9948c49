"""Prometheus in the local stack: Debian's `prometheus` on loopback, scraping every service.

`prepare()` writes `<home>/prometheus/prometheus.yml` (one scrape job per service, named
after it) and copies the alert rules of `infra/prometheus/` beside it, so a stack always
evaluates the rules of the checkout that started it. The time series live in
`<home>/prometheus/data` (seven days).

What each job scrapes:
- `ray`: the head's metrics agent (`--metrics-export-port`, ORCHARD_RAY_INTERNAL_PORT_BASE
  + 2): Ray's cluster metrics, Ray Serve's, serving's `ray_orchard_serve_*`
  (serving/metrics.py) and training's `ray_orchard_train_*` (orchard/train_metrics.py),
  all exported through Ray's own metrics pipeline;
- `api`: the platform API's `/metrics` (platform_api/observability.py);
- `mlflow`: MLflow's `/metrics` (`mlflow server --expose-prometheus`);
- `airflow`: Airflow's OpenTelemetry metrics, as the OTLP receiver (`orchard.stack.otlp`,
  the `otlp` service) accumulates them;
- `prometheus`: itself.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

from orchard.settings import Settings
from orchard.stack.services import Service, base_env

RULES_SOURCE = Path(__file__).resolve().parents[2] / "infra" / "prometheus"
# How long a rule's condition must hold is the rule's business; how often they are
# evaluated is the stack's: as often as it scrapes.


def prometheus_dir(settings: Settings) -> Path:
    return settings.home / "prometheus"


def scrape_targets(settings: Settings) -> dict[str, tuple[str, str]]:
    """Job name → (host:port, metrics path), for the services this stack runs itself."""
    host = settings.host
    targets = {"prometheus": (f"{host}:{settings.prometheus_port}", "/metrics")}
    if not settings.ray_address:
        metrics_port = settings.ray_ports["metrics-export-port"]
        targets["ray"] = (f"{host}:{metrics_port}", "/metrics")
    if not settings.mlflow_tracking_uri:
        targets["mlflow"] = (f"{host}:{settings.mlflow_port}", "/metrics")
    if not settings.airflow_url:
        targets["airflow"] = (f"{host}:{settings.otlp_port}", "/metrics")
    targets["api"] = (f"{host}:{settings.api_port}", "/metrics")
    return targets


def rule_files(settings: Settings) -> list[Path]:
    return sorted((prometheus_dir(settings) / "rules").glob("*.yml"))


def config(settings: Settings) -> dict:
    interval = f"{settings.prometheus_scrape_interval_s}s"
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": f"{min(settings.prometheus_scrape_interval_s, 10)}s",
            "evaluation_interval": interval,
            "external_labels": {"orchard_home": str(settings.home)},
        },
        "rule_files": [str(prometheus_dir(settings) / "rules" / "*.yml")],
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": path,
                "static_configs": [{"targets": [target]}],
            }
            for job, (target, path) in scrape_targets(settings).items()
        ],
    }


def write_config(settings: Settings) -> Path:
    """prometheus.yml and the rules, under the home; returns the config's path."""
    root = prometheus_dir(settings)
    rules = root / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    for old in rules.glob("*.yml"):
        old.unlink()
    for source in sorted(RULES_SOURCE.glob("*.rules.yml")):
        shutil.copyfile(source, rules / source.name)
    path = root / "prometheus.yml"
    path.write_text(yaml.safe_dump(config(settings), sort_keys=False))
    return path


def prometheus_service(settings: Settings) -> Service:
    url = settings.prometheus_base_url
    health = f"{url}/-/ready"
    title = "Prometheus"
    if settings.prometheus_url:
        return Service("prometheus", title, url, health)
    binary = shutil.which("prometheus")
    if binary is None:
        return Service(
            "prometheus",
            title,
            url,
            health,
            unavailable="no `prometheus` binary: on Debian `apt-get install prometheus` "
            "(or set ORCHARD_PROMETHEUS_URL to a Prometheus server)",
        )
    root = prometheus_dir(settings)

    def prepare() -> dict[str, str]:
        write_config(settings)
        (root / "data").mkdir(parents=True, exist_ok=True)
        return base_env(settings)

    command = [
        binary,
        f"--config.file={root / 'prometheus.yml'}",
        f"--storage.tsdb.path={root / 'data'}",
        "--storage.tsdb.retention.time=7d",
        f"--web.listen-address={settings.host}:{settings.prometheus_port}",
        f"--web.external-url={url}",
    ]
    return Service(
        "prometheus",
        title,
        url,
        health,
        command=command,
        prepare=prepare,
        ports={"prometheus_port": settings.prometheus_port},
        startup_timeout=60.0,
    )


def airflow_metrics_env(settings: Settings) -> dict[str, str]:
    """Airflow's OpenTelemetry metrics, exported to the stack's OTLP receiver as deltas."""
    return {
        "AIRFLOW__METRICS__OTEL_ON": "True",
        "AIRFLOW__METRICS__OTEL_HOST": settings.host,
        "AIRFLOW__METRICS__OTEL_PORT": str(settings.otlp_port),
        "AIRFLOW__METRICS__OTEL_SSL_ACTIVE": "False",
        "AIRFLOW__METRICS__OTEL_INTERVAL_MILLISECONDS": str(
            settings.prometheus_scrape_interval_s * 1000
        ),
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta",
    }


def otlp_service(settings: Settings) -> Service:
    """The OTLP receiver Airflow's metrics go to (none for an external Airflow)."""
    url = f"http://{settings.host}:{settings.otlp_port}"
    title = "Airflow metrics (OTLP receiver)"
    if settings.airflow_url:
        return Service(
            "otlp",
            title,
            url,
            f"{url}/healthz",
            unavailable="ORCHARD_AIRFLOW_URL is an external Airflow: send its OpenTelemetry "
            "metrics to a collector your Prometheus scrapes",
        )
    return Service(
        "otlp",
        title,
        url,
        f"{url}/healthz",
        command=[
            sys.executable,
            "-m",
            "orchard.stack.otlp",
            "--host",
            settings.host,
            "--port",
            str(settings.otlp_port),
        ],
        prepare=lambda: base_env(settings),
        ports={"otlp_port": settings.otlp_port},
        startup_timeout=30.0,
    )
