"""Pretraining through a worker host's death on the three-host test cluster, shared by
tests/cluster/test_pretrain_cluster.py and bench/cluster.py.

The pretrain step runs as a Ray job submitted the way a DAG task submits it
(testkit.cluster_pretrain). Once Ray Train has a checkpoint in object storage, the host
is powered off (orchard.cluster.failures: every process SIGKILLed at once) and powered
on again right away, as a machine that reboots or is replaced; Ray Train notices the
dead worker, restarts the worker group and resumes from the last checkpoint.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from dataclasses import dataclass, field

from orchard import cluster
from orchard.cluster import failures
from testkit.cluster_pretrain import ClusterPretrain, ModelData, object_keys

# Once a checkpoint is in storage, rank 0's report returns and Ray Train's controller
# registers the checkpoint at its next poll of the workers (every 2 s).
REGISTER_WAIT_S = 2.5
_CHECKPOINT = re.compile(r"/checkpoint_step-(\d+)/state\.pt$")
RESUMED = re.compile(r"resumed from the checkpoint of step (\d+)")


@dataclass
class FailoverRun:
    location: str | None  # the published manifest, None if the job failed
    lines: list[tuple[float, str]] = field(default_factory=list)  # (wall time, line)
    killed_at: float | None = None  # wall time of the power-off
    killed_processes: int = 0
    checkpoints_at_kill: list[int] = field(default_factory=list)  # steps safe in storage
    powered_on_at: float | None = None

    @property
    def log(self) -> str:
        return "".join(line for _, line in self.lines)

    def resumed(self) -> tuple[int, float] | None:
        """(the step Ray Train resumed from, when the job's log said so)."""
        for at, line in self.lines:
            if match := RESUMED.search(line):
                return int(match[1]), at
        return None


def checkpoint_steps(data: ModelData) -> list[int]:
    """The steps of the pretrain checkpoints complete in the bucket (their state.pt is
    there), oldest first."""
    keys = object_keys(data.endpoint, data.bucket, "data/pretrain/")
    return sorted({int(m[1]) for k in keys if (m := _CHECKPOINT.search(k))})


def pretrain_through_host_death(
    setup: ClusterPretrain,
    config: dict,
    *,
    host: str = "c",
    name: str = "failover",
    timeout: float = 420,
    command: list[str] | None = None,
    cwd: str | None = None,
) -> FailoverRun:
    """Submit the pretrain step, power `host` off once a checkpoint is safe and the run
    has gone on, power it on again, and wait for the job's end. The host is on again
    when this returns, also on error. `command` (run in `cwd`) replaces the submitter, e.g.
    with the DAGs that end in the pretrain step (`ClusterPretrain.dag_chain_command`): it
    prints `MANIFEST=<the published pretrain output>` last."""
    hosts_settings, layout, data = setup.hosts_settings, setup.layout, setup.data
    job = subprocess.Popen(
        command or setup.command(config, name),
        cwd=cwd,
        env=setup.env() | {"PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run = FailoverRun(location=None)

    def read() -> None:
        assert job.stdout is not None
        for line in job.stdout:
            run.lines.append((time.time(), line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    target = layout.host(host)
    try:
        safe = _wait_for_a_registered_checkpoint(job, data, deadline)
        if safe:
            run.checkpoints_at_kill = checkpoint_steps(data)
            run.killed_at = time.time()
            run.killed_processes = failures.power_off(target)
            failures.power_on(hosts_settings, layout, host)
            run.powered_on_at = time.time()
        job.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
        if not cluster.network.netns_pids(target):  # never leave the host off
            failures.power_on(hosts_settings, layout, host)
    reader.join(timeout=10)
    found = [line for _, line in run.lines if line.startswith("MANIFEST=")]
    if job.returncode == 0 and found:
        run.location = found[-1].strip().removeprefix("MANIFEST=")
    return run


def _wait_for_a_registered_checkpoint(
    job: subprocess.Popen, data: ModelData, deadline: float
) -> bool:
    """True once a checkpoint is complete in storage and the controller has had time to
    register it; False if the job ended first (then it was too short to kill in the
    middle of it)."""
    while job.poll() is None and time.monotonic() < deadline:
        try:
            steps = checkpoint_steps(data)
        except Exception:  # the S3 server is busy: look again
            steps = []
        if steps:
            time.sleep(REGISTER_WAIT_S)
            return job.poll() is None
        time.sleep(0.2)
    return False
