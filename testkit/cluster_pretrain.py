"""Pretraining on the three-host test cluster (orchard.cluster), shared by the pretrain,
TP/PP and host-death tests of tests/cluster/ and by bench/cluster.py: moto's S3 server on
the root namespace's bridge address, a tiny tokenized corpus published on it, and the
pretrain step submitted as a Ray job the way a DAG task submits it (`ClusterPretrain`)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
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
from testkit.s3 import moto_s3

KEYS = {"access_key": "testing", "secret_key": "testing"}
REPO = Path(__file__).resolve().parents[1]

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

# Several pretrain steps, one after the other, in one Ray job, so that the job's driver
# (Python, torch, Megatron) starts once for all of them: each is the step's command line
# (`ray_jobs.pretrain.main`), which prints `manifest: <its location>/manifest.json`.
TOGETHER_JOB = """
import json, sys
from ray_jobs.pretrain import main

for name, config in json.loads(sys.argv[1]).items():
    if main(["--config", json.dumps(config), "--input", sys.argv[2], "--name", name]):
        sys.exit(1)
"""
PUBLISHED = re.compile(r"manifest: (\S+/pretrain/([^/]+)-[0-9a-f]+)/manifest\.json")
# Its submitter: a DAG task's process, submitting through the head's job API.
SUBMIT_TOGETHER = """
import shlex, sys
from orchard.ray_submit import run_ray_job, submission_base
from orchard.settings import load_settings
from orchard.steps import Manifest

job, configs, tokenized = sys.argv[1], sys.argv[2], Manifest.read(sys.argv[3])
manifest = tokenized.ref.path.rstrip("/") + "/manifest.json"
entrypoint = shlex.join(["python", "-c", job, configs, manifest])
base_id = submission_base(sys.argv[4], tokenized.key)
run_ray_job(load_settings(), base_id=base_id, entrypoint=entrypoint)
"""

# The DAGs as Airflow runs their tasks, in-process (`dag.test`, as tests/dags does) in the
# root namespace, with the settings of the environment (the data root on S3, Ray's address
# the head's): each step task submits its step as a Ray job through the head's job API.
# Each DAG of the chain gets, in its Param named in `chain`, the location that the task
# named there returned in the DAG before it (an `s3://` directory: the `manifest.json` in
# it), as the asset events hand it on; the last DAG's last location is printed.
DAG_CHAIN = """
import json, os, sys
sys.path.insert(0, os.path.dirname(sys.argv[1]))  # this checkout's orchard, whatever the cwd
from airflow.dag_processing.dagbag import DagBag
from airflow.models.xcom import XComModel
from airflow.utils import db
from airflow.utils.session import create_session

dags, location, chain = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
db.initdb()
bag = DagBag(dag_folder=dags)
for dag_id, param, conf, output in chain:
    run = bag.get_dag(dag_id).test(run_conf={**conf, param: location + "/manifest.json"})
    if run.state != "success":
        sys.exit(f"DAG_FAILED={dag_id}: {run.state}")
    with create_session() as session:
        query = XComModel.get_many(
            run_id=run.run_id, key="return_value", dag_ids=dag_id, task_ids=output
        )
        row = session.scalars(query).first()
        location = XComModel.deserialize_value(row)
    print(f"DAG_DONE={dag_id} {location}", flush=True)
print("MANIFEST=" + location, flush=True)
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
    with moto_s3(layout.root_address) as url:
        yield url


@dataclass
class ModelData:
    endpoint: str
    bucket: str
    data_root: str
    store: Storage
    tokenized: Manifest | None  # None with `tokenize=False` (the DAGs tokenize)
    corpus: Manifest


def model_data_on_s3(
    endpoint: str, cache: Path, documents: int = 60, tokenize: bool = True
) -> ModelData:
    """A fresh bucket with a curated corpus in it and, with `tokenize`, the corpus
    tokenized as the tokenizer and tokenize steps publish it (they run here, in the root
    namespace)."""
    from ray_jobs.tokenize import TokenizeConfig
    from ray_jobs.tokenize import tokenize as tokenize_body
    from ray_jobs.tokenizer import TokenizerConfig, train_tokenizer
    from testkit.corpus import corpus_step

    bucket = f"orchard-{uuid.uuid4().hex[:8]}"
    s3_client(endpoint).create_bucket(Bucket=bucket)
    data_root = f"s3://{bucket}/data"
    store = Storage(data_root, s3=S3Options(endpoint=endpoint, **KEYS), cache=cache)
    corpus = corpus_step(store, documents=documents)
    if not tokenize:
        return ModelData(endpoint, bucket, data_root, store, None, corpus)
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
        body=lambda ctx: tokenize_body(config, local_tok / "tokenizer", local_corpus, ctx),
    )
    return ModelData(endpoint, bucket, data_root, store, tokenized, corpus)


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


@dataclass
class ClusterPretrain:
    """What a pretraining run on the test cluster needs: the cluster, a bucket holding a
    tokenized corpus, and the settings of the process that submits the job (its home on
    host a's disk, MLflow's file store in `mlruns`), as an Airflow task has them."""

    hosts_settings: Settings  # the cluster's (orchard.cluster.up)
    layout: cluster.Layout
    data: ModelData
    settings: Settings  # the submitter's
    mlruns: Path

    def with_mlflow(self, mlruns: Path) -> ClusterPretrain:
        """The same, with MLflow's file store in `mlruns`: a job running beside another
        needs its own, as two processes creating the experiment in one store race."""
        tracking = self.settings.model_copy(update={"mlflow_tracking_uri": mlruns.as_uri()})
        return dataclasses.replace(self, settings=tracking, mlruns=mlruns)

    def env(self) -> dict[str, str]:
        """The environment of a job's submitter, in the root namespace."""
        return (
            cluster.node_env(self.hosts_settings, self.layout)
            | self.settings.to_env()
            | self.layout.client_env()
            | {"MLFLOW_ALLOW_FILE_STORE": "true"}
        )

    def command(self, config: dict, name: str) -> list[str]:
        """The submitter: the pretrain step of `config` on the corpus, as a Ray job."""
        return [sys.executable, "-c", SUBMIT, json.dumps(config), self.data.tokenized.path, name]

    def dag_chain_command(self, chain: list[tuple[str, str, dict, str]]) -> list[str]:
        """Airflow's DAGs `chain` ([(DAG id, the Param that takes the upstream location,
        its other Params, the task whose return value is the location it hands on)]) run
        in-process one after the other (DAG_CHAIN) from the corpus in the bucket."""
        return [
            sys.executable,
            "-c",
            DAG_CHAIN,
            str(REPO / "dags"),
            self.data.corpus.path,
            json.dumps(chain),
        ]

    def submit(
        self, config: dict, name: str = "model", timeout: float = 300
    ) -> tuple[str | None, str]:
        """Run the pretrain step as a Ray job on the cluster from a driver process in the
        root namespace; return (the published manifest's location or None, the log)."""
        job = subprocess.run(
            self.command(config, name),
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        log = job.stdout + job.stderr
        found = [x for x in job.stdout.splitlines() if x.startswith("MANIFEST=")]
        if job.returncode != 0 or not found:
            return None, log
        return found[-1].removeprefix("MANIFEST="), log

    def submit_together(
        self, configs: dict[str, dict], timeout: float = 420
    ) -> tuple[dict[str, str], str]:
        """Run the pretrain step of each of `configs` (run name -> config), one after the
        other, in one Ray job on the cluster, submitted from a driver process in the root
        namespace; return ({run name: its published manifest's location} for each run that
        finished, the log)."""
        names = "-".join(configs)
        command = [sys.executable, "-c", SUBMIT_TOGETHER, TOGETHER_JOB, json.dumps(configs)]
        job = subprocess.run(
            [*command, self.data.tokenized.path, names],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        log = job.stdout + job.stderr
        found = {}
        for line in job.stdout.splitlines():
            if match := PUBLISHED.search(line):
                found[match[2]] = match[1]
        return found, log


@contextmanager
def cluster_pretrain(
    hosts_settings: Settings,
    layout: cluster.Layout,
    endpoint: str,
    scratch: Path,
    documents: int = 60,
    tokenize: bool = True,
) -> Iterator[ClusterPretrain]:
    """A `ClusterPretrain` on a fresh bucket of the S3 server at `endpoint` (the corpus's
    local cache and MLflow's store under `scratch`; without `tokenize`, the corpus only);
    the submitter's home goes at the end."""
    data = model_data_on_s3(endpoint, scratch / "cache", documents=documents, tokenize=tokenize)
    # The submitter's home is the job driver's too, and is on host a's disk: the driver's
    # copies of inputs are there, invisible to hosts b and c.
    home = Path(layout.head.local_dir) / f"home-{uuid.uuid4().hex[:6]}"
    mlruns = scratch / "mlruns"
    settings = submitter_settings(layout, data, home, mlruns)
    try:
        yield ClusterPretrain(hosts_settings, layout, data, settings, mlruns)
    finally:
        shutil.rmtree(home, ignore_errors=True)
