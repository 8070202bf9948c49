"""Serving under 1, 8 and 32 concurrent streaming clients vs a sequential HF `generate` loop.

Starts `orchard up ray mlflow serve` on free loopback ports in a temporary home (the
product's own deployment: one ModelServer replica, its torch threads), registers a tiny
random chat model as `champion` with `register_hf_model`, and drives the OpenAI API with
the official `openai` SDK (AsyncOpenAI, streaming, usage in the final chunk). For each
concurrency it prints time-to-first-token p50/p95 and aggregate tokens/s; beside it, the
same model and prompts through a sequential `model.generate` loop in this process, with
the same number of torch threads and niceness, served one request at a time to the same
clients. One run; prints figures, never fails on time.

    .venv/bin/python bench/serve.py [--max-tokens 64] [--hidden 64 --layers 2]
"""

from __future__ import annotations

import os
import sys

# The repository root instead of bench/ on the path: a bench script named like a stdlib
# module (bench/tokenize.py) would otherwise shadow it for everything imported here.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import deque  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402

from orchard.settings import Settings  # noqa: E402
from testkit.stack import orchard, stack_env, wait_champion  # noqa: E402

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
CONCURRENCY = (1, 8, 32)
RAY_WORKER_NICENESS = 15  # Ray's default `worker_niceness`


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def stream_one(client, prompt: str, max_tokens: int) -> tuple[float, int]:
    started = time.perf_counter()
    ttft = None
    tokens = 0
    stream = await client.chat.completions.create(
        model="champion",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if ttft is None and chunk.choices and chunk.choices[0].delta.content:
            ttft = time.perf_counter() - started
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return ttft if ttft is not None else time.perf_counter() - started, tokens


async def level(base_url: str, clients: int, per_client: int, max_tokens: int) -> dict:
    import openai

    async def client_loop(client, offset: int) -> list[tuple[float, int]]:
        results = []
        for i in range(per_client):
            prompt = PROMPTS[(offset + i) % len(PROMPTS)]
            results.append(await stream_one(client, prompt, max_tokens))
        return results

    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=clients + 4), timeout=600)
    async with openai.AsyncOpenAI(
        base_url=f"{base_url}/v1", api_key="unused", http_client=http, max_retries=0
    ) as client:
        started = time.perf_counter()
        runs = await asyncio.gather(*[client_loop(client, c) for c in range(clients)])
        wall = time.perf_counter() - started
    results = [r for run in runs for r in run]
    ttfts = [t for t, _ in results]
    tokens = sum(n for _, n in results)
    return {
        "requests": len(results),
        "ttft_p50": percentile(ttfts, 0.5),
        "ttft_p95": percentile(ttfts, 0.95),
        "tokens": tokens,
        "tokens_per_s": tokens / wall,
    }


def hf_measure(model_dir: Path, max_tokens: int, threads: int) -> dict[str, tuple[float, ...]]:
    """Each prompt through `generate` alone: (first-token seconds, total seconds, tokens)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    measured = {}
    for prompt in PROMPTS:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.inference_mode():
            started = time.perf_counter()
            model.generate(ids, max_new_tokens=1, do_sample=False, top_p=None)
            first = time.perf_counter() - started
            started = time.perf_counter()
            out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False, top_p=None)
            total = time.perf_counter() - started
        measured[prompt] = (first, total, out.shape[1] - ids.shape[1])
    return measured


def sequential_server(measured: dict, clients: int, per_client: int) -> dict:
    """The HF loop as a server: one request at a time, first come first served, with the
    same clients (each sends its next request when the previous answer ends)."""
    queue = deque((0.0, c, 0) for c in range(clients))  # (arrival, client, request number)
    now, ttfts, tokens = 0.0, [], 0
    while queue:
        arrival, client, number = queue.popleft()
        first, total, count = measured[PROMPTS[(client + number) % len(PROMPTS)]]
        start = max(now, arrival)
        ttfts.append(start - arrival + first)
        now = start + total
        tokens += count
        if number + 1 < per_client:
            queue.append((now, client, number + 1))
    return {
        "ttft_p50": percentile(ttfts, 0.5),
        "ttft_p95": percentile(ttfts, 0.95),
        "tokens_per_s": tokens / now,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args()

    from orchard.registry import register_hf_model
    from serving.config import local_serving_config
    from serving.tiny import build_tiny_chat_model

    root = Path(tempfile.mkdtemp(prefix="orchard-bench-serve-"))
    os.environ["TMPDIR"] = tempfile.tempdir = str(root)  # mlflow's temp dirs go here
    env = stack_env(root / "home")
    settings = Settings(
        **{
            k.removeprefix("ORCHARD_").lower(): v
            for k, v in env.items()
            if k.startswith("ORCHARD_")
        }
    )
    threads = local_serving_config(settings).torch_threads or 1
    model_dir = build_tiny_chat_model(
        root / "model",
        layers=args.layers,
        hidden=args.hidden,
        heads=max(4, args.hidden // 64),
        kv_heads=max(2, args.hidden // 128),
        max_context=1024,
    )
    try:
        result = orchard(env, "up", "ray", "mlflow", "serve")
        if result.returncode != 0:
            raise SystemExit(f"orchard up failed:\n{result.stdout}\n{result.stderr}")
        register_hf_model(
            model_dir, tracking_uri=settings.mlflow_uri, name=settings.model_name, alias="champion"
        )
        version = wait_champion(settings.serving_base_url)
        asyncio.run(level(settings.serving_base_url, 1, 2, args.max_tokens))  # warm up
        rows = []
        for clients in CONCURRENCY:
            per_client = max(2, 32 // clients)
            served = asyncio.run(
                level(settings.serving_base_url, clients, per_client, args.max_tokens)
            )
            rows.append((clients, served))
    finally:
        orchard(env, "down")
    # Ray runs its workers (the replicas) at niceness 15; so does the baseline, so that on a
    # shared machine both yield to other work alike.
    os.nice(max(0, RAY_WORKER_NICENESS - os.nice(0)))
    measured = hf_measure(model_dir, args.max_tokens, threads)
    shutil.rmtree(root, ignore_errors=True)
    baseline = {
        clients: sequential_server(measured, clients, max(2, 32 // clients)) for clients, _ in rows
    }
    print(
        f"model: tiny random Llama, {args.layers} layers, hidden {args.hidden} "
        f"(orchard-chat version {version}); {args.max_tokens} new tokens per request, "
        f"greedy; torch threads {threads} and niceness {RAY_WORKER_NICENESS} in the replica "
        "and in the HF loop"
    )
    header = (
        f"{'clients':>7} {'requests':>8} | {'serve TTFT p50/p95 ms':>22} {'tok/s':>7} | "
        f"{'HF loop TTFT p50/p95 ms':>24} {'tok/s':>7} | {'tok/s ratio':>11}"
    )
    print(header)
    print("-" * len(header))
    for clients, served in rows:
        hf = baseline[clients]
        print(
            f"{clients:>7} {served['requests']:>8} | "
            f"{served['ttft_p50'] * 1e3:>10.0f} /{served['ttft_p95'] * 1e3:>9.0f} "
            f"{served['tokens_per_s']:>8.0f} | "
            f"{hf['ttft_p50'] * 1e3:>11.0f} /{hf['ttft_p95'] * 1e3:>10.0f} "
            f"{hf['tokens_per_s']:>8.0f} | {served['tokens_per_s'] / hf['tokens_per_s']:>10.2f}x"
        )
    print(
        "serve: measured by the SDK client through HTTP, Serve and the engine's queue. HF loop: "
        "each prompt's generate() timed alone in this process, then served one at a time to "
        "the same clients (its TTFT includes waiting behind earlier requests)."
    )


if __name__ == "__main__":
    main()
