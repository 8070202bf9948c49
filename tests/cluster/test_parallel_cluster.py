"""Tensor and pipeline parallelism across hosts: one model split over hosts b and c.

The pretrain step runs three times on the same tokenized corpus (on S3) with the same
seed: `nano` in one process on host a (the head's CPU, which the split runs leave free),
as a Ray job of its own that trains beside the other two, and in a second Ray job, one
after the other, `nano-tp2` (each layer's matrices split over b and c, all-reduced over
gloo between them) and `nano-pp2` (layers 0-1 on one host, 2-3 on the other,
activations and gradients sent between them). All three train
the same model, so their loss curves agree, and their exports (merged from the shards,
model/shards.py) give the same logits.

Tolerances: the layouts do the same arithmetic in another order (TP sums each row-parallel
matmul in two halves and all-reduces them; PP runs the batch as two micro-batches and sums
their losses), so fp32 rounding (~1e-7 relative) is the only difference, and Adam's first
steps amplify it in the weights whose gradient is near zero. The losses may differ by
1e-4 (2e-5 of ln 384 = 5.95) and the logits by 1e-3. A real layout error is far larger:
a pipeline stage initialised from the wrong random draws moves the losses by ~3e-3 after
one step (tests/unit/test_model.py), and a mis-merged shard (fc1's gate and up halves
interleaved, a stage's layers renumbered) changes logits by 1e-2 to 1.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from orchard.steps import Manifest, localize

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

LOSS_TOLERANCE = 1e-4
LOGITS_TOLERANCE = 1e-3
BASE = {
    "seq_length": 64,
    "global_batch_size": 4,
    "steps": 4,
    "log_interval": 1,
    "eval_interval": 4,
    "eval_batches": 1,
    "checkpoint_interval": 4,
    "threads_per_worker": 1,  # each test host has one CPU
}
ACROSS_B_AND_C = {
    "workers": 2,
    "placement": "STRICT_SPREAD",
    "worker_labels": {"orchard-host": "in(b,c)"},
}
RUNS = {
    "single": BASE | {"preset": "nano", "workers": 1, "worker_labels": {"orchard-host": "a"}},
    "tp2": BASE | {"preset": "nano-tp2"} | ACROSS_B_AND_C,
    "pp2": BASE | {"preset": "nano-pp2"} | ACROSS_B_AND_C,
}


def test_tp2_and_pp2_across_hosts_train_the_single_process_model(cluster_pretraining, tmp_path):
    from transformers import AutoModelForCausalLM

    setup = cluster_pretraining
    store = setup.data.store
    beside = setup.with_mlflow(tmp_path / "mlruns-single")
    with ThreadPoolExecutor(1) as pool:
        single = pool.submit(beside.submit, RUNS["single"], "single")
        # TP then PP, in one Ray job (its driver starts once), while single trains on a.
        split, split_log = setup.submit_together({name: RUNS[name] for name in ("tp2", "pp2")})
        location, single_log = single.result()
    assert location, f"single:\n{single_log[-6000:]}"
    locations = split | {"single": location}
    outputs: dict[str, Path] = {}
    workers: dict[str, list[dict]] = {}
    for name in RUNS:
        assert name in locations, f"{name}:\n{split_log[-6000:]}"
        done = Manifest.read(locations[name], store)
        workers[name] = done.workers
        outputs[name] = Path(localize(done, store).path)

    # The split runs spanned both worker hosts; the single one ran in one process on a.
    assert [w["hostname"] for w in workers["single"]] == ["host-a"]
    for name in ("tp2", "pp2"):
        assert sorted(w["hostname"] for w in workers[name]) == ["host-b", "host-c"], name

    curves = {
        name: [p["loss"] for p in json.loads((out / "curve.json").read_text()) if "loss" in p]
        for name, out in outputs.items()
    }
    print({name: [round(x, 6) for x in losses] for name, losses in curves.items()})
    assert len(curves["single"]) == BASE["steps"]
    assert curves["single"][-1] < curves["single"][0]
    for name in ("tp2", "pp2"):
        assert curves[name] == pytest.approx(curves["single"], abs=LOSS_TOLERANCE), name

    # The exported Hugging Face models are the same model, whichever layout trained it.
    models = {
        name: AutoModelForCausalLM.from_pretrained(out / "hf", dtype=torch.float32).eval()
        for name, out in outputs.items()
    }
    vocab = models["single"].config.vocab_size
    seeded = torch.Generator().manual_seed(0)
    tokens = torch.randint(vocab, (2, BASE["seq_length"]), generator=seeded)
    with torch.no_grad():
        logits = {name: model(tokens).logits for name, model in models.items()}
    for name in ("tp2", "pp2"):
        diff = (logits[name] - logits["single"]).abs().max().item()
        print(f"{name}: max |logits - single's| = {diff:.2e}")
        assert diff < LOGITS_TOLERANCE, name
