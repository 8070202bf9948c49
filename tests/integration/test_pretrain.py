"""The pretrain step: Megatron on Ray Train, resumable after a kill, exported to HF.

The slow tests run the step's real command line against the stack's Ray head and MLflow,
as a Ray job's driver would, on a tiny tokenized corpus made by the real tokenizer and
tokenize steps."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from orchard.errors import OrchardError
from orchard.steps import run_step
from ray_jobs.pretrain import PretrainConfig, read_datasets, unigram_entropy
from ray_jobs.tokenize import TokenizeConfig, tokenize
from ray_jobs.tokenizer import TokenizerConfig, train_tokenizer
from testkit.corpus import corpus_step
from tests.conftest import REPO

# A few seconds of training a tiny nano: short sequences, small batches, frequent
# checkpoints so a kill lands between two of them.
SMALL = {
    "preset": "nano",
    "seq_length": 64,
    "global_batch_size": 4,
    "log_interval": 1,
    "eval_interval": 5,
    "eval_batches": 2,
    "threads_per_worker": 1,
}


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    root = tmp_path_factory.mktemp("model-data")
    corpus = corpus_step(root, documents=120)
    tok_config = TokenizerConfig(vocab_size=512)
    tok = run_step(
        step="tokenizer",
        name="bpe",
        config=tok_config,
        data_root=root,
        inputs=[corpus],
        body=lambda ctx: train_tokenizer(tok_config, Path(corpus.path), ctx),
    )
    config = TokenizeConfig(executor="local")
    return run_step(
        step="tokenize",
        name="corpus",
        config=config,
        data_root=root,
        inputs=[tok, corpus],
        body=lambda ctx: tokenize(config, Path(tok.path) / "tokenizer", Path(corpus.path), ctx),
    )


def test_a_batch_that_does_not_split_over_the_workers_is_refused():
    with pytest.raises(ValidationError, match="multiple of workers"):
        PretrainConfig(global_batch_size=6, workers=4)


def test_a_split_preset_needs_a_multiple_of_its_ranks_as_workers():
    with pytest.raises(ValidationError, match="TP 1 × PP 2 = 2 workers: set workers to a mult"):
        PretrainConfig(preset="nano-pp2", workers=3, global_batch_size=6)
    assert PretrainConfig(preset="nano-tp2", workers=4).workers == 4


def test_where_the_workers_run_is_not_part_of_the_step_key():
    spread = PretrainConfig(
        workers=2, placement="STRICT_SPREAD", worker_labels={"orchard-host": "in(b,c)"}
    )
    assert spread.key_fields() == PretrainConfig().key_fields()
    with pytest.raises(ValidationError, match="placement"):
        PretrainConfig(placement="EVERYWHERE")


def test_an_input_that_is_not_a_tokenized_corpus_is_named(tmp_path):
    with pytest.raises(OrchardError, match="no datasets.json .*tokenize step"):
        read_datasets(tmp_path)


def test_unigram_entropy_is_that_of_the_token_counts(tokenized):
    index = read_datasets(Path(tokenized.path))
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    sequences = []
    for entry in index["train"]:
        dataset = IndexedDataset(entry["prefix"])
        sequences += [np.asarray(dataset[i]) for i in range(len(dataset))]
    tokens = np.concatenate(sequences)
    p = np.bincount(tokens) / len(tokens)
    p = p[p > 0]
    expected = float(-(p * np.log(p)).sum())
    got = unigram_entropy([e["prefix"] for e in index["train"]], index["vocab_size"])
    assert got == pytest.approx(expected, rel=1e-9)
    assert 0 < got < np.log(index["vocab_size"])


def _command(config: dict, tokenized, name: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ray_jobs.pretrain",
        "--config",
        json.dumps(config),
        "--input",
        str(Path(tokenized.path) / "manifest.json"),
        "--name",
        name,
    ]


def _driver_env(stack) -> dict[str, str]:
    from orchard.credentials import ray_auth_env

    settings = stack.settings()
    ray = {"RAY_ADDRESS": f"127.0.0.1:{settings.ray_port}", "PYTHONUNBUFFERED": "1"}
    return stack.env | ray_auth_env(settings) | ray


CONFIG = SMALL | {"steps": 10, "checkpoint_interval": 3}


def _run(command: list[str], env: dict[str, str], log: Path) -> str:
    """Run a driver to its end; its whole output is kept in `log` (shown on failure)."""
    with log.open("w") as out:
        try:
            done = subprocess.run(
                command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=800
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"the driver did not finish:\n{log.read_text()[-4000:]}")
    assert done.returncode == 0, log.read_text()[-4000:]
    return log.read_text()


@pytest.fixture(scope="module")
def straight(stack, tokenized, tmp_path_factory) -> Path:
    """An uninterrupted run: the reference curve, and an export to load."""
    log = tmp_path_factory.mktemp("logs") / "straight.log"
    _run(_command(CONFIG, tokenized, "straight"), _driver_env(stack), log)
    (out,) = (Path(stack.settings().data_dir) / "pretrain").glob("straight-*")
    return out


def _curve(stack, name: str) -> list[dict]:
    (out,) = (Path(stack.settings().data_dir) / "pretrain").glob(f"{name}-*")
    return json.loads((out / "curve.json").read_text())


@pytest.mark.slow
@pytest.mark.integration
def test_a_killed_run_resumes_with_the_same_data_and_loss_curve(
    stack, tokenized, straight, tmp_path
):
    config, env = CONFIG, _driver_env(stack)

    # The driver is killed -9 after step 7: the checkpoint of step 6 is the last one.
    killed = subprocess.Popen(
        _command(config, tokenized, "killed"),
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen = []
    for line in killed.stdout:
        seen.append(line)
        if '"step": 7,' in line:
            os.killpg(killed.pid, signal.SIGKILL)
            break
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL, "".join(seen[-40:])
    data = Path(stack.settings().data_dir) / "pretrain"
    assert not list(data.glob("killed-*/manifest.json")), "a killed run published an output"

    output = _run(_command(config, tokenized, "killed"), env, tmp_path / "resumed.log")
    # The last checkpoint Ray Train had registered when the driver died: step 6, or step 3
    # when the kill beat the registration of step 6's.
    assert re.search(r"resumed from the checkpoint of step [36]\b", output), output[-3000:]

    before = json.loads((straight / "curve.json").read_text())
    after = _curve(stack, "killed")
    assert [p["step"] for p in after] == list(range(1, 11))
    for a, b in zip(before, after, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-4)
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-6)
        if "val_loss" in a:
            assert b["val_loss"] == pytest.approx(a["val_loss"], abs=1e-4)
    assert after[-1]["loss"] < after[0]["loss"]

    # One MLflow run holds the whole curve, the resumed attempt's part included.
    from mlflow.tracking import MlflowClient

    (manifest,) = data.glob("killed-*/manifest.json")
    run_id = json.loads(manifest.read_text())["mlflow_run_id"]
    client = MlflowClient(stack.settings().mlflow_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    steps = {m.step for m in client.get_metric_history(run_id, "loss")}
    assert steps == set(range(1, 11))
    assert run.data.metrics["val_loss"] == pytest.approx(after[-1]["val_loss"])
    artifacts = {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    assert "checkpoints/step-000009" in artifacts


@pytest.mark.slow
@pytest.mark.integration
def test_the_export_loads_and_generates_with_transformers(tokenized, straight):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = straight
    model = AutoModelForCausalLM.from_pretrained(out / "hf")
    tokenizer = AutoTokenizer.from_pretrained(out / "hf")
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == read_datasets(Path(tokenized.path))["vocab_size"]
    inputs = tokenizer("In the morning, the", return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 8
    text = tokenizer.decode(generated[0][inputs["input_ids"].shape[1] :])
    assert text.strip()
    # The Megatron weights beside it are the same model.
    state = torch.load(out / "megatron" / "model.pt", weights_only=False)
    assert any(key.endswith("linear_qkv.weight") for key in state)


@pytest.mark.slow
@pytest.mark.integration
def test_the_export_continues_held_out_documents_into_samples_to_read(stack, straight):
    """samples.md shows each held-out prompt, what the model wrote and how the document
    went on; the figures are in the manifest and the MLflow run."""
    from mlflow.tracking import MlflowClient

    report = json.loads((straight / "samples" / "samples.json").read_text())
    samples, metrics = report["samples"], report["metrics"]
    assert len(samples) >= 2
    for sample in samples:
        assert sample["prompt"] and sample["reference"] and sample["continuation"].strip()
        assert sample["continuation"] != sample["reference"]
    text = (straight / "samples" / "samples.md").read_text()
    assert text.count("The document went on:") == len(samples)
    assert samples[0]["prompt"] in text and samples[0]["continuation"] in text
    assert 0 <= metrics["sample_rouge1"] <= 1 and 0 < metrics["sample_distinct2"] <= 1

    manifest = json.loads((straight / "manifest.json").read_text())
    assert manifest["metrics"]["sample_rouge1"] == pytest.approx(metrics["sample_rouge1"])
    client = MlflowClient(stack.settings().mlflow_uri)
    logged = {a.path for a in client.list_artifacts(manifest["mlflow_run_id"], "samples")}
    assert {"samples/samples.md", "samples/samples.json"} <= logged
