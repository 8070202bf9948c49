"""A worker host dies in the middle of pretraining, and the run goes on.

The pretrain step runs as a Ray job with one worker on host b and one on host c, data and
checkpoints on S3 (moto standing in for MinIO). Once a checkpoint is safe in the bucket,
every process of host c is SIGKILLed at once (a machine losing power), and host c boots
again right away (a new Ray node at the same address). Ray Train notices the dead
worker, restarts the worker group on b and the rebooted c, resumes from the last
checkpoint in object storage, and the job ends green (testkit/cluster_failure.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from orchard.steps import Manifest, localize
from testkit.cluster_failure import pretrain_through_host_death

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# Steps of 2,048 tokens (~0.5 s on a host's one CPU), so that the power-off, 2.5 s after
# the first checkpoint is in the bucket, lands well before the run's end.
INTERVAL = 10
FAILOVER = {
    "preset": "nano",
    "seq_length": 256,
    "global_batch_size": 8,
    "steps": 3 * INTERVAL,
    "log_interval": 1,
    "eval_interval": 3 * INTERVAL,
    "eval_batches": 1,
    "checkpoint_interval": INTERVAL,
    "workers": 2,
    "threads_per_worker": 1,  # each test host has one CPU
    "placement": "STRICT_SPREAD",
    "worker_labels": {"orchard-host": "in(b,c)"},
}


def test_a_worker_host_dying_mid_training_resumes_from_the_last_checkpoint(
    cluster_hosts, cluster_pretraining, monkeypatch
):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the job's tracking store, read here

    layout, data = cluster_pretraining.layout, cluster_pretraining.data
    run = pretrain_through_host_death(cluster_pretraining, FAILOVER)
    log = run.log
    assert run.killed_at is not None, f"the run ended before host c could be killed:\n{log[-4000:]}"
    assert run.killed_processes > 0 and run.checkpoints_at_kill, log[-4000:]
    # The job ended green, after Ray Train resumed from a checkpoint in the bucket.
    assert run.location, log[-6000:]
    resumed = run.resumed()
    assert resumed is not None, log[-6000:]
    resumed_from, resumed_at = resumed
    assert resumed_from in run.checkpoints_at_kill and resumed_at > run.killed_at

    # The curve in MLflow goes on from there: what the first attempt had done after that
    # checkpoint is lost (at most one checkpoint interval) and done again, to the same
    # losses; every step is there.
    done = Manifest.read(location := run.location, data.store)
    client = MlflowClient(cluster_pretraining.mlruns.as_uri())
    history = client.get_metric_history(done.mlflow_run_id, "loss")
    before = {m.step: m.value for m in history if m.timestamp / 1000 < run.killed_at}
    after = {m.step: m.value for m in history if m.timestamp / 1000 >= run.killed_at}
    lost = max(before) - resumed_from
    print(
        f"host c killed ({run.killed_processes} processes) after step {max(before)}; resumed "
        f"from step {resumed_from} ({lost} steps lost) {resumed_at - run.killed_at:.1f} s later"
    )
    assert 0 <= lost <= INTERVAL, (sorted(before), resumed_from)
    assert sorted(after) == list(range(resumed_from + 1, FAILOVER["steps"] + 1))
    for step in range(resumed_from + 1, max(before) + 1):  # the replayed steps
        assert after[step] == pytest.approx(before[step], abs=1e-5), step
    assert client.get_run(done.mlflow_run_id).info.status == "FINISHED"

    local = Path(localize(done, data.store).path)
    curve = json.loads((local / "curve.json").read_text())
    losses = [p["loss"] for p in curve if "loss" in p]
    assert [p["step"] for p in curve] == list(range(1, FAILOVER["steps"] + 1))
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    assert location.startswith(f"{data.data_root}/pretrain/")

    # Both hosts trained to the end: host c as the new Ray node it booted as. The cluster
    # has its three hosts again, for the tests after this one.
    nodes = cluster_hosts.run_driver(
        "result = [[n['NodeID'], n['NodeManagerAddress'], n['Alive']] for n in ray.nodes()]"
    )
    c = layout.host("c").address
    alive = {address: node_id for node_id, address, up in nodes if up}
    assert sorted(alive) == sorted(h.address for h in layout.hosts), nodes
    assert any(address == c and not up for _, address, up in nodes), "no dead node at c"
    by_host = {w["hostname"]: w for w in done.workers}
    assert sorted(by_host) == ["host-b", "host-c"], done.workers
    assert by_host["host-c"]["node_id"] == alive[c]
