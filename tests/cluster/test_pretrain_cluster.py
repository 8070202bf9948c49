"""Pretraining across two hosts with the data root on object storage.

The pretrain step is submitted as the DAG submits it: a Ray job through the head's job
API (`orchard.ray_submit.run_step_job`), from a driver process in the root namespace,
as an Airflow task would. Two Ray Train workers, one on host b and one on host c
(STRICT_SPREAD, and a label selector that keeps them off the head), train over gloo on
the hosts' bridge addresses; each reads the tokenized corpus from S3 itself (the job's
home, where its driver keeps its own copy, is on host a's disk, which b and c cannot
see), and checkpoints go to the bucket. moto's S3 server stands in
for MinIO, listening on the root namespace's bridge address, which the hosts reach.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from orchard import cluster
from orchard.settings import Settings
from orchard.steps import Manifest, localize, run_step
from orchard.storage import S3Options, Storage
from ray_jobs.tokenize import TokenizeConfig, tokenize
from ray_jobs.tokenizer import TokenizerConfig, train_tokenizer
from testkit.corpus import corpus_step

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

KEYS = {"access_key": "testing", "secret_key": "testing"}
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

# The driver of a DAG task: settings from the environment, the step as a Ray job.
SUBMIT = """
import json, sys
from orchard.ray_submit import run_step_job
from orchard.settings import load_settings
from orchard.steps import Manifest
from ray_jobs.pretrain import PretrainConfig

settings = load_settings()
tokenized = Manifest.read(sys.argv[2])
done = run_step_job(
    settings, module="pretrain", step="pretrain", name="model",
    config=PretrainConfig.model_validate_json(sys.argv[1]), inputs=[tokenized],
    base_id="cluster-pretrain-" + tokenized.key,
)
print("MANIFEST=" + done.path)
"""


def s3_client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def object_keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    pages = (
        s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    )
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


@pytest.fixture(scope="module")
def bridge_s3(cluster_session):
    """moto's S3 server on the root namespace's bridge address (not 0.0.0.0): the hosts
    reach it over their veths, nothing else does."""
    layout = cluster_session.ensure_up()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=layout.root_address, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


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
    cluster_hosts, bridge_s3, tmp_path
):
    layout = cluster_hosts.layout
    bucket = f"orchard-{uuid.uuid4().hex[:8]}"
    s3_client(bridge_s3).create_bucket(Bucket=bucket)
    data_root = f"s3://{bucket}/data"
    store = Storage(data_root, s3=S3Options(endpoint=bridge_s3, **KEYS), cache=tmp_path / "cache")

    # The model data, as the tokenizer and tokenize steps publish it on S3.
    corpus = corpus_step(store, documents=60)
    local_corpus = localize(corpus, store)
    tok_config = TokenizerConfig(vocab_size=384)
    tok = run_step(
        step="tokenizer",
        name="bpe",
        config=tok_config,
        data_root=store,
        inputs=[corpus],
        body=lambda ctx: train_tokenizer(tok_config, Path(local_corpus.path), ctx),
    )
    local_tok = localize(tok, store)
    config = TokenizeConfig(executor="local")
    tokenized = run_step(
        step="tokenize",
        name="corpus",
        config=config,
        data_root=store,
        inputs=[tok, corpus],
        body=lambda ctx: tokenize(
            config, Path(local_tok.path) / "tokenizer", Path(local_corpus.path), ctx
        ),
    )

    # The submitter's settings, as an Airflow task has them. Its home is the job driver's
    # too, and is on host a's disk: the driver's copy of the corpus is invisible to b and c.
    home = Path(layout.head.local_dir) / f"home-{uuid.uuid4().hex[:6]}"
    settings = Settings(
        home=home,
        data_root=data_root,
        s3_endpoint=bridge_s3,
        s3_access_key="testing",
        s3_secret_key="testing",
        ray_address=layout.dashboard_url,
        # MLflow's file store on the submitter's disk, as a tracking server would be.
        mlflow_tracking_uri=(tmp_path / "mlruns").as_uri(),
    )
    env = (
        cluster.node_env(cluster_hosts.settings, layout)
        | settings.to_env()
        | layout.client_env()
        | {"MLFLOW_ALLOW_FILE_STORE": "true"}
    )
    watcher = CheckpointWatcher(bridge_s3, bucket)
    watcher.start()
    try:
        job = subprocess.run(
            [sys.executable, "-c", SUBMIT, json.dumps(PRETRAIN), tokenized.path],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        watcher.stop.set()
        watcher.join()
    assert job.returncode == 0, (job.stdout[-4000:], job.stderr[-4000:])
    location = [x for x in job.stdout.splitlines() if x.startswith("MANIFEST=")][-1][9:]
    assert location.startswith(f"{data_root}/pretrain/model-")
    done = Manifest.read(location, store)

    # Both worker hosts trained: two workers, on b and on c, each on its own node.
    by_host = {w["hostname"]: w for w in done.workers}
    assert sorted(by_host) == ["host-b", "host-c"], done.workers
    assert len({w["node_id"] for w in done.workers}) == 2
    for name in ("b", "c"):
        worker = by_host[layout.host(name).hostname]
        assert worker["address"] == layout.host(name).address
        assert worker["data"] == tokenized.path  # it read the corpus from S3 itself
        # ... into its own host's disk (its node's Ray temp dir), where no one else looks.
        copies = list(Path(layout.host(name).ray_temp_dir).rglob("orchard-cache/inputs/tokenize/*"))
        assert [p for p in copies if (p / "datasets.json").is_file()], name
    assert not list(Path(layout.head.local_dir).rglob("orchard-cache"))

    # The loss is finite and went down over the run.
    prefix = done.path.removeprefix(f"s3://{bucket}/")
    curve = json.loads(
        s3_client(bridge_s3).get_object(Bucket=bucket, Key=f"{prefix}/curve.json")["Body"].read()
    )
    losses = [p["loss"] for p in curve if "loss" in p]
    assert len(losses) == PRETRAIN["steps"] and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]

    # Checkpoints went to the bucket (steps 3 and 6), and the work prefix is gone now.
    steps = {k.split("/checkpoint_")[1].split("/")[0] for k in watcher.seen}
    assert len(steps) >= 2 and any(k.endswith("/state.pt") for k in watcher.seen), watcher.seen
    assert all(
        k.startswith(f"data/pretrain/.model-{done.key}.work/ray-train/") for k in watcher.seen
    )
    assert not [k for k in object_keys(bridge_s3, bucket) if ".work/" in k]
    assert set(done.files) >= {"hf/config.json", "curve.json", "megatron/model.pt"}

    # Nothing was written to a local folder named like the URI, on any host or here.
    for root in (tmp_path, Path(layout.base_dir)):
        assert not [p for p in root.rglob("s3:*")], root
    assert not os.path.exists("s3:")
    shutil.rmtree(home)
