"""The DAGs orchard_tokenizer and orchard_pretrain against the three-host cluster, with the
data root on object storage, and a worker host dying in the middle of pretraining.

One run of the two DAGs serves both tests of this module (`trained`, module-scoped):
Airflow's tasks run in-process (`dag.test`, as tests/dags does) in a driver process in the
root namespace, where Airflow runs them, with `ORCHARD_RAY_ADDRESS` at the head on host a
and `ORCHARD_DATA_ROOT=s3://…`. Each step task submits its step as a Ray job through the
head's job API; the DAGs hand each other `s3://` locations, as the asset events do. The
tokenizer and tokenize steps read a curated corpus published in the bucket. The pretrain
task runs two Ray Train workers, one on host b and one on host c (its Params: workers=2,
placement STRICT_SPREAD, and a label selector that keeps them off the head), which train
over gloo on the hosts' bridge addresses; each reads the tokenized corpus from S3 itself
(the job's home, where its driver keeps its own copy, is on host a's disk, which b and c
cannot see), and checkpoints go to the bucket. moto's S3 server stands in for MinIO,
listening on the root namespace's bridge address, which the hosts reach.

Once a checkpoint is safe in the bucket, every process of host c is SIGKILLed at once (a
machine losing power), and host c boots again right away (a new Ray node at the same
address). Ray Train notices the dead worker, restarts the worker group on b and the
rebooted c, resumes from the last checkpoint in object storage, and the pretrain task
ends green (testkit/cluster_failure.py).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchard.steps import MANIFEST, Manifest, localize
from orchard.storage import cache_dir_for, join
from testkit.cluster_failure import FailoverRun, pretrain_through_host_death
from testkit.cluster_pretrain import ClusterPretrain, cluster_pretrain, object_keys

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# orchard_pretrain's Params: steps of 2,048 tokens (~0.5 s on a host's one CPU), so that
# the power-off, 2.5 s after the first checkpoint is in the bucket, lands well before the
# run's end. Tiny `nano`, one worker per worker host.
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
# The DAGs, each with the Param that takes the location its upstream DAG's task returned.
CHAIN = [
    ("orchard_tokenizer", "corpus", {"vocab_size": 512}, "tokenize"),
    ("orchard_pretrain", "tokenized", FAILOVER, "pretrain"),
]
DONE = re.compile(r"^DAG_DONE=(\S+) (\S+)$")
TIMELINE = re.compile(r"DAG_DONE=|MANIFEST=|submitted Ray job|resumed from the checkpoint")


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


@dataclass
class Trained:
    setup: ClusterPretrain
    run: FailoverRun
    checkpoints_seen: set[str]  # the bucket's checkpoint objects while the job ran
    scratch: Path
    task_dir: Path  # the Airflow tasks' working directory
    dags_done: dict[str, str]  # DAG id -> the location its last task returned

    @property
    def tokenized(self) -> Manifest:
        return Manifest.read(self.dags_done["orchard_tokenizer"], self.setup.data.store)


@pytest.fixture(scope="module")
def trained(cluster_session, cluster_s3, tmp_path_factory) -> Iterator[Trained]:
    """orchard_tokenizer then orchard_pretrain on the corpus in the bucket, pretraining on
    hosts b and c, host c powered off once a checkpoint is safe in the bucket and powered
    on again; what the two tests below read."""
    layout = cluster_session.ensure_up()
    scratch = tmp_path_factory.mktemp("pretrain-cluster")
    task_dir = scratch / "airflow-task"
    task_dir.mkdir()
    with cluster_pretrain(
        cluster_session.settings, layout, cluster_s3, scratch, tokenize=False
    ) as setup:
        watcher = CheckpointWatcher(cluster_s3, setup.data.bucket)
        watcher.start()
        try:
            run = pretrain_through_host_death(
                setup,
                FAILOVER,
                command=setup.dag_chain_command(CHAIN),
                cwd=str(task_dir),
                timeout=600,
            )
        finally:
            watcher.stop.set()
            watcher.join()
        done = dict(m.groups() for _, line in run.lines if (m := DONE.match(line.strip())))
        if run.lines:  # where the time went (shown with -s, or when a test fails)
            start = run.lines[0][0]
            for at, line in run.lines:
                if TIMELINE.search(line):
                    print(f"{at - start:6.1f} s  {line.strip()[:120]}")
        yield Trained(setup, run, watcher.seen, scratch, task_dir, done)


def test_pretraining_runs_on_both_worker_hosts_from_and_to_object_storage(trained):
    setup, run = trained.setup, trained.run
    layout, data = setup.layout, setup.data
    log = run.log
    location = run.location
    assert location, log[-6000:]
    assert location.startswith(f"{data.data_root}/pretrain/nano-")
    # The DAGs ran: each step task submitted its step as a Ray job to the head, and each
    # DAG handed the next the `s3://` location of its output.
    for dag_id, task in (
        ("orchard_tokenizer", "tokenizer"),
        ("orchard_tokenizer", "tokenize"),
        ("orchard_pretrain", "pretrain"),
    ):
        assert re.search(rf"submitted Ray job {dag_id}-\S+-{task}-a1: ", log), (task, log[-6000:])
    tokenized = trained.tokenized
    assert trained.dags_done == {
        "orchard_tokenizer": tokenized.path,
        "orchard_pretrain": location,
    }
    assert tokenized.path.startswith(f"{data.data_root}/tokenize/corpus-")
    inputs = {ref.step: ref.path for ref in tokenized.inputs}
    assert inputs["mix"] == data.corpus.path
    assert inputs["tokenizer"].startswith(f"{data.data_root}/tokenizer/bpe-")
    # The first attempt trained: no worker failed and was restarted before host c died.
    before_kill = "".join(
        line for at, line in run.lines if run.killed_at is None or at < run.killed_at
    )
    assert "Error in training function" not in before_kill, before_kill[-6000:]
    done = Manifest.read(location, data.store)
    assert [ref.path for ref in done.inputs] == [tokenized.path]  # lineage: S3 locations

    # Both worker hosts trained: two workers, on b and on c, each on its own node.
    by_host = {w["hostname"]: w for w in done.workers}
    assert sorted(by_host) == ["host-b", "host-c"], done.workers
    assert len({w["node_id"] for w in done.workers}) == 2
    # The name of a copy of this corpus (of its manifest), whoever downloads it.
    manifest = data.store.read_text(join(tokenized.path, MANIFEST))
    named = cache_dir_for(data.store, tokenized.path, manifest).name
    copy = f"orchard-cache/inputs/tokenize/{named}"
    for name in ("b", "c"):
        host = layout.host(name)
        worker = by_host[host.hostname]
        assert worker["address"] == host.address
        assert worker["data"] == tokenized.path  # it read the corpus from S3 itself
        # ... into its own host's disk (its node's Ray temp dir).
        assert list(Path(host.ray_temp_dir).rglob(f"{copy}/datasets.json")), name
    # Host a (the driver) has no worker copy (the TP/PP test's reference run trains on
    # host a, on a corpus of its own).
    assert not list(Path(layout.head.local_dir).rglob(copy))

    # The loss is finite at every step and went down over the run.
    local = Path(localize(done, data.store).path)
    curve = json.loads((local / "curve.json").read_text())
    losses = [p["loss"] for p in curve if "loss" in p]
    assert len(losses) == FAILOVER["steps"] and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0], losses

    # Checkpoints were objects in the bucket, under the step's work prefix, while the job
    # ran; that prefix is gone now.
    seen = trained.checkpoints_seen
    work = f"data/pretrain/.nano-{done.key}.work/ray-train/"
    assert seen and all(k.startswith(work) for k in seen), seen
    steps = {k.split("/checkpoint_")[1].split("/")[0] for k in seen}
    assert len(steps) >= 2 and any(k.endswith("/state.pt") for k in seen)
    assert not [k for k in object_keys(data.endpoint, data.bucket) if ".work/" in k]
    assert set(done.files) >= {"hf/config.json", "curve.json", "megatron/model.pt"}

    # Nothing was written to a local folder named like the URI: not on any host, nor in
    # the Airflow tasks' working directory, home, Airflow's home or the temp directory.
    airflow_home = Path(os.environ["AIRFLOW_HOME"])
    for root in (trained.scratch, Path(layout.base_dir), Path(setup.settings.home), airflow_home):
        assert not list(root.rglob("s3:*")), root
    assert trained.task_dir.is_dir() and not list(trained.task_dir.rglob("s3:*"))
    for root in (Path.home(), Path(tempfile.gettempdir())):
        assert not list(root.glob("s3:*")), root
    assert not os.path.exists("s3:")


def test_a_worker_host_dying_mid_training_resumes_from_the_last_checkpoint(
    trained, cluster_hosts, monkeypatch
):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the job's tracking store, read here

    setup, run = trained.setup, trained.run
    layout, data = setup.layout, setup.data
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
    done = Manifest.read(run.location, data.store)
    client = MlflowClient(setup.mlruns.as_uri())
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
    assert [p["step"] for p in curve] == list(range(1, FAILOVER["steps"] + 1))

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
