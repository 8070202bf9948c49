"""Curate across the hosts: datatrove's Ray executor, the data root on S3.

The curate step is submitted as the DAG submits it (a Ray job through the head's job
API, from a driver in the root namespace). With `executor="ray"` its datatrove tasks run
on whichever node has a CPU (each test host has one), so every file the tasks share
lives in the step's work prefix in the bucket, and each task reads its inputs from where
they are published.
"""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from orchard import cluster
from orchard.settings import Settings
from orchard.steps import Manifest, StepConfig, StepOutput, localize, run_step
from orchard.storage import S3Options, Storage
from testkit.cluster_pretrain import KEYS, object_keys, s3_client
from testkit.corpus import article

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SUBMIT = """
import sys
from orchard.ray_submit import run_step_job
from orchard.settings import load_settings
from orchard.steps import Manifest
from ray_jobs.curate import CurateConfig

source = Manifest.read(sys.argv[2])
done = run_step_job(
    load_settings(), module="curate", step="curate", name="corpus",
    config=CurateConfig.model_validate_json(sys.argv[1]), inputs=[source],
    base_id=f"curate-{source.key}",
)
print("MANIFEST=" + done.path)
"""
# Three shards, one datatrove task per host; exact dedup reads every task's signatures.
CURATE = {"executor": "ray", "tasks": 3, "near_dedup": False}
SHARDS, PER_SHARD = 3, 8


class ImportedFixture(StepConfig):
    seed: int


def write_sources(ctx) -> StepOutput:
    """Three shards of prose as the import step writes them; shard 2 repeats a document
    of shard 0 word for word (exact dedup must drop one of the two)."""
    rng = random.Random(3)
    docs = [
        [{"text": article(rng), "id": f"d{s}-{i}", "metadata": {}} for i in range(PER_SHARD)]
        for s in range(SHARDS)
    ]
    docs[2].append({"text": docs[0][0]["text"], "id": "copy", "metadata": {}})
    (ctx.out / "text").mkdir()
    for index, shard in enumerate(docs):
        with gzip.open(ctx.out / "text" / f"{index:05d}.jsonl.gz", "wt") as handle:
            handle.writelines(json.dumps(doc) + "\n" for doc in shard)
    return StepOutput(counts={"documents": SHARDS * PER_SHARD + 1})


def test_curate_spreads_datatrove_over_the_hosts_through_the_bucket(
    cluster_hosts, cluster_s3, tmp_path
):
    layout, endpoint = cluster_hosts.layout, cluster_s3
    bucket = f"orchard-{uuid.uuid4().hex[:8]}"
    s3_client(endpoint).create_bucket(Bucket=bucket)
    data_root = f"s3://{bucket}/data"
    store = Storage(data_root, s3=S3Options(endpoint=endpoint, **KEYS), cache=tmp_path / "c")
    source = run_step(
        step="import",
        name="sources",
        config=ImportedFixture(seed=3),
        data_root=store,
        body=write_sources,
    )
    # The job's home is on host a's disk (where its driver runs), as in a DAG task.
    home = Path(layout.head.local_dir) / f"home-{uuid.uuid4().hex[:6]}"
    settings = Settings(
        home=home,
        data_root=data_root,
        s3_endpoint=endpoint,
        s3_access_key=KEYS["access_key"],
        s3_secret_key=KEYS["secret_key"],
        ray_address=layout.dashboard_url,
        mlflow_tracking_uri=(tmp_path / "mlruns").as_uri(),
    )
    env = (
        cluster.node_env(cluster_hosts.settings, layout)
        | settings.to_env()
        | layout.client_env()
        | {"MLFLOW_ALLOW_FILE_STORE": "true"}
    )
    job = subprocess.run(
        [sys.executable, "-c", SUBMIT, json.dumps(CURATE), source.path],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    log = job.stdout + job.stderr
    found = [x for x in job.stdout.splitlines() if x.startswith("MANIFEST=")]
    assert job.returncode == 0 and found, log[-6000:]
    assert "curate: Ray tasks on 3 nodes, datatrove's files in s3://" in log, log[-4000:]
    done = Manifest.read(found[-1].removeprefix("MANIFEST="), store)
    copy = Path(localize(done, store).path)
    leftovers = [k for k in object_keys(endpoint, bucket) if ".work/" in k]

    # The filter stage's three tasks ran on three hosts, the worker hosts among them.
    hosts = {w["hostname"]: w for w in done.workers}
    assert {"host-b", "host-c"} <= set(hosts) and len(done.workers) == SHARDS, done.workers
    for name in ("b", "c"):
        assert hosts[layout.host(name).hostname]["address"] == layout.host(name).address
    # Every document but the exact copy is in the corpus, read back from the bucket.
    ids = set()
    for shard in (copy / "documents").glob("*.jsonl.gz"):
        with gzip.open(shard, "rt") as handle:
            ids |= {json.loads(line)["id"] for line in handle}
    assert len(ids) == SHARDS * PER_SHARD and len({"d0-0", "copy"} & ids) == 1, done.counts
    dropped = {k: v for k, v in done.counts.items() if k.startswith("exact-filter.")}
    assert sum(v for k, v in dropped.items() if k.endswith(".dropped")) == 1, done.counts
    # datatrove's files lived in the work prefix, gone once published; nothing local.
    assert not leftovers, leftovers
    for root in (tmp_path, Path(layout.base_dir)):
        assert not list(root.rglob("s3:*")), root
