"""Pretraining on the three-host test cluster (orchard.cluster), shared by
tests/cluster/test_pretrain_cluster.py and bench/cluster.py: moto's S3 server on the root
namespace's bridge address, a tiny tokenized corpus published on it, and the pretrain
step submitted as a Ray job the way a DAG task submits it."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchard import cluster
from orchard.settings import Settings
from orchard.steps import Manifest, localize, run_step
from orchard.storage import S3Options, Storage

KEYS = {"access_key": "testing", "secret_key": "testing"}

# The driver of a DAG task: settings from the environment, the step as a Ray job.
SUBMIT = """
import sys
from orchard.ray_submit import run_step_job
from orchard.settings import load_settings
from orchard.steps import Manifest
from ray_jobs.pretrain import PretrainConfig

tokenized = Manifest.read(sys.argv[2])
done = run_step_job(
    load_settings(), module="pretrain", step="pretrain", name=sys.argv[3],
    config=PretrainConfig.model_validate_json(sys.argv[1]), inputs=[tokenized],
    base_id=f"{sys.argv[3]}-{tokenized.key}",
)
print("MANIFEST=" + done.path)
"""


def s3_client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=KEYS["access_key"],
        aws_secret_access_key=KEYS["secret_key"],
        region_name="us-east-1",
    )


def object_keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    pages = s3_client(endpoint).get_paginator("list_objects_v2")
    return [
        item["Key"]
        for page in pages.paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
    ]


@contextmanager
def bridge_s3(layout: cluster.Layout) -> Iterator[str]:
    """moto's S3 server on the root namespace's bridge address (not 0.0.0.0): the test
    hosts reach it over their veths, nothing else does. Yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=layout.root_address, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@dataclass
class ModelData:
    endpoint: str
    bucket: str
    data_root: str
    store: Storage
    tokenized: Manifest


def model_data_on_s3(endpoint: str, cache: Path, documents: int = 60) -> ModelData:
    """A fresh bucket with a tokenized corpus in it, as the tokenizer and tokenize steps
    publish it (they run here, in the root namespace)."""
    from ray_jobs.tokenize import TokenizeConfig, tokenize
    from ray_jobs.tokenizer import TokenizerConfig, train_tokenizer
    from testkit.corpus import corpus_step

    bucket = f"orchard-{uuid.uuid4().hex[:8]}"
    s3_client(endpoint).create_bucket(Bucket=bucket)
    data_root = f"s3://{bucket}/data"
    store = Storage(data_root, s3=S3Options(endpoint=endpoint, **KEYS), cache=cache)
    corpus = corpus_step(store, documents=documents)
    local_corpus = Path(localize(corpus, store).path)
    tok_config = TokenizerConfig(vocab_size=384)
    tok = run_step(
        step="tokenizer",
        name="bpe",
        config=tok_config,
        data_root=store,
        inputs=[corpus],
        body=lambda ctx: train_tokenizer(tok_config, local_corpus, ctx),
    )
    local_tok = Path(localize(tok, store).path)
    config = TokenizeConfig(executor="local")
    tokenized = run_step(
        step="tokenize",
        name="corpus",
        config=config,
        data_root=store,
        inputs=[tok, corpus],
        body=lambda ctx: tokenize(config, local_tok / "tokenizer", local_corpus, ctx),
    )
    return ModelData(endpoint, bucket, data_root, store, tokenized)


def submitter_settings(layout: cluster.Layout, data: ModelData, home: Path, mlruns: Path):
    """The settings of the process that submits the job, as an Airflow task has them."""
    return Settings(
        home=home,
        data_root=data.data_root,
        s3_endpoint=data.endpoint,
        s3_access_key=KEYS["access_key"],
        s3_secret_key=KEYS["secret_key"],
        ray_address=layout.dashboard_url,
        # MLflow's file store on the submitter's disk, standing in for a tracking server.
        mlflow_tracking_uri=mlruns.as_uri(),
    )


def submit_pretrain(
    hosts_settings: Settings,
    layout: cluster.Layout,
    settings: Settings,
    config: dict,
    tokenized: Manifest,
    name: str = "model",
    timeout: float = 300,
) -> tuple[str | None, str]:
    """Run the pretrain step as a Ray job on the cluster from a driver process in the
    root namespace; return (the published manifest's location or None, the log)."""
    env = (
        cluster.node_env(hosts_settings, layout)
        | settings.to_env()
        | layout.client_env()
        | {"MLFLOW_ALLOW_FILE_STORE": "true"}
    )
    job = subprocess.run(
        [sys.executable, "-c", SUBMIT, json.dumps(config), tokenized.path, name],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    log = job.stdout + job.stderr
    found = [x for x in job.stdout.splitlines() if x.startswith("MANIFEST=")]
    if job.returncode != 0 or not found:
        return None, log
    return found[-1].removeprefix("MANIFEST="), log
