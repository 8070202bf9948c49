"""Process supervision: a service's whole family is found and stopped, nothing else is."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest
from rich.console import Console

from orchard.stack import process
from orchard.stack.services import Service
from orchard.stack.supervisor import StackError, wait_healthy

# A supervisor with one child, and a grandchild that daemonized: its parent exited and it
# runs in a session of its own, so only the inherited marker ties it to the service.
TREE = "(setsid sleep 301 &); sleep 300; true"


def spawn_tree(tmp_path, name="svc"):
    return process.spawn(
        service=name,
        command=["bash", "-c", TREE],
        env={"PATH": "/usr/bin:/bin"},
        log_path=tmp_path / "logs" / f"{name}.log",
        run_dir=tmp_path / "run",
        marker=process.marker_for(tmp_path, name),
    )


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def settled(record) -> list[str]:
    """The family's live processes as sorted short command lines."""
    lines = []
    for proc in process.family(record):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            cmd = proc.cmdline()
        except psutil.Error:
            continue
        lines.append("bash" if cmd[:1] == ["bash"] else " ".join(cmd))
    return sorted(lines)


def test_family_includes_children_that_left_the_session(tmp_path):
    record = spawn_tree(tmp_path)
    try:
        assert wait_for(lambda: len(process.family(record)) == 3)
        (escaped,) = [p for p in process.family(record) if p.cmdline() == ["sleep", "301"]]
        assert escaped.ppid() != record.pid
        assert os.getsid(escaped.pid) != record.pid
        assert process.read_record(tmp_path / "run", "svc") == record
    finally:
        process.stop(record, tmp_path / "run", timeout=5)


def test_stop_ends_the_whole_family_and_removes_the_pid_file(tmp_path):
    record = spawn_tree(tmp_path)
    assert wait_for(lambda: len(process.family(record)) == 3)
    pids = [p.pid for p in process.family(record)]
    assert process.stop(record, tmp_path / "run", timeout=5) == 3
    assert wait_for(lambda: not any(psutil.pid_exists(pid) for pid in pids))
    assert process.read_record(tmp_path / "run", "svc") is None


def test_a_recycled_pid_is_not_ours(tmp_path):
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        record = process.ProcessRecord(
            service="svc",
            pid=stranger.pid,
            create_time=psutil.Process(stranger.pid).create_time() - 100,
            marker=process.marker_for(tmp_path, "svc"),
            command=["sleep", "300"],
        )
        assert record.process() is None
        assert process.stop(record, tmp_path / "run", timeout=1) == 0
        assert stranger.poll() is None  # still running: not ours to kill
    finally:
        stranger.kill()
        stranger.wait()


def test_a_torn_pid_file_names_no_process(tmp_path):
    (tmp_path / "run").mkdir()
    process.pid_file(tmp_path / "run", "svc").write_text('{"pid": 12')
    assert process.read_record(tmp_path / "run", "svc") is None


def test_a_service_dying_at_start_up_is_reported_with_its_log(tmp_path):
    from orchard.settings import Settings

    settings = Settings(home=tmp_path)
    script = "import sys; print('cannot open database: disk full'); sys.exit(3)"
    command = [sys.executable, "-c", script]
    service = Service("mlflow", "MLflow", "http://127.0.0.1:9", "http://127.0.0.1:9/health")
    record = process.spawn(
        service="mlflow",
        command=command,
        env={},
        log_path=settings.logs_dir / "mlflow.log",
        run_dir=settings.run_dir,
        marker=process.marker_for(tmp_path, "mlflow"),
    )
    with pytest.raises(StackError, match="MLflow exited during start-up") as error:
        wait_healthy(settings, [service], {"mlflow": record}, Console(file=open("/dev/null", "w")))
    assert "disk full" in str(error.value)


def test_down_finds_a_service_whose_pid_file_is_gone(tmp_path):
    from orchard.settings import Settings
    from orchard.stack.services import build_services
    from orchard.stack.supervisor import stop_service

    settings = Settings(home=tmp_path)
    record = process.spawn(
        service="mlflow",
        command=["bash", "-c", TREE],
        env={"PATH": "/usr/bin:/bin"},
        log_path=settings.logs_dir / "mlflow.log",
        run_dir=settings.run_dir,
        marker=process.marker_for(settings.home, "mlflow"),
    )
    # Settled: bash and both sleeps, not the short-lived `( … &)` subshell between them.
    assert wait_for(lambda: settled(record) == ["bash", "sleep 300", "sleep 301"])
    pids = [p.pid for p in process.family(record)]
    process.pid_file(settings.run_dir, "mlflow").unlink()  # lost, e.g. to a racing `down`
    (mlflow,) = [s for s in build_services(settings) if s.name == "mlflow"]
    assert stop_service(settings, mlflow) == 3
    assert wait_for(lambda: not any(psutil.pid_exists(pid) for pid in pids))
