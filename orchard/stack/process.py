"""Background processes with pid files, and stopping exactly what we started.

Each service runs as the leader of its own process group and session, with its
output appended to one log file. Its pid file records the pid *and* the process start
time, so a pid recycled by the OS after a crash is never mistaken for ours.

Some servers fork helpers that leave the process group (Ray's raylet workers, Airflow's
task runners), so every process we spawn also carries a marker variable naming its
service; children inherit it, and `stop` finds them by it even after their parent died.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

MARKER_ENV = "_ORCHARD_SERVICE"


@dataclass(frozen=True)
class ProcessRecord:
    service: str
    pid: int
    create_time: float
    marker: str
    command: list[str]

    def process(self) -> psutil.Process | None:
        """The live process this record names, or None if it is gone or was recycled."""
        if self.pid <= 0:  # a sweep record: no leader, only the marker
            return None
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.01:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None


def marker_for(home: Path, service: str) -> str:
    return f"{home}::{service}"


def pid_file(run_dir: Path, service: str) -> Path:
    return run_dir / f"{service}.pid.json"


def read_record(run_dir: Path, service: str) -> ProcessRecord | None:
    path = pid_file(run_dir, service)
    try:
        data = json.loads(path.read_text())
        return ProcessRecord(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        # A torn or foreign file: it names no process we can trust.
        return None


def spawn(
    *,
    service: str,
    command: list[str],
    env: dict[str, str],
    log_path: Path,
    run_dir: Path,
    marker: str,
    cwd: Path | None = None,
) -> ProcessRecord:
    """Start `command` in its own session, log to `log_path`, write its pid file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(
            f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(command)}\n".encode()
        )
        log.flush()
        proc = subprocess.Popen(
            command,
            env={**env, MARKER_ENV: marker},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    record = ProcessRecord(
        service=service,
        pid=proc.pid,
        create_time=psutil.Process(proc.pid).create_time(),
        marker=marker,
        command=command,
    )
    path = pid_file(run_dir, service)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    tmp.replace(path)
    return record


def _has_marker(proc: psutil.Process, marker: str) -> bool:
    try:
        return proc.environ().get(MARKER_ENV) == marker
    except psutil.Error:
        return False


def sweep_record(home: Path, service: str) -> ProcessRecord:
    """A record with no leader, to find a service's processes by their marker alone
    (a pid file lost to a crash, or to a `down` racing an `up`)."""
    return ProcessRecord(
        service, pid=0, create_time=0.0, marker=marker_for(home, service), command=[]
    )


def family(record: ProcessRecord) -> list[psutil.Process]:
    """The leader, its descendants, and every process carrying the service's marker."""
    found: dict[int, psutil.Process] = {}
    leader = record.process()
    if leader is not None:
        found[leader.pid] = leader
        try:
            for child in leader.children(recursive=True):
                found[child.pid] = child
        except psutil.Error:
            pass
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid not in found and proc.pid != me and _has_marker(proc, record.marker):
            found[proc.pid] = proc
    return list(found.values())


def _signal_all(procs: Iterable[psutil.Process], sig: int) -> None:
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass


def _group_of(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except (ProcessLookupError, PermissionError):
        return None


def stop(record: ProcessRecord, run_dir: Path, timeout: float = 30.0) -> int:
    """Stop the service's whole process family; return how many processes it had.

    SIGTERM to the leader's process group, so a supervisor (airflow standalone, `ray
    start --block`) shuts its children down, and at the same time to the family's
    processes outside that group; then SIGTERM again to any stragglers (processes forked
    during shutdown); SIGKILL whatever is left after `timeout`.
    """
    procs = family(record)
    leader = record.process()
    if leader is not None:
        try:
            os.killpg(leader.pid, signal.SIGTERM)  # the leader is its session's group leader
        except (ProcessLookupError, PermissionError):
            leader.terminate()
    # What that signal does not reach (helpers that left the group, or every process when
    # the pid file was lost) gets its own now, not after the wait.
    _signal_all([p for p in procs if leader is None or _group_of(p) != leader.pid], signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout * 2 / 3)
    # Processes forked during shutdown, or ones that ignored the group signal.
    alive = {p.pid: p for p in alive} | {p.pid: p for p in family(record)}
    _signal_all(alive.values(), signal.SIGTERM)
    _, still = psutil.wait_procs(list(alive.values()), timeout=timeout / 3)
    _signal_all(still, signal.SIGKILL)
    psutil.wait_procs(still, timeout=5)
    pid_file(run_dir, record.service).unlink(missing_ok=True)
    return len(procs)


def resident_bytes(record: ProcessRecord) -> int:
    """Resident memory of the service's process family (unique set size where possible)."""
    total = 0
    for proc in family(record):
        try:
            info = proc.memory_full_info()
            total += getattr(info, "uss", info.rss)
        except psutil.Error:
            pass
    return total
