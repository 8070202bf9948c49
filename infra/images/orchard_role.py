"""The entry point of Orchard's image: the first argument picks the role.

    orchard-role api                  the platform API + web UI (uvicorn, as `orchard up`)
    orchard-role migrate              Alembic migrations of the platform database
    orchard-role mlflow               MLflow tracking server (MLFLOW_* variables configure it)
    orchard-role airflow ARGS...      any Airflow command (api-server, scheduler, ...)
    orchard-role ray ARGS...          any Ray command (KubeRay pods run `ray start` directly)
    orchard-role serve-config ARGS... print the Serve config (python -m serving.config)
    orchard-role healthcheck          probe the running role's health endpoint (HEALTHCHECK)
    orchard-role bash|sh|python ...   run it as it is: charts that pass a whole command as
                                      arguments (the official Airflow chart's `bash -c
                                      "exec airflow scheduler"`) work with this image

The commands, ports and health endpoints are those of the local stack
(orchard/stack/services.py); only the bind address differs (0.0.0.0 in a container).
Standard library only: it runs before anything else is known to work.
"""

from __future__ import annotations

import os
import sys
import tempfile
import urllib.request
from pathlib import Path

ROLE_FILE = Path(tempfile.gettempdir()) / "orchard-role"
ROLES = ("api", "migrate", "mlflow", "airflow", "ray", "serve-config", "healthcheck")
PASSTHROUGH = ("bash", "sh", "python")


def _port(name: str, default: int) -> str:
    return os.environ.get(name, str(default))


def command(role: str, args: list[str]) -> list[str]:
    """The command line a role runs; ValueError names the roles for an unknown one."""
    python = sys.executable
    if role == "api":
        return [
            python,
            "-m",
            "uvicorn",
            "platform_api.app:create_app",
            "--factory",
            "--host",
            "0.0.0.0",
            "--port",
            _port("ORCHARD_API_PORT", 8000),
            "--proxy-headers",
            "--forwarded-allow-ips",
            os.environ.get("FORWARDED_ALLOW_IPS", "*"),
            *args,
        ]
    if role == "migrate":
        return [python, "-m", "platform_api.manage", "migrate"]
    if role == "mlflow":
        if not os.environ.get("MLFLOW_BACKEND_STORE_URI"):
            raise ValueError(
                "the mlflow role needs MLFLOW_BACKEND_STORE_URI (e.g. "
                "postgresql+psycopg://mlflow:...@postgres:5432/mlflow)"
            )
        # Host, port, artifacts destination and allowed hosts come from MLFLOW_HOST,
        # MLFLOW_PORT, MLFLOW_ARTIFACTS_DESTINATION, MLFLOW_SERVER_ALLOWED_HOSTS.
        return ["mlflow", "server", *args]
    if role in ("airflow", "ray") or role in PASSTHROUGH:
        return [role, *args]
    if role == "serve-config":
        return [python, "-m", "serving.config", *args]
    raise ValueError(
        f"unknown role {role!r}: the first argument is one of {', '.join(ROLES)} "
        f"(or a command: {', '.join(PASSTHROUGH)})"
    )


def health_url(role: str) -> str | None:
    """The URL `orchard up` checks for a role, on loopback; None for roles without one."""
    if role == "api":
        return f"http://127.0.0.1:{_port('ORCHARD_API_PORT', 8000)}/healthz"
    if role == "mlflow":
        return f"http://127.0.0.1:{_port('MLFLOW_PORT', 5000)}/health"
    if role == "airflow api-server":
        return f"http://127.0.0.1:{_port('AIRFLOW__API__PORT', 8080)}/api/v2/monitor/health"
    if role == "airflow scheduler":
        port = _port("AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT", 8974)
        return f"http://127.0.0.1:{port}/health"
    return None


def healthcheck() -> int:
    role = ROLE_FILE.read_text().strip() if ROLE_FILE.exists() else ""
    url = health_url(role)
    if url is None:
        return 0
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as error:
        print(f"{role}: {url} does not answer: {error}", file=sys.stderr)
        return 1


def main(argv: list[str]) -> int:
    role, args = (argv[0], argv[1:]) if argv else ("api", [])
    if role == "healthcheck":
        return healthcheck()
    try:
        argv_out = command(role, args)
    except ValueError as error:
        print(f"orchard-role: {error}", file=sys.stderr)
        return 2
    described = f"{role} {args[0]}" if role == "airflow" and args else role
    try:
        ROLE_FILE.write_text(described + "\n")
    except OSError:  # a read-only /tmp: the HEALTHCHECK then reports healthy
        pass
    os.execvp(argv_out[0], argv_out)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
