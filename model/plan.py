"""A pretraining planner: memory per GPU, fit, throughput, time and cost of a preset.

Memory per GPU, for bf16 mixed precision with Adam and Megatron's distributed optimizer
(Megatron-LM `docs/distrib_optimizer.md`; ZeRO stage 1, Rajbhandari et al. 2020):

- weights: 2 bytes (bf16) per parameter of the largest pipeline stage / TP;
- gradients: 4 bytes (fp32 main grads, where Megatron accumulates and reduces);
- optimizer: 12 bytes (fp32 master weights, Adam's m and v) sharded over the DP ranks,
  so 6 + 12/DP bytes per local parameter in all;
- activations (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
  Transformer Models", §4, with tensor and sequence parallelism, bf16): per layer and
  micro-batch `s·b·h·(34 + 5·a·s/h) / t` bytes without recompute, `34·s·b·h / t` with
  selective recompute (the attention scores and softmax are recomputed), `2·s·b·h / t`
  with full recompute (only each layer's input is kept). Under the 1F1B pipeline
  schedule the first stage holds `PP` micro-batches of its `L/PP` layers, i.e. `L`
  layers' worth whatever PP is (§4.2.3). The formula is the paper's, for a GPT block
  with a 4h GELU MLP; for Llama's SwiGLU and GQA it is an estimate of the same order.

It fits when the total is at most `usable` (90 %) of the GPU's memory: the rest is the
CUDA context, NCCL buffers, the logits of the loss and fragmentation.

Throughput: training FLOPs per token are `ModelPreset.flops_per_token` (6 × the
parameters that multiply + 12·L·h·s for attention, the PaLM convention); tokens/s =
MFU × peak bf16 FLOP/s × GPUs / FLOPs per token. MFU counts model FLOPs only, so the
recompute's extra work is inside the MFU you state.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from model.presets import PRESETS, ModelPreset
from orchard.errors import OrchardError


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gb: float
    peak_bf16_tflops: float  # dense, no sparsity


GPUS = {
    "h100": Gpu("H100 SXM 80 GB", 80.0, 989.0),
    "a100": Gpu("A100 SXM 80 GB", 80.0, 312.0),
}

# Public reference shapes to check the planner against published training reports.
REFERENCES: dict[str, ModelPreset] = {
    # Llama-2-7B (Touvron et al. 2023): 32 layers, 4096 wide, 32 heads (no GQA), 4k
    # context, 32k vocabulary; 184,320 A100-80GB GPU-hours for 2T tokens (Table 2).
    "llama2-7b": ModelPreset(
        name="llama2-7b",
        num_layers=32,
        hidden_size=4096,
        ffn_hidden_size=11008,
        num_attention_heads=32,
        num_query_groups=32,
        seq_length=4096,
    ),
}

SEED_PRESETS = ("small", "medium", "large")
RECOMPUTE = ("none", "selective", "full")
GB = 1e9


@dataclass(frozen=True)
class Plan:
    preset: ModelPreset
    gpu: Gpu
    gpus: int
    tokens: float
    mfu: float
    price: float
    vocab_size: int
    micro_batch: int
    usable: float
    parameters: int
    data_parallel: int
    stage_parameters: int
    weights_gb: float
    grads_gb: float
    optimizer_gb: float
    activations_gb: dict[str, float]
    recompute: str | None  # the cheapest recompute that fits, None when none does
    flops_per_token: float
    tokens_per_s: float

    @property
    def static_gb(self) -> float:
        return self.weights_gb + self.grads_gb + self.optimizer_gb

    def total_gb(self, recompute: str) -> float:
        return self.static_gb + self.activations_gb[recompute]

    @property
    def fits(self) -> bool:
        return self.recompute is not None

    @property
    def days(self) -> float:
        return self.tokens / self.tokens_per_s / 86_400

    @property
    def gpu_hours(self) -> float:
        return self.tokens / self.tokens_per_s / 3600 * self.gpus

    @property
    def dollars(self) -> float:
        return self.gpu_hours * self.price


def parse_count(text: str | float | int) -> float:
    """`1T`, `300B`, `2.5M`, `7e9` or a number -> the number."""
    if isinstance(text, int | float):
        return float(text)
    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([kKmMbBtT]?)\s*", text)
    if not match:
        raise OrchardError(f"{text!r} is not a count: write it like 1T, 300B or 2e12")
    scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[match.group(2).lower()]
    return float(match.group(1)) * scale


def find_preset(name: str) -> ModelPreset:
    found = PRESETS.get(name) or REFERENCES.get(name)
    if found is None:
        known = ", ".join([*PRESETS, *REFERENCES])
        raise OrchardError(f"unknown model preset {name!r}: choose one of {known}")
    return found


def stage_parameters(preset: ModelPreset, vocab_size: int) -> int:
    """Parameters on one GPU of the largest pipeline stage (the first holds the
    embedding, the last the output layer; with PP=1 one stage holds both), split by TP."""
    h, kv = preset.hidden_size, preset.num_query_groups * preset.head_dim
    layer = 2 * h * h + 2 * h * kv + 3 * h * preset.ffn_hidden_size + 2 * h
    pp, tp = preset.pipeline_parallel, preset.tensor_parallel
    vocab = vocab_size * h * (2 if pp == 1 else 1)
    return (preset.num_layers // pp * layer + vocab) // tp + h


def activation_bytes(preset: ModelPreset, micro_batch: int, recompute: str) -> float:
    """Korthikanti et al. 2022 (§4, sequence parallelism on): bytes of activations the
    first pipeline stage keeps under 1F1B, L layers' worth."""
    s, b, h = preset.seq_length, micro_batch, preset.hidden_size
    a, t, layers = preset.num_attention_heads, preset.tensor_parallel, preset.num_layers
    per_layer = {
        "none": s * b * h * (34 + 5 * a * s / h) / t,
        "selective": 34 * s * b * h / t,
        "full": 2 * s * b * h / t,
    }[recompute]
    return per_layer * layers


def plan(
    preset: ModelPreset | str,
    *,
    tokens: float | str,
    gpus: int,
    mfu: float = 0.4,
    price: float = 2.5,
    gpu: str = "h100",
    vocab_size: int = 32_000,
    micro_batch: int = 1,
    seq_length: int | None = None,
    usable: float = 0.9,
) -> Plan:
    """The plan of training `preset` on `tokens` tokens with `gpus` GPUs of kind `gpu`."""
    preset = find_preset(preset) if isinstance(preset, str) else preset
    if seq_length:
        preset = dataclasses.replace(preset, seq_length=seq_length)
    if gpu not in GPUS:
        raise OrchardError(f"unknown GPU {gpu!r}: choose one of {', '.join(GPUS)}")
    if not 0 < mfu <= 1:
        raise OrchardError(f"MFU {mfu} must be in (0, 1]: e.g. 0.4 for 40 %")
    if gpus < 1 or gpus % preset.model_parallel_size:
        raise OrchardError(
            f"{gpus} GPUs do not split into whole replicas of {preset.name} "
            f"(TP {preset.tensor_parallel} × PP {preset.pipeline_parallel} = "
            f"{preset.model_parallel_size} GPUs each): use a multiple of "
            f"{preset.model_parallel_size}"
        )
    card = GPUS[gpu]
    dp = gpus // preset.model_parallel_size
    local = stage_parameters(preset, vocab_size)
    activations = {r: activation_bytes(preset, micro_batch, r) / GB for r in RECOMPUTE}
    weights, grads, optimizer = 2 * local / GB, 4 * local / GB, 12 * local / dp / GB
    limit = usable * card.memory_gb
    fitting = [r for r in RECOMPUTE if weights + grads + optimizer + activations[r] <= limit]
    flops = preset.flops_per_token(preset.seq_length, vocab_size)
    return Plan(
        preset=preset,
        gpu=card,
        gpus=gpus,
        tokens=parse_count(tokens),
        mfu=mfu,
        price=price,
        vocab_size=vocab_size,
        micro_batch=micro_batch,
        usable=usable,
        parameters=preset.parameters(vocab_size),
        data_parallel=dp,
        stage_parameters=local,
        weights_gb=weights,
        grads_gb=grads,
        optimizer_gb=optimizer,
        activations_gb=activations,
        recompute=fitting[0] if fitting else None,
        flops_per_token=flops,
        tokens_per_s=mfu * card.peak_bf16_tflops * 1e12 * gpus / flops,
    )


def human(count: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.3g}{suffix}"
    return f"{count:.3g}"


def describe(p: Plan) -> list[tuple[str, str]]:
    """The plan as (label, value) rows, what `orchard plan` prints."""
    pre = p.preset
    limit = p.usable * p.gpu.memory_gb
    rows = [
        ("parameters", f"{human(p.parameters)} (vocabulary {p.vocab_size:,})"),
        (
            "layout",
            f"TP {pre.tensor_parallel} × PP {pre.pipeline_parallel} × DP {p.data_parallel} "
            f"= {p.gpus} × {p.gpu.name}",
        ),
        ("parameters per GPU", f"{human(p.stage_parameters)} (largest pipeline stage)"),
        ("weights (bf16)", f"{p.weights_gb:.1f} GB"),
        ("gradients (fp32)", f"{p.grads_gb:.1f} GB"),
        ("optimizer (fp32, ÷ DP)", f"{p.optimizer_gb:.1f} GB"),
    ]
    for recompute in RECOMPUTE:
        total = p.total_gb(recompute)
        mark = "fits" if total <= limit else "does not fit"
        rows.append(
            (
                f"activations, {'no' if recompute == 'none' else recompute} recompute",
                f"{p.activations_gb[recompute]:.1f} GB → {total:.1f} GB/GPU, {mark}",
            )
        )
    verdict = (
        f"yes, with {'no' if p.recompute == 'none' else p.recompute} recompute "
        f"(≤ {limit:.0f} GB usable of {p.gpu.memory_gb:.0f})"
        if p.fits
        else f"NO: over {limit:.0f} GB usable even with full recompute; raise TP/PP"
    )
    rows += [
        ("fits", verdict),
        (
            "throughput",
            f"{p.tokens_per_s:,.0f} tokens/s at MFU {p.mfu:.0%} "
            f"({p.flops_per_token / 1e9:.1f} GFLOP/token, seq {pre.seq_length})",
        ),
        ("time", f"{p.days:,.1f} days for {human(p.tokens)} tokens"),
        ("GPU-hours", f"{p.gpu_hours:,.0f}"),
        ("cost", f"${p.dollars:,.0f} at ${p.price:g}/GPU-hour"),
    ]
    return rows
