"""The `orchard` CLI as a user runs it: clear one-line errors, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchard.stack.services import SERVICE_NAMES
from tests.conftest import REPO, orchard, stack_env


@pytest.fixture
def env(clean_env) -> dict[str, str]:
    """A private home and free ports, so a stack running on this machine is not in the way."""
    return stack_env(clean_env)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_unknown_setting_is_one_line_with_exit_2(env):
    env["ORCHARD_MLFLOW_PROT"] = "5001"
    result = orchard(env, "status")
    assert result.returncode == 2
    assert "ORCHARD_MLFLOW_PROT" in one_line_error(result)


def test_bad_setting_value_is_one_line(env):
    env["ORCHARD_AIRFLOW_PORT"] = "eighty"
    result = orchard(env, "up")
    assert result.returncode == 2
    assert "ORCHARD_AIRFLOW_PORT" in one_line_error(result)


def test_status_on_a_fresh_home_shows_stopped_and_writes_nothing(env, clean_env):
    result = orchard(env, "status")
    assert result.returncode == 1
    for name in SERVICE_NAMES:
        line = next(line for line in result.stdout.splitlines() if f" {name} " in line)
        assert "stopped" in line
    assert not clean_env.exists()


def test_down_with_nothing_running_says_so(env):
    result = orchard(env, "down")
    assert result.returncode == 0
    assert "Nothing to stop" in result.stdout


def test_unknown_service_is_named(env):
    result = orchard(env, "logs", "grafana")
    assert result.returncode == 1
    assert "unknown service 'grafana'" in one_line_error(result)


def test_a_taken_port_stops_up_before_it_starts_anything(env, clean_env):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env["ORCHARD_MLFLOW_PORT"] = str(port)
        result = orchard(env, "up")
    assert result.returncode == 1
    line = one_line_error(result)
    assert f"port {port}" in line and "ORCHARD_MLFLOW_PORT" in line
    assert not list((clean_env / "run").glob("*.pid.json"))


def test_settings_lists_every_variable_and_masks_secrets(env):
    env["ORCHARD_S3_SECRET_KEY"] = "hunter2"
    result = orchard(env, "settings")
    assert result.returncode == 0
    for name in ("ORCHARD_HOME", "ORCHARD_AIRFLOW_PORT", "ORCHARD_S3_ENDPOINT"):
        assert name in result.stdout
    assert "hunter2" not in result.stdout


def test_dag_trigger_rejects_conf_that_is_not_an_object(env):
    result = orchard(env, "dag", "trigger", "orchard_smoke", "--conf", "[1, 2]")
    assert result.returncode == 1
    assert "JSON object" in one_line_error(result)


def test_dag_trigger_without_a_stack_says_to_run_up(env):
    result = orchard(env, "dag", "trigger", "orchard_smoke")
    assert result.returncode == 1
    assert "orchard up" in one_line_error(result)


def test_make_prerequisite_missing_is_one_line():
    result = subprocess.run(
        [str(REPO / "scripts" / "check-prereqs")],
        env={**os.environ, "PYTHON": "/nonexistent/python3.11"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "not found" in one_line_error(result)
    result = subprocess.run(
        [str(REPO / "scripts" / "check-prereqs")],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_a_missing_demo_site_is_reported_not_fatal(env, clean_env):
    env["ORCHARD_SITE_DIR"] = str(clean_env.parent / "no-such-site")
    result = orchard(env, "status")
    line = next(line for line in result.stdout.splitlines() if " site " in line)
    assert "unavailable" in line
    assert "python3.11-doc" in result.stdout and "ORCHARD_SITE_DIR" in result.stdout


def test_logs_of_a_service_never_started(env, clean_env):
    result = orchard(env, "logs", "mlflow")
    assert result.returncode == 0
    assert "no log yet" in result.stdout
    assert not Path(clean_env).exists()
