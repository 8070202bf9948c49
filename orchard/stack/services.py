"""The services of the local stack, built from the settings.

A service is a command, the environment it runs with, the ports it will bind, and a
health URL. One whose production address is configured (`ORCHARD_MLFLOW_TRACKING_URI`,
`ORCHARD_RAY_ADDRESS`, `ORCHARD_AIRFLOW_URL`) is external: `orchard up` starts nothing
for it and only checks its health.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
from minio import Minio
from minio.error import S3Error

from orchard import credentials
from orchard.credentials import ray_auth_env, ray_auth_headers
from orchard.errors import OrchardError
from orchard.settings import Settings
from orchard.storage import is_uri, join


def _status_ok(response: httpx.Response) -> bool:
    return response.status_code == 200


def _airflow_healthy(response: httpx.Response) -> bool:
    if response.status_code != 200:
        return False
    body = response.json()
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all((body.get(part) or {}).get("status") == "healthy" for part in parts)


@dataclass(frozen=True)
class Service:
    name: str
    title: str
    url: str
    health_url: str
    command: list[str] | None = None
    # Creates what the service needs on disk (dirs, secrets) and returns its environment;
    # called only when the service is about to start, so `status` writes nothing.
    prepare: Callable[[], dict[str, str]] = dict
    ports: dict[str, int] = field(default_factory=dict)
    healthy: Callable[[httpx.Response], bool] = _status_ok
    health_headers: Callable[[], dict[str, str]] = dict
    startup_timeout: float = 180.0
    cleanup: Callable[[], None] | None = None
    # Set when the service cannot run here; `up` skips it and `status` says why.
    unavailable: str | None = None

    @property
    def external(self) -> bool:
        return self.command is None and self.unavailable is None


def _bin(name: str) -> str:
    """A console script of the environment Orchard runs in."""
    return str(Path(sys.executable).parent / name)


def base_env(settings: Settings) -> dict[str, str]:
    env = {
        key: value for key, value in os.environ.items() if not key.upper().startswith("ORCHARD_")
    }
    env.update(settings.to_env())
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(ray_auth_env(settings))
    return env


def s3_env(settings: Settings) -> dict[str, str]:
    """What boto3 (and so MLflow and fsspec) needs to reach the configured S3 endpoint."""
    if not settings.s3_endpoint:
        return {}
    env = {"MLFLOW_S3_ENDPOINT_URL": settings.s3_endpoint, "AWS_DEFAULT_REGION": settings.s3_region}
    if settings.s3_access_key and settings.s3_secret_key:
        env["AWS_ACCESS_KEY_ID"] = settings.s3_access_key.get_secret_value()
        env["AWS_SECRET_ACCESS_KEY"] = settings.s3_secret_key.get_secret_value()
    return env


def ensure_bucket(settings: Settings, bucket: str | None = None) -> None:
    """Create the artifact bucket (or `bucket`: the data root's) on the S3/MinIO endpoint
    if it does not exist yet."""
    bucket = bucket or settings.s3_bucket
    endpoint = urlparse(settings.s3_endpoint)
    client = Minio(
        endpoint.netloc,
        access_key=settings.s3_access_key.get_secret_value() if settings.s3_access_key else None,
        secret_key=settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None,
        secure=endpoint.scheme == "https",
        region=settings.s3_region,
    )
    try:
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
    except (S3Error, OSError) as error:
        raise OrchardError(
            f"cannot use bucket {bucket!r} at {settings.s3_endpoint} ({error}): "
            "check ORCHARD_S3_ENDPOINT and the ORCHARD_S3_* credentials"
        ) from None


def ray_temp_dir(settings: Settings) -> Path:
    # Ray puts unix sockets under its temp dir, and a socket path must stay under
    # 107 bytes; a deep ORCHARD_HOME would break it, so fall back to a short path.
    preferred = settings.home / "ray"
    if len(str(preferred)) <= 40:
        return preferred
    import hashlib

    digest = hashlib.sha1(str(settings.home).encode()).hexdigest()[:10]
    return Path("/tmp") / f"orchard-ray-{digest}"


def ray_service(settings: Settings) -> Service:
    url = settings.ray_dashboard_url
    if settings.ray_address:
        return Service("ray", "Ray dashboard", url, f"{url}/api/version")
    temp_dir = ray_temp_dir(settings)
    command = [
        _bin("ray"),
        "start",
        "--head",
        "--block",
        f"--node-ip-address={settings.host}",
        f"--port={settings.ray_port}",
        f"--ray-client-server-port={settings.ray_client_port}",
        "--include-dashboard=true",
        f"--dashboard-host={settings.host}",
        f"--dashboard-port={settings.ray_dashboard_port}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    command += [f"--{option}={port}" for option, port in settings.ray_ports.items()]
    if settings.ray_num_cpus:
        command.append(f"--num-cpus={settings.ray_num_cpus}")
    if settings.ray_object_store_mb:
        command.append(f"--object-store-memory={settings.ray_object_store_mb * 1024 * 1024}")

    def prepare() -> dict[str, str]:
        env = base_env(settings)
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        return env

    ports = {
        "ray_port": settings.ray_port,
        "ray_dashboard_port": settings.ray_dashboard_port,
        "ray_client_port": settings.ray_client_port,
    }
    base = settings.ray_internal_port_base
    ports |= {f"ray_internal_port_base (+{p - base})": p for p in settings.ray_ports.values()}

    def cleanup() -> None:
        # A stale pointer here makes a later ray.init(_temp_dir=...) join a dead cluster.
        (temp_dir / "ray_current_cluster").unlink(missing_ok=True)

    return Service(
        "ray",
        "Ray dashboard",
        url,
        f"{url}/api/version",
        command=command,
        prepare=prepare,
        ports=ports,
        cleanup=cleanup,
        health_headers=lambda: ray_auth_headers(settings),
    )


def mlflow_service(settings: Settings) -> Service:
    url = settings.mlflow_uri
    if settings.mlflow_tracking_uri:
        return Service("mlflow", "MLflow", url, f"{url}/health")
    state = settings.home / "mlflow"
    remote_root = is_uri(settings.data_dir)
    if remote_root:  # the same store as the step outputs and checkpoints
        artifacts = join(settings.data_dir, "mlflow-artifacts")
    elif settings.s3_endpoint:
        artifacts = f"s3://{settings.s3_bucket}/mlflow"
    else:
        artifacts = str(Path(settings.data_dir) / "mlflow-artifacts")

    def prepare() -> dict[str, str]:
        state.mkdir(parents=True, exist_ok=True)
        # The exporter's per-process files of an earlier run would be summed in.
        shutil.rmtree(state / "prometheus", ignore_errors=True)
        env = base_env(settings)
        # The job-execution worker costs ~1 GB and Orchard runs its jobs on Ray.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        env.update(s3_env(settings))
        if settings.s3_endpoint:
            ensure_bucket(settings)
            if remote_root:
                ensure_bucket(settings, urlparse(settings.data_dir).netloc)
        return env

    command = [
        _bin("mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{state / 'mlflow.db'}",
        "--artifacts-destination",
        artifacts,
        "--host",
        settings.host,
        "--port",
        str(settings.mlflow_port),
        "--workers",
        "1",
        # /metrics for Prometheus (prometheus-flask-exporter; multiprocess files here)
        "--expose-prometheus",
        str(state / "prometheus"),
    ]
    return Service(
        "mlflow",
        "MLflow",
        url,
        f"{url}/health",
        command=command,
        prepare=prepare,
        ports={"mlflow_port": settings.mlflow_port},
    )


def dags_folder() -> Path:
    import dags

    return Path(dags.__file__).parent


def airflow_env(settings: Settings) -> dict[str, str]:
    """Airflow's configuration for the local stack, as AIRFLOW__* variables."""
    home = settings.home / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    sdir = credentials.private_dir(settings.secrets_dir)
    password, _ = credentials.airflow_admin_password(settings)
    passwords_file = sdir / credentials.AIRFLOW_PASSWORDS_FILE
    passwords_file.write_text(json.dumps({settings.airflow_username: password}))
    os.chmod(passwords_file, 0o600)
    url = f"http://{settings.host}:{settings.airflow_port}"
    env = base_env(settings)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder()),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(settings.airflow_parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": credentials.get_or_create(
                sdir, credentials.AIRFLOW_FERNET_KEY_SECRET, credentials.fernet_key
            )[0],
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.airflow_username}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__HOST": settings.host,
            "AIRFLOW__API__PORT": str(settings.airflow_port),
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": credentials.get_or_create(
                sdir, credentials.AIRFLOW_API_SECRET_KEY_SECRET
            )[0],
            "AIRFLOW__API_AUTH__JWT_SECRET": credentials.get_or_create(
                sdir, credentials.AIRFLOW_JWT_SECRET
            )[0],
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(settings.airflow_worker_log_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(settings.airflow_trigger_log_port),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(
                settings.airflow_scheduler_health_port
            ),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        }
    )
    from orchard.stack.prometheus import airflow_metrics_env

    env.update(airflow_metrics_env(settings))
    return env


def airflow_service(settings: Settings) -> Service:
    url = settings.airflow_base_url
    health = f"{url}/api/v2/monitor/health"
    if settings.airflow_url:
        return Service("airflow", "Airflow", url, health, healthy=_airflow_healthy)
    return Service(
        "airflow",
        "Airflow",
        url,
        health,
        command=[_bin("airflow"), "standalone"],
        prepare=lambda: airflow_env(settings),
        ports={
            "airflow_port": settings.airflow_port,
            "airflow_worker_log_port": settings.airflow_worker_log_port,
            "airflow_trigger_log_port": settings.airflow_trigger_log_port,
            "airflow_scheduler_health_port": settings.airflow_scheduler_health_port,
        },
        healthy=_airflow_healthy,
        startup_timeout=300.0,
    )


def api_service(settings: Settings) -> Service:
    url = settings.api_url
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "platform_api.app:create_app",
        "--factory",
        "--host",
        settings.host,
        "--port",
        str(settings.api_port),
    ]
    return Service(
        "api",
        "Platform API",
        url,
        f"{url}/healthz",
        command=command,
        prepare=lambda: base_env(settings),
        ports={"api_port": settings.api_port},
    )


def site_service(settings: Settings) -> Service:
    """The demo website the default pipeline crawls, served over real HTTP on loopback."""
    url = settings.site_url
    index = settings.site_dir / "index.html"
    if not index.is_file():
        return Service(
            "site",
            "Demo website",
            url,
            f"{url}/",
            unavailable=f"no {index}: on Debian `apt-get install python3.11-doc`, "
            "or set ORCHARD_SITE_DIR to any folder of HTML pages",
        )
    command = [
        sys.executable,
        "-m",
        "http.server",
        "--bind",
        settings.host,
        "--directory",
        str(settings.site_dir),
        str(settings.site_port),
    ]
    return Service(
        "site",
        "Demo website",
        url,
        f"{url}/index.html",
        command=command,
        prepare=lambda: base_env(settings),
        ports={"site_port": settings.site_port},
        startup_timeout=30.0,
    )


def serve_service(settings: Settings) -> Service:
    """Orchard's Ray Serve application (serving/) on the local Ray head, OpenAI API on loopback.

    The process is a small deployer (serving.deploy): it deploys the app through the Ray
    dashboard's Serve REST API, keeps it deployed, and removes it on SIGTERM.
    """
    url = settings.serving_base_url
    health = f"{url}/healthz"
    title = "Serving (OpenAI API)"
    if settings.serving_url:
        return Service("serve", title, url, health)
    if settings.ray_address:
        return Service(
            "serve",
            title,
            url,
            health,
            unavailable="ORCHARD_RAY_ADDRESS is an external Ray cluster: deploy serving there "
            "(`python -m serving.config` prints its Serve config) and set ORCHARD_SERVING_URL",
        )
    return Service(
        "serve",
        title,
        url,
        health,
        command=[sys.executable, "-m", "serving.deploy"],
        prepare=lambda: base_env(settings),
        ports={"serve_port": settings.serve_port},
        startup_timeout=240.0,
    )


SERVICE_NAMES = ("ray", "mlflow", "serve", "airflow", "api", "site", "otlp", "prometheus")


def build_services(settings: Settings) -> list[Service]:
    """The stack in start order (they start together; this is display order)."""
    from orchard.stack.prometheus import otlp_service, prometheus_service  # built on this

    # The OTLP receiver and Prometheus before Airflow and the API: `down` stops in reverse
    # order, so Airflow stops while its metrics receiver still answers (a stopped receiver
    # left Airflow's exporters retrying through their shutdown).
    return [
        ray_service(settings),
        mlflow_service(settings),
        serve_service(settings),
        otlp_service(settings),
        prometheus_service(settings),
        airflow_service(settings),
        api_service(settings),
        site_service(settings),
    ]
