"""Pretraining step throughput: Orchard's Megatron-Core step vs a plain PyTorch step.

    .venv/bin/python bench/pretrain.py [--preset nano] [--steps 10] [--batch 8]

Orchard: `build_training` + `train_step` (Megatron GPTModel, Megatron DDP, Megatron's
Adam with clipping and its LR scheduler, the forward/backward schedule). Baseline: the
identical architecture as Hugging Face `LlamaForCausalLM` (from `llama_config`), torch
AdamW with the same hyper-parameters (no decay on norm weights, as Megatron), gradient
clipping, masked mean cross-entropy, on the same batch. The two alternate in rounds so
that a busy machine slows both alike; prints tokens/s of each and the ratio. With CUDA,
also bf16 (Megatron bf16 parameters with fp32 master weights vs torch autocast) and the
estimated MFU. Prints figures; never fails on time.
"""

from __future__ import annotations

import os
import sys

# Orchard's packages, when run as `python bench/<name>.py` from anywhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from model.distributed import init_single_process  # noqa: E402
from model.export import llama_config  # noqa: E402
from model.presets import ModelPreset, get_preset  # noqa: E402
from model.training import TrainConfig, build_training  # noqa: E402

# Dense bf16 tensor-core peaks (FLOP/s) by GPU name.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def make_batch(vocab: int, batch: int, seq: int, device: torch.device) -> dict:
    rows = torch.randint(0, vocab, (batch, seq + 1), generator=torch.Generator().manual_seed(0))
    return {
        "tokens": rows[:, :-1].to(device),
        "labels": rows[:, 1:].to(device),
        "loss_mask": torch.ones(batch, seq, device=device),
        "position_ids": torch.arange(seq, device=device).expand(batch, seq),
    }


def orchard_step(preset: ModelPreset, vocab: int, config: TrainConfig, bf16: bool):
    training = build_training(preset, vocab, config, bf16=bf16)
    return lambda batch: training.train_step(batch)["loss"]


def plain_step(preset: ModelPreset, vocab: int, config: TrainConfig, bf16: bool):
    from transformers import LlamaForCausalLM

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(config.seed)
    hf_config = llama_config(preset, vocab, None)
    hf_config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(hf_config).to(device).train()
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay}],
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        eps=config.adam_eps,
        weight_decay=0.0,
    )

    def step(batch: dict) -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=batch["tokens"], position_ids=batch["position_ids"]).logits
        losses = torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), batch["labels"].flatten(), reduction="none"
        )
        mask = batch["loss_mask"].flatten()
        loss = (losses * mask).sum() / mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
        optimizer.step()
        return loss.item()

    return step


def race(steps: dict, batch: dict, warmup: int, rounds: int, per_round: int) -> dict:
    """Seconds and last loss per contender, alternating `per_round` steps each."""
    spent = dict.fromkeys(steps, 0.0)
    loss = dict.fromkeys(steps, float("nan"))
    for step in steps.values():
        for _ in range(warmup):
            step(batch)
    for _ in range(rounds):
        for name, step in steps.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            started = time.perf_counter()
            for _ in range(per_round):
                loss[name] = step(batch)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            spent[name] += time.perf_counter() - started
    return {name: (spent[name], loss[name]) for name in steps}


def report(title: str, result: dict, tokens: int, flops_per_token: float, peak: float) -> None:
    print(title)
    rates = {}
    for name, (seconds, loss) in result.items():
        rates[name] = tokens / seconds
        line = f"  {name:<28} {rates[name]:10,.0f} tokens/s   loss after: {loss:.3f}"
        if peak:
            line += f"   MFU {rates[name] * flops_per_token / peak:6.1%}"
        print(line)
    orchard, plain = rates.values()
    print(f"  orchard / plain tokens/s:    {orchard / plain:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per contender")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    init_single_process()
    preset = get_preset(args.preset)
    seq = preset.seq_length
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = make_batch(args.vocab, args.batch, seq, device)
    total = args.warmup + args.steps + 1
    config = TrainConfig(warmup_steps=0, total_steps=total, micro_batch_size=args.batch)
    per_round = max(1, args.steps // args.rounds)
    tokens = args.rounds * per_round * args.batch * seq
    flops = preset.flops_per_token(seq, args.vocab)
    where = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {args.threads} threads"
    )
    print(
        f"preset {preset.name}: {preset.parameters(args.vocab) / 1e6:.1f}M parameters, vocab "
        f"{args.vocab}, batch {args.batch} x {seq} tokens, {args.rounds} x {per_round} timed "
        f"steps each, {where}; {flops / 1e6:.1f} MFLOP/token"
    )
    precisions = [False] + ([True] if device.type == "cuda" else [])
    for bf16 in precisions:
        peak = 0.0
        if device.type == "cuda":
            name = torch.cuda.get_device_name()
            peak = next((v for k, v in PEAK_FLOPS.items() if k in name), 0.0)
            peak = peak if bf16 else 0.0  # MFU is quoted against the bf16 peak
        steps = {
            "orchard (megatron-core)": orchard_step(preset, args.vocab, config, bf16),
            "plain pytorch (hf llama)": plain_step(preset, args.vocab, config, bf16),
        }
        result = race(steps, batch, args.warmup, args.rounds, per_round)
        report("bf16" if bf16 else "fp32", result, tokens, flops, peak)


if __name__ == "__main__":
    main()
