"""`orchard plan`: memory per GPU, fit on 80 GB, throughput and cost, checked against a
published training report."""

from __future__ import annotations

import dataclasses
import os

import pytest

from model.plan import find_preset, parse_count, plan
from model.presets import get_preset
from orchard.errors import OrchardError
from tests.conftest import orchard

# Touvron et al. 2023, "Llama 2", Table 2: Llama-2-7B took 184,320 A100-80GB GPU-hours
# for 2T tokens. The MFU we assume for it, stated up front: 40 %, about Megatron's 42.1 %
# with full recompute on A100s (Korthikanti et al. 2022), not fitted to the answer.
LLAMA2_7B_GPU_HOURS = 184_320
ASSUMED_A100_MFU = 0.40


def test_the_7b_figures_agree_with_llama_2_within_15_percent():
    made = plan("llama2-7b", tokens="2T", gpus=2048, gpu="a100", mfu=ASSUMED_A100_MFU)
    assert made.parameters == pytest.approx(6.74e9, rel=0.005)  # Llama-2-7B's size
    assert made.gpu_hours == pytest.approx(LLAMA2_7B_GPU_HOURS, rel=0.15)
    # GPU-hours depend on the work, not on how many GPUs share it; days do.
    fewer = plan("llama2-7b", tokens="2T", gpus=1024, gpu="a100", mfu=ASSUMED_A100_MFU)
    assert fewer.gpu_hours == pytest.approx(made.gpu_hours)
    assert fewer.days == pytest.approx(2 * made.days)
    assert made.dollars == pytest.approx(made.gpu_hours * 2.5)


def test_memory_per_gpu_follows_the_distributed_optimizer_and_recompute():
    made = plan("llama2-7b", tokens="2T", gpus=64, gpu="a100")
    # No TP/PP: every GPU holds all 6.74B parameters, 2 + 4 bytes, and 12/64 bytes of Adam.
    assert made.weights_gb == pytest.approx(2 * 6.74, rel=0.01)
    assert made.grads_gb == pytest.approx(4 * 6.74, rel=0.01)
    assert made.optimizer_gb == pytest.approx(12 * 6.74 / 64, rel=0.01)
    acts = made.activations_gb
    # Korthikanti et al. 2022: full recompute keeps 2sbh per layer; selective 34sbh;
    # none adds the attention scores, 5as²b per layer (32 layers, s=h=4096, a=32).
    sbh_layers = 4096 * 4096 * 32 / 1e9
    assert acts["full"] == pytest.approx(2 * sbh_layers)
    assert acts["selective"] == pytest.approx(34 * sbh_layers)
    assert acts["none"] == pytest.approx((34 + 5 * 32) * sbh_layers)
    assert made.recompute == "selective"  # ~145 GB without recompute does not fit 80 GB


def test_the_seed_presets_fit_an_h100_at_their_layout_and_a_single_gpu_70b_does_not():
    plans = {name: plan(name, tokens="1T", gpus=128) for name in ("small", "medium", "large")}
    assert all(p.fits for p in plans.values())
    large = plans["large"]
    assert (large.data_parallel, large.recompute) == (4, "selective")
    assert large.total_gb("none") > 80 > large.total_gb("selective")
    # tokens/s at the stated MFU, and the time that gives for 1T tokens.
    assert large.tokens_per_s == pytest.approx(0.4 * 989e12 * 128 / large.flops_per_token)
    assert large.days == pytest.approx(1e12 / large.tokens_per_s / 86400)
    assert plans["small"].days < plans["medium"].days < large.days
    unsplit = dataclasses.replace(get_preset("large"), tensor_parallel=1, pipeline_parallel=1)
    alone = plan(unsplit, tokens="1T", gpus=8)
    assert not alone.fits and alone.weights_gb > 80


def test_bad_input_says_what_to_fix():
    with pytest.raises(OrchardError, match="use a multiple of 32"):
        plan("large", tokens="1T", gpus=100)
    with pytest.raises(OrchardError, match="not a count"):
        parse_count("lots")
    with pytest.raises(OrchardError, match="choose one of"):
        find_preset("huge")
    with pytest.raises(OrchardError, match="MFU"):
        plan("small", tokens="1T", gpus=8, mfu=40)
    assert parse_count("1.5T") == 1.5e12 and parse_count("300B") == 3e11


def test_the_command_prints_memory_fit_and_cost(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHARD_")}
    env["ORCHARD_HOME"] = str(tmp_path / "home")
    args = ["--preset", "large", "--tokens", "1T", "--gpus", "128", "--price", "2.5"]
    result = orchard(env, "plan", *args)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for label in ("weights (bf16)", "optimizer", "selective recompute", "tokens/s", "GPU-hours"):
        assert label in out
    assert "yes, with selective recompute" in out and "$" in out
    bad = orchard(env, "plan", "--preset", "large", "--gpus", "100")
    assert bad.returncode == 1 and bad.stderr.startswith("error: 100 GPUs")
