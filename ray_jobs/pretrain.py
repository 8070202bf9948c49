"""The pretrain step: Megatron-Core GPT pretraining on Ray Train, exported to Hugging Face.

Input: a `tokenize` manifest (Megatron `.bin/.idx` train/valid splits + the tokenizer).
Ray Train's `TorchTrainer` runs `workers` data-parallel copies (gloo on CPU, NCCL on GPU);
each builds Megatron's `parallel_state` on top (tensor/pipeline sizes from the preset), the
`GPTModel` and Megatron's optimizer (`model/training.py`), and reads its slice of every
global batch from Megatron's `GPTDataset`, so the data order is a function of the seed and
the step alone. Every `checkpoint_interval` steps the full training state goes to Ray
Train's storage (the step's work directory); a run killed at any point (a worker, the
driver, the machine) resumes from the last checkpoint with the same data order and loss
curve. Loss, validation loss/perplexity, LR, grad norm, tokens/s (and MFU on a GPU) stream
into one MLflow run, which a resumed attempt continues.

Continued pretraining: with an imported base model among the inputs (an import_model
manifest, `init_from` in `orchard_pretrain`), the model is the base's (its shape from
`megatron/preset.json`: RMSNorm, SwiGLU, RoPE theta, GQA, tied embeddings, its vocabulary
and positions) initialised from its `megatron/model.pt` instead of at random. The
tokenized corpus must have been made with the base's own tokenizer (`orchard_tokenizer`'s
*Use this tokenizer*; checked by the sha256 of its tokenizer.json), `seq_length` may not
exceed the base's positions (default: min(positions, 1024)), and the peak LR defaults to
1e-4. Before the first step the validation loss of the loaded model is measured and logged
at step 0 (`init_val_loss`): far below a random initialisation's ~ln(vocab). The export
keeps the base's config (special tokens, context length), and the manifest's facts name
the base (`base_source`, `base_sha256`, `base_licence`, `base_display_name`).

Output: `hf/` (a `LlamaForCausalLM` in safetensors + tokenizer + chat template, loadable
with `AutoModelForCausalLM.from_pretrained`), `megatron/model.pt` (the Megatron weights),
`curve.json` (every logged step), `samples/` (the export continuing held-out documents,
with ROUGE-1, on-topic ratio and distinct-2: `model/samples.py`).

    python -m ray_jobs.pretrain --config '{"preset": "nano", "steps": 300}' --input T.json
    python -m ray_jobs.pretrain --config '{"steps": 20, "seq_length": 512}' \
        --input T.json --input IMPORT.json          # continued pretraining of the import
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import tempfile
import time
import unittest.mock
import uuid
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from orchard.errors import OrchardError
from orchard.progress import step_line
from orchard.settings import Settings
from orchard.steps import Manifest, StepConfig, StepContext, StepOutput, StepSpec
from orchard.storage import is_uri
from orchard.train_metrics import TrainMetrics

log = logging.getLogger("orchard.pretrain")

# Peak dense bf16 FLOP/s per device, for the MFU estimate (none is claimed on a CPU).
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
STATE_FILE = "state.pt"
RUN_ID_FILE = "mlflow-run-id"
# Continued pretraining: a gentler peak LR than from scratch (the base is trained already),
# and a CPU-sized default sequence length below the base's positions.
CONTINUED_LR = 1e-4
CONTINUED_SEQ_LENGTH = 1024


class PretrainConfig(StepConfig):
    preset: str = Field(
        "nano",
        description="Model shape: nano, micro, small, medium, large. Not used when "
        "initialising from an imported base model (the base's shape is).",
    )
    steps: int = Field(300, ge=1, description="Optimizer steps.")
    global_batch_size: int = Field(8, ge=1, description="Sequences per optimizer step.")
    seq_length: int | None = Field(
        None,
        ge=8,
        description="Tokens per sequence. Default: the preset's; from a base model, "
        "min(its positions, 1024).",
    )
    lr: float | None = Field(
        None,
        gt=0,
        description="Peak learning rate. Default: 6e-4 scaled by sqrt(4096 / hidden size), "
        "so tiny models are not starved (nano: 2.4e-3); 1e-4 from a base model.",
    )
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final LR as a share of peak.")
    warmup_steps: int | None = Field(None, ge=0, description="Linear warmup (default 10%).")
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, gt=0, lt=1)
    beta2: float = Field(0.95, gt=0, lt=1)
    clip_grad: float = Field(1.0, gt=0)
    seed: int = Field(1234, description="Initialisation and data order.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 on a GPU, fp32 on a CPU."
    )
    recompute: bool = Field(False, description="Recompute activations (saves GPU memory).")
    eval_interval: int = Field(50, ge=1, description="Validation every N steps.")
    eval_batches: int = Field(4, ge=1, description="Global batches per validation.")
    log_interval: int = Field(10, ge=1, description="Metrics to MLflow every N steps.")
    checkpoint_interval: int = Field(100, ge=1, description="Checkpoint every N steps.")
    workers: int = Field(1, ge=1, description="Data-parallel Ray Train workers.")
    threads_per_worker: int = Field(2, ge=1, description="CPU threads (and Ray CPUs) each.")
    use_gpu: bool | None = Field(None, description="Default: when the Ray cluster has GPUs.")
    placement: Literal["PACK", "SPREAD", "STRICT_SPREAD"] = Field(
        "PACK",
        description="Ray placement of the workers: STRICT_SPREAD puts each on its own node.",
    )
    worker_labels: dict[str, str] = Field(
        {},
        description="Ray label selector every worker's node must match, e.g. "
        '{"orchard-host": "in(b,c)"} (Ray\'s `label_selector`).',
    )
    # How a run is spread and how often it reports does not change the model it makes
    # (the global batch and the data order stay the same).
    not_in_key: ClassVar[frozenset[str]] = frozenset(
        {
            "workers",
            "threads_per_worker",
            "use_gpu",
            "placement",
            "worker_labels",
            "log_interval",
            "checkpoint_interval",
        }
    )

    @model_validator(mode="after")
    def _batch_splits(self) -> PretrainConfig:
        from model.presets import PRESETS

        if self.global_batch_size % self.workers:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} does not split over "
                f"{self.workers} workers: make it a multiple of workers"
            )
        preset = PRESETS.get(self.preset)  # an unknown name is refused when training starts
        if preset is not None and self.workers % preset.model_parallel_size:
            raise ValueError(
                f"preset {preset.name!r} splits one model over TP {preset.tensor_parallel} × "
                f"PP {preset.pipeline_parallel} = {preset.model_parallel_size} workers: set "
                f"workers to a multiple of {preset.model_parallel_size}"
            )
        return self


def peak_lr(config: PretrainConfig, hidden_size: int, continued: bool = False) -> float:
    if config.lr:
        return config.lr
    return CONTINUED_LR if continued else 6e-4 * math.sqrt(4096 / hidden_size)


def read_datasets(tokenized: Path) -> dict[str, Any]:
    """The tokenize step's `datasets.json`, with prefixes made absolute."""
    index_file = tokenized / "datasets.json"
    if not index_file.is_file():
        raise OrchardError(f"no datasets.json in {tokenized}: pass a tokenize step's manifest")
    index = json.loads(index_file.read_text())
    for split in ("train", "valid"):
        if not index.get(split):
            raise OrchardError(
                f"the tokenized corpus {tokenized} has no {split} split: tokenize more "
                "documents or change valid_fraction"
            )
        for entry in index[split]:
            entry["prefix"] = str(tokenized / entry["prefix"])
    tokenizer = Path(index["tokenizer"])
    index["tokenizer"] = str(tokenizer if tokenizer.is_absolute() else tokenized / tokenizer)
    return index


def unigram_entropy(prefixes: list[str], vocab_size: int) -> float:
    """Entropy (nats/token) of the corpus's token frequencies: the loss of the best model
    that ignores context. A pretrained model must land clearly below it."""
    import numpy as np
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    counts = np.zeros(vocab_size, dtype=np.int64)
    for prefix in prefixes:
        dataset = IndexedDataset(prefix)
        tokens = dataset.bin_reader.read(
            dtype=dataset.index.dtype, count=int(dataset.index.sequence_lengths.sum()), offset=0
        )
        counts += np.bincount(tokens, minlength=vocab_size)[:vocab_size]
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


# -- the Ray Train worker ------------------------------------------------------------


def _datasets(loop: dict[str, Any], seq_length: int):
    """Megatron GPTDatasets over the train/valid prefixes, sized for the whole run."""
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.tokenizers import MegatronTokenizer

    index, cache, per_node = loop["datasets"], loop["dataset_cache"], False
    if loop["datasets_source"]:
        index, cache = _localize_on_this_node(loop["datasets_source"])
        per_node = True

    def blend(split: str) -> tuple[list[str], list[float]]:
        entries = index[split]
        return [e["prefix"] for e in entries], [float(e["tokens"]) for e in entries]

    # The end-of-document and pad tokens the corpus was tokenized with. A pad that is the
    # end-of-document token (a base model without a pad token) makes Megatron pad with -1
    # instead, outside the vocabulary and out of the loss; it warns about the collision.
    tokenizer = MegatronTokenizer.from_pretrained(
        index["tokenizer"],
        metadata_path={"library": "huggingface"},
        eos_token=index.get("eod_token", "<|endoftext|>"),
        pad_token=index.get("pad_token", "<|pad|>"),
    )
    config = GPTDatasetConfig(
        random_seed=loop["seed"],
        sequence_length=seq_length,
        blend_per_split=[blend("train"), blend("valid"), None],
        tokenizer=tokenizer,
        reset_position_ids=False,  # packed like the exported HF model sees text
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,  # causal attention is built into the core attention
        path_to_cache=cache,
    )
    gbs = loop["global_batch_size"]
    sizes = [loop["steps"] * gbs, loop["eval_batches"] * gbs, None]
    builder = BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, config)
    if per_node:  # a copy of the data per node: every rank builds its own indices
        with _as_world_of_one():
            train, valid, _ = builder.build()
    else:
        train, valid, _ = builder.build()
    return train, valid


@contextlib.contextmanager
def _as_world_of_one():
    """Megatron's dataset builder assumes one file system for all ranks: rank 0 builds
    the sample indices and writes them to a cache, the other ranks load that cache. With
    a copy of the data on each node there is no such cache, so each rank builds the
    indices itself (the same ones: they depend on the seed only) while the builder sees
    no process group."""
    import torch.distributed

    with unittest.mock.patch.object(torch.distributed, "is_initialized", lambda: False):
        yield


def _localize_on_this_node(source: str) -> tuple[dict[str, Any], str]:
    """The tokenize output published at `source` (object storage), downloaded by this
    worker into its own node's cache: on a cluster the driver's local copy is on another
    host. The cache is under Ray's temp dir of this node (always local and writable; the
    job's ORCHARD_HOME is the submitter's path) and is shared by the workers of a node.
    The endpoint and keys come from the job's ORCHARD_S3_* settings.

    Returns the datasets index and a dataset index cache of this process's own (see
    `_as_world_of_one`)."""
    import ray

    from orchard.steps import Manifest, localize
    from orchard.storage import storage_for

    store = storage_for(source)
    store.cache = Path(ray.get_runtime_context().get_temp_dir()) / "orchard-cache"
    local = Path(localize(Manifest.read(source, store), store).path)
    # This process's own index cache (two workers of a node must not write one together).
    cache = local.parent / f".{local.name}-dataset-cache" / uuid.uuid4().hex
    return read_datasets(local), str(cache)


def _init_weights(init: dict[str, str | None]) -> Path:
    """The base model's megatron/model.pt on this node: the driver's path, or (an import
    published on object storage) a copy this worker downloads into its node's cache."""
    if not init["source"]:
        return Path(init["weights"])
    import ray

    from orchard.steps import Manifest, localize
    from orchard.storage import storage_for

    store = storage_for(init["source"])
    store.cache = Path(ray.get_runtime_context().get_temp_dir()) / "orchard-cache"
    local = Path(localize(Manifest.read(init["source"], store), store).path)
    return local / "megatron" / "model.pt"


def _where(rank: int, loop: dict[str, Any]) -> dict[str, str]:
    """This worker's node, for the manifest: which hosts trained, and from where they read."""
    import socket

    import ray

    return {
        "rank": str(rank),
        "node_id": ray.get_runtime_context().get_node_id(),
        "hostname": socket.gethostname(),
        "address": ray.util.get_node_ip_address(),
        "data": loop["datasets_source"] or "driver's local copy",
    }


def _batch(dataset, step: int, loop: dict[str, Any], rank: int, world: int) -> dict:
    """Data-parallel replica `rank` of `world`'s slice of global batch `step`: the same
    samples whatever the restart."""
    import torch

    per_rank = loop["global_batch_size"] // world
    first = step * loop["global_batch_size"] + rank * per_rank
    samples = [dataset[i] for i in range(first, first + per_rank)]
    return {key: torch.stack([torch.as_tensor(s[key]) for s in samples]) for key in samples[0]}


def train_loop(loop: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import torch
    from megatron.core import parallel_state

    from model.distributed import init_model_parallel
    from model.presets import ModelPreset
    from model.training import TrainConfig, build_training

    torch.set_num_threads(loop["threads"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    # Every rank's node, gathered over the process group (so also a check that it spans them).
    workers: list[Any] = [None] * world
    torch.distributed.all_gather_object(workers, _where(rank, loop))
    preset = ModelPreset(**loop["model_preset"])
    init_model_parallel(preset, seed=loop["seed"])
    # The ranks of one model replica (TP × PP) read the same samples: the global batch
    # is split over the data-parallel replicas only.
    dp_rank = parallel_state.get_data_parallel_rank()
    dp_size = parallel_state.get_data_parallel_world_size()
    shard = (
        parallel_state.get_tensor_model_parallel_rank(),
        parallel_state.get_pipeline_model_parallel_rank(),
    )
    per_replica = loop["global_batch_size"] // dp_size
    # A pipeline runs micro-batches through its stages one behind the other: give each
    # stage one micro-batch of its own when the slice splits so.
    pp = preset.pipeline_parallel
    micro_batch = per_replica // pp if per_replica % pp == 0 else per_replica
    checkpoint = ray.train.get_checkpoint()
    init_state = None
    if loop["init"] and not checkpoint:  # a resumed run has its weights in the checkpoint
        init_state = torch.load(_init_weights(loop["init"]), weights_only=True)
    train_config = TrainConfig(
        lr=loop["lr"],
        min_lr=loop["lr"] * loop["min_lr_ratio"],
        weight_decay=loop["weight_decay"],
        beta1=loop["beta1"],
        beta2=loop["beta2"],
        clip_grad=loop["clip_grad"],
        warmup_steps=loop["warmup_steps"],
        total_steps=loop["steps"],
        micro_batch_size=micro_batch,
        seed=loop["seed"],
    )
    training = build_training(
        preset,
        loop["vocab_size"],
        train_config,
        bf16=loop["bf16"],
        recompute=loop["recompute"],
        init_state=init_state,
    )
    del init_state
    curve: list[dict[str, float]] = []
    start = 0
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / STATE_FILE, weights_only=False)
        training.load_state_dict(state["shards"][shard])
        start, curve = state["step"], state["curve"]
        if rank == 0:
            print(f"resumed from the checkpoint of step {start}", flush=True)
    train_set, valid_set = _datasets(loop, loop["seq_length"])

    mlflow = _MlflowLogger(loop["mlflow_uri"], loop["mlflow_run_id"]) if rank == 0 else None
    prometheus = TrainMetrics(loop["run_name"], "pretrain") if rank == 0 else None
    tokens_per_step = loop["global_batch_size"] * loop["seq_length"]
    if loop["init"] and start == 0:  # the loaded base model before any step
        batches = [
            _batch(valid_set, i, loop, dp_rank, dp_size) for i in range(loop["eval_batches"])
        ]
        val_loss = float(training.eval_loss(batches))
        point = {"val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50))}
        curve.append({"step": 0, "tokens": 0, **point})
        if mlflow:
            mlflow.log(point, 0)
        if rank == 0:
            print(
                f"step 0 (the base model as loaded): validation loss {val_loss:.3f}; a random "
                f"initialisation's is about ln(vocab) = {math.log(loop['vocab_size']):.2f}",
                flush=True,
            )
    window_start, window_steps = time.perf_counter(), 0
    for step in range(start, loop["steps"]):
        out = training.train_step(_batch(train_set, step, loop, dp_rank, dp_size))
        window_steps += 1
        done = step + 1
        if prometheus:
            prometheus.step()
        point: dict[str, float] = {}
        if done % loop["log_interval"] == 0 or done == loop["steps"]:
            elapsed = time.perf_counter() - window_start
            tokens_per_s = window_steps * tokens_per_step / elapsed
            point = {
                "loss": float(out["loss"]),
                "lr": float(out["lr"]),
                "grad_norm": float(out["grad_norm"]),
                "tokens_per_s": tokens_per_s,
            }
            if loop["peak_flops"]:
                point["mfu"] = tokens_per_s * loop["flops_per_token"] / loop["peak_flops"]
            window_start, window_steps = time.perf_counter(), 0
        if done % loop["eval_interval"] == 0 or done == loop["steps"]:
            batches = [
                _batch(valid_set, i, loop, dp_rank, dp_size) for i in range(loop["eval_batches"])
            ]
            val_loss = float(training.eval_loss(batches))
            point |= {"val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50))}
        if point:
            point["step"] = done
            point["tokens"] = done * tokens_per_step
            curve.append(point)
            if mlflow:
                mlflow.log(point, done)
            if prometheus:
                prometheus.point(point)
            if rank == 0:
                print(json.dumps(point), flush=True)
                if "loss" in point:  # for people: the Airflow task log, `orchard run`
                    print(step_line(done, loop["steps"], point["loss"]), flush=True)
        if done % loop["checkpoint_interval"] == 0 or done == loop["steps"]:
            _report_checkpoint(training, done, curve, workers, point, rank, mlflow)


def _report_checkpoint(
    training, step: int, curve: list, workers: list, point: dict, rank: int, mlflow
) -> None:
    """Every rank reports; rank 0 hands Ray Train the state, which Ray copies to the
    run's storage. The state holds every shard of the first model replica (data-parallel
    replicas are identical), keyed by (TP rank, PP rank), for a resumed run of the same
    layout, and the whole model merged (`model`: TP = PP = 1 keys) for the export.
    Gathering a whole model on one rank suits the CPU presets; at GPU scale Megatron's
    distributed checkpointing (not used here) writes the shards in parallel instead."""
    import ray.train
    import torch
    from megatron.core import parallel_state

    from model.distributed import gather_model_parallel
    from model.shards import merge_shards

    metrics = {"step": step, **{k: v for k, v in point.items() if k != "step"}}
    # Named by step, so the storage shows which steps are safe (every rank passes it).
    name = f"checkpoint_step-{step:06d}"
    shards = None
    if parallel_state.get_data_parallel_rank() == 0:  # the first replica's TP × PP ranks
        shards = gather_model_parallel(training.state_dict())
    if rank != 0:
        ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
        return
    assert shards is not None
    with tempfile.TemporaryDirectory(prefix="orchard-ckpt-") as directory:
        state = {
            "step": step,
            "curve": curve,
            "workers": workers,
            "shards": shards,
            "model": merge_shards({k: v["model"] for k, v in shards.items()}, training.preset),
        }
        torch.save(state, Path(directory) / STATE_FILE)
        checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)
        if mlflow:  # the weights, for people to pick up; the full state stays in Ray's storage
            weights = Path(directory) / "model.pt"
            torch.save(state["model"], weights)
            mlflow.artifact(weights, f"checkpoints/step-{step:06d}")


class _MlflowLogger:
    def __init__(self, uri: str | None, run_id: str | None) -> None:
        self.client = None
        if uri and run_id:
            from mlflow.tracking import MlflowClient

            self.client, self.run_id = MlflowClient(uri), run_id

    def log(self, point: dict[str, float], step: int) -> None:
        if not self.client:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in point.items() if k != "step"]
        try:
            self.client.log_batch(self.run_id, metrics=metrics)
        except Exception as error:  # tracking must never stop training
            print(f"warning: MLflow logging failed: {error}", flush=True)

    def artifact(self, path: Path, artifact_path: str) -> None:
        if not self.client:
            return
        try:
            self.client.log_artifact(self.run_id, str(path), artifact_path)
        except Exception as error:
            print(f"warning: MLflow artifact upload failed: {error}", flush=True)


# -- the driver ----------------------------------------------------------------------


def _mlflow_run(
    uri: str | None, ctx: StepContext, name: str, tokenized: Manifest, base: Manifest | None
) -> str | None:
    """The step's MLflow run, opened before training so the curve is live; a resumed
    attempt continues the same run (its id is kept in the work directory)."""
    if not uri:
        return None
    import mlflow
    from mlflow.tracking import MlflowClient

    keep = ctx.work / RUN_ID_FILE
    client = MlflowClient(uri)
    if keep.is_file():
        run_id = keep.read_text().strip()
        try:
            client.update_run(run_id, status="RUNNING")
            return run_id
        except mlflow.exceptions.MlflowException:
            log.warning("the MLflow run %s of the last attempt is gone: starting another", run_id)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.set_experiment("orchard-pretrain").experiment_id
    tags = {
        "orchard.step": "pretrain",
        "orchard.key": ctx.key,
        "orchard.tokenize_key": tokenized.key,
        "orchard.tokenize_path": tokenized.ref.path,
    }
    if base is not None:
        tags |= {"orchard.init_from": base.ref.path, "orchard.init_key": base.key}
        tags |= {f"orchard.{k}": v for k, v in base_facts(base).items()}
    run = client.create_run(experiment, run_name=f"{name}-{ctx.key}", tags=tags)
    keep.write_text(run.info.run_id)
    return run.info.run_id


def _cluster_has_gpu() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def init_from_manifest(given: str) -> tuple[str, str]:
    """(manifest.json path, run name) of the imported base model `given` names: its
    manifest or its output directory (a local path or an s3:// location). The run name is
    `cpt-<the import's name>`. An OrchardError (one line) for anything else."""
    from orchard.storage import join, storage_for

    directory = given.strip().rstrip("/").removesuffix("/manifest.json")
    if is_uri(directory):
        found = storage_for(directory).is_file(join(directory, "manifest.json"))
    else:
        found = (Path(directory) / "manifest.json").is_file()
    if not found:
        raise OrchardError(
            f"no imported model at {given}: give an import_model manifest or its directory "
            "(run orchard_import first)"
        )
    manifest = Manifest.read(directory)
    if manifest.step != "import_model":
        raise OrchardError(
            f"{given} is a {manifest.step} output, not an imported base model: give an "
            "import_model manifest (orchard_import)"
        )
    return join(directory, "manifest.json"), f"cpt-{manifest.name}"


def base_of_tokenized(tokenized_manifest: str) -> str | None:
    """The import_model output whose tokenizer the tokenize output at `tokenized_manifest`
    used (its manifest.json), or None when its tokenizer was trained."""
    from orchard.storage import join

    tokenized = Manifest.read(tokenized_manifest.rstrip("/").removesuffix("/manifest.json"))
    bases = [ref.path for ref in tokenized.inputs if ref.step == "import_model"]
    return join(bases[0], "manifest.json") if bases else None


def base_facts(base: Manifest) -> dict[str, str]:
    """What the manifest records of the base model a run started from."""
    facts = base.facts
    return {
        f"base_{k}": facts[k]
        for k in ("source", "sha256", "licence", "display_name", "architecture")
        if k in facts
    }


def continued_model(
    config: PretrainConfig, base: Manifest, index: dict[str, Any]
) -> tuple[Any, int, int]:
    """(preset, vocab size, seq_length) of continued pretraining from the import `base`,
    checked against the tokenized corpus: its tokenizer must be the base's own, and
    seq_length at most the base's positions."""
    import hashlib

    from model.presets import ModelPreset

    directory = Path(base.path)
    preset_file = directory / "megatron" / "preset.json"
    if not preset_file.is_file() or not (directory / "megatron" / "model.pt").is_file():
        raise OrchardError(
            f"{base.path} has no megatron/preset.json and model.pt: pass an import_model "
            "output (orchard_import) to initialise from"
        )
    preset = ModelPreset(**json.loads(preset_file.read_text()))
    vocab_size = int(base.counts["vocab_size"])

    def sha256(tokenizer_dir: Path) -> str | None:
        file = tokenizer_dir / "tokenizer.json"
        return hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else None

    if sha256(Path(index["tokenizer"])) != sha256(directory / "tokenizer"):
        raise OrchardError(
            f"the tokenized corpus was made with another tokenizer than the base model "
            f"{base.facts.get('display_name', base.name)!r}'s: tokenize the corpus with it "
            "(orchard_tokenizer's base_tokenizer Param) and pass that tokenize output"
        )
    if int(index["vocab_size"]) > vocab_size:
        raise OrchardError(
            f"the tokenized corpus has a vocabulary of {index['vocab_size']} but the base "
            f"model only {vocab_size} embeddings: tokenize with the base model's tokenizer"
        )
    positions = preset.seq_length
    seq_length = config.seq_length or min(positions, CONTINUED_SEQ_LENGTH)
    if seq_length > positions:
        raise OrchardError(
            f"seq_length {seq_length} exceeds the base model's {positions} positions: set "
            f"seq_length to at most {positions}"
        )
    if config.preset != PretrainConfig.model_fields["preset"].default:
        log.warning("preset %r is not used: the base model's shape is", config.preset)
    return preset, vocab_size, seq_length


def pretrain(
    config: PretrainConfig,
    tokenized: Manifest,
    ctx: StepContext,
    name: str = "model",
    mlflow_uri: str | None = None,
    base: Manifest | None = None,
) -> StepOutput:
    """The step body; `base` (an import_model manifest) makes it continued pretraining."""
    import ray
    import torch
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from model.export import export_hf
    from model.presets import get_preset
    from model.samples import write_samples

    index = read_datasets(Path(tokenized.path))
    if base is not None:  # the base's shape, positions and vocabulary
        preset, vocab_size, seq_length = continued_model(config, base, index)
    else:
        vocab_size = int(index["vocab_size"])
        preset = get_preset(config.preset)
        seq_length = config.seq_length or preset.seq_length
        preset = dataclasses.replace(preset, seq_length=seq_length)
    lr = peak_lr(config, preset.hidden_size, continued=base is not None)
    warmup = config.warmup_steps if config.warmup_steps is not None else config.steps // 10
    entropy = unigram_entropy([e["prefix"] for e in index["train"]], vocab_size)
    log.info("corpus unigram entropy: %.3f nats/token", entropy)

    if not ray.is_initialized():  # a Ray job joins its cluster; alone, a local Ray starts
        ray.init(address=os.environ.get("RAY_ADDRESS") or None)
    use_gpu = config.use_gpu if config.use_gpu is not None else _cluster_has_gpu()
    bf16 = config.precision == "bf16" or (config.precision == "auto" and use_gpu)
    peak = 0.0
    if use_gpu and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_FLOPS.items() if k in gpu), 0.0)
    run_id = _mlflow_run(mlflow_uri, ctx, name, tokenized, base)
    if run_id:
        import mlflow

        mlflow.set_tracking_uri(mlflow_uri)
        with mlflow.start_run(run_id=run_id):
            # Values derived from the config (its own fields are logged with the manifest).
            derived = {
                "parameters": preset.parameters(vocab_size),
                "vocab_size": vocab_size,
                "peak_lr": lr,
                "warmup_steps": warmup,
                "bf16": bf16,
                "seq_length": seq_length,
                "workers": config.workers,
            }
            mlflow.log_params({f"run.{k}": v for k, v in derived.items()})
            mlflow.log_metric("unigram_entropy", entropy)

    loop = {
        **config.model_dump(),
        "lr": lr,
        "warmup_steps": warmup,
        "seq_length": seq_length,
        "vocab_size": vocab_size,
        "model_preset": dataclasses.asdict(preset),
        "init": None
        if base is None
        else {
            "weights": str(Path(base.path) / "megatron" / "model.pt"),
            # On object storage each worker reads the published import itself.
            "source": base.ref.path if is_uri(base.ref.path) else None,
        },
        "datasets": index,
        # On object storage each worker reads the published tokenize output itself.
        "datasets_source": tokenized.ref.path if is_uri(tokenized.ref.path) else None,
        "dataset_cache": str(ctx.work / "dataset-cache"),
        "threads": config.threads_per_worker,
        "bf16": bf16,
        "mlflow_uri": mlflow_uri if run_id else None,
        "mlflow_run_id": run_id,
        "run_name": f"pretrain-{ctx.key}",
        "flops_per_token": preset.flops_per_token(seq_length, vocab_size),
        "peak_flops": peak * config.workers,
    }
    resources = {"CPU": config.threads_per_worker}
    storage_path, storage_filesystem = ctx.durable("ray-train")  # S3 with an s3:// data root
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop,
        scaling_config=ScalingConfig(
            num_workers=config.workers,
            use_gpu=use_gpu,
            resources_per_worker=resources,
            placement_strategy=config.placement,
            label_selector=config.worker_labels or None,
        ),
        run_config=RunConfig(
            name=f"pretrain-{ctx.key}",
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            # A dead worker restarts the group from the last checkpoint.
            failure_config=FailureConfig(max_failures=3),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as error:  # Ray wraps a worker's error; say what failed, keep the state
        if run_id:
            from mlflow.tracking import MlflowClient

            MlflowClient(mlflow_uri).set_terminated(run_id, status="FAILED")
        raise OrchardError(
            f"pretraining failed: {error}. The last checkpoint is kept in {storage_path}: "
            "run the step again to resume"
        ) from None
    if result.checkpoint is None:
        raise OrchardError("pretraining finished without a checkpoint")
    with result.checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / STATE_FILE, weights_only=False)
    model_state = state["model"]  # the whole model, whatever the TP/PP layout
    (ctx.out / "megatron").mkdir()
    torch.save(model_state, ctx.out / "megatron" / "model.pt")
    export_hf(
        model_state,
        preset,
        vocab_size,
        Path(index["tokenizer"]),
        ctx.out / "hf",
        base_hf_dir=Path(base.path) / "hf" if base is not None else None,
    )
    curve = state["curve"]
    (ctx.out / "curve.json").write_text(json.dumps(curve, indent=1))
    last = curve[-1]
    evals = [p for p in curve if "val_loss" in p and p["step"] > 0]
    speeds = [p["tokens_per_s"] for p in curve if "tokens_per_s" in p]
    metrics = {
        "final_loss": last.get("loss", float("nan")),
        "val_loss": evals[-1]["val_loss"],
        "val_perplexity": evals[-1]["val_perplexity"],
        "unigram_entropy": entropy,
        "tokens_per_s": sorted(speeds)[len(speeds) // 2] if speeds else 0.0,
    }
    if curve[0]["step"] == 0:  # continued pretraining: the base model before any step
        metrics["init_val_loss"] = curve[0]["val_loss"]
    # What the export writes when it continues held-out documents (model/samples.py).
    metrics |= write_samples(
        ctx.out / "hf", [e["prefix"] for e in index["valid"]], ctx.out / "samples"
    )
    if "sample_rouge1" in metrics:
        log.info(
            "held-out samples: ROUGE-1 %.3f, on-topic ratio %.2f, distinct-2 %.2f "
            "(samples/samples.md)",
            metrics["sample_rouge1"],
            metrics["sample_on_topic_ratio"],
            metrics["sample_distinct2"],
        )
    return StepOutput(
        counts={
            "steps": state["step"],
            "tokens": state["step"] * config.global_batch_size * seq_length,
            "parameters": preset.parameters(vocab_size),
        },
        metrics=metrics,
        artifacts=["hf", "samples"],
        mlflow_run_id=run_id,
        workers=state.get("workers", []),
        facts=base_facts(base) if base is not None else {},
    )


STEP = StepSpec("pretrain", PretrainConfig, default_name="model", doc=__doc__)


def run(
    config: PretrainConfig,
    inputs: list[Manifest],
    settings: Settings,
    name: str = STEP.default_name,
    force: bool = False,
) -> Manifest:
    """Pretrain on the tokenize manifest among `inputs`; with an import_model manifest
    among them too, continue pretraining that base model."""
    tokenized = [m for m in inputs if m.step == "tokenize"]
    bases = [m for m in inputs if m.step == "import_model"]
    if len(tokenized) != 1 or len(bases) > 1:
        raise OrchardError(
            "pretrain needs exactly one tokenize manifest among its --input, and at most one "
            f"import_model manifest to initialise from; got {', '.join(m.step for m in inputs)}"
        )
    base = bases[0] if bases else None
    return STEP.run(
        settings,
        config,
        lambda ctx: pretrain(config, tokenized[0], ctx, name, settings.mlflow_uri, base),
        inputs,
        name,
        force,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return STEP.main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
