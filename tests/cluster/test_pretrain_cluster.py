"""Pretraining across two hosts with the data root on object storage.

The pretrain step is submitted as the DAG submits it: a Ray job through the head's job
API (`orchard.ray_submit.run_step_job`), from a driver process in the root namespace,
as an Airflow task would. Two Ray Train workers, one on host b and one on host c
(STRICT_SPREAD, and a label selector that keeps them off the head), train over gloo on
the hosts' bridge addresses; each reads the tokenized corpus from S3 itself (the job's
home, where its driver keeps its own copy, is on host a's disk, which b and c cannot
see), and checkpoints go to the bucket. moto's S3 server stands in for MinIO, listening
on the root namespace's bridge address, which the hosts reach.
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path

import pytest

from orchard.steps import MANIFEST, Manifest
from orchard.storage import cache_dir_for, join
from testkit.cluster_pretrain import object_keys, s3_client

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# A few steps of a tiny nano, one worker per worker host, a checkpoint every 3 steps.
PRETRAIN = {
    "preset": "nano",
    "seq_length": 64,
    "global_batch_size": 4,
    "steps": 6,
    "log_interval": 1,
    "eval_interval": 6,
    "eval_batches": 1,
    "checkpoint_interval": 3,
    "workers": 2,
    "threads_per_worker": 1,  # each test host has one CPU
    "placement": "STRICT_SPREAD",
    "worker_labels": {"orchard-host": "in(b,c)"},
}


class CheckpointWatcher(threading.Thread):
    """Lists the bucket while the job runs: Ray Train's checkpoints live in the step's
    durable work prefix only until the step is published."""

    def __init__(self, endpoint: str, bucket: str) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.bucket = endpoint, bucket
        self.seen: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.3):
            try:
                keys = object_keys(self.endpoint, self.bucket, "data/pretrain/")
            except Exception:  # the server is busy: look again
                continue
            self.seen |= {k for k in keys if "/ray-train/" in k and "/checkpoint_" in k}


def test_pretraining_runs_on_both_worker_hosts_from_and_to_object_storage(
    cluster_pretraining, tmp_path
):
    # The submitter's home, the job driver's too, is on host a's disk: the driver's copy
    # of the corpus is there, invisible to b and c.
    layout, data = cluster_pretraining.layout, cluster_pretraining.data
    s3_endpoint = data.endpoint
    watcher = CheckpointWatcher(s3_endpoint, data.bucket)
    watcher.start()
    try:
        location, log = cluster_pretraining.submit(PRETRAIN)
    finally:
        watcher.stop.set()
        watcher.join()
    assert location, log[-6000:]
    assert location.startswith(f"{data.data_root}/pretrain/model-")
    # The first attempt trained: no worker failed and was restarted on the way.
    assert "Error in training function" not in log, log[-6000:]
    done = Manifest.read(location, data.store)

    # Both worker hosts trained: two workers, on b and on c, each on its own node.
    by_host = {w["hostname"]: w for w in done.workers}
    assert sorted(by_host) == ["host-b", "host-c"], done.workers
    assert len({w["node_id"] for w in done.workers}) == 2
    # The name of a copy of this corpus (of its manifest), whoever downloads it.
    manifest = data.store.read_text(join(data.tokenized.path, MANIFEST))
    named = cache_dir_for(data.store, data.tokenized.path, manifest).name
    copy = f"orchard-cache/inputs/tokenize/{named}"
    for name in ("b", "c"):
        host = layout.host(name)
        worker = by_host[host.hostname]
        assert worker["address"] == host.address
        assert worker["data"] == data.tokenized.path  # it read the corpus from S3 itself
        # ... into its own host's disk (its node's Ray temp dir).
        assert list(Path(host.ray_temp_dir).rglob(f"{copy}/datasets.json")), name
    assert not list(Path(layout.head.local_dir).rglob(copy))

    # The loss is finite at every step and went down over the run.
    prefix = done.path.removeprefix(f"s3://{data.bucket}/")
    body = s3_client(s3_endpoint).get_object(Bucket=data.bucket, Key=f"{prefix}/curve.json")
    losses = [p["loss"] for p in json.loads(body["Body"].read()) if "loss" in p]
    assert len(losses) == PRETRAIN["steps"] and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0], losses

    # Checkpoints of steps 3 and 6 were objects in the bucket; the work prefix is gone now.
    work = f"data/pretrain/.model-{done.key}.work/ray-train/"
    assert watcher.seen and all(k.startswith(work) for k in watcher.seen), watcher.seen
    steps = {k.split("/checkpoint_")[1].split("/")[0] for k in watcher.seen}
    assert len(steps) >= 2 and any(k.endswith("/state.pt") for k in watcher.seen)
    assert not [k for k in object_keys(s3_endpoint, data.bucket) if ".work/" in k]
    assert set(done.files) >= {"hf/config.json", "curve.json", "megatron/model.pt"}

    # Nothing was written to a local folder named like the URI, on any host or here.
    for root in (tmp_path, Path(layout.base_dir)):
        assert not list(root.rglob("s3:*")), root
    assert not os.path.exists("s3:")
