"""Platform API throughput and latency, and the gateway's overhead over serving.

    .venv/bin/python bench/api.py [--requests 300] [--streams 24] [--max-tokens 16]
                                  [--model tiny|nano|smollm2-135m]

Starts `orchard up ray mlflow serve api` on free loopback ports in a temporary home (the
product's own processes: uvicorn for the API, Ray Serve with a tiny random chat model
registered as `champion`), with the rate limits raised so they do not throttle the
benchmark (`--model`: the `nano` shape or SmolLM2-135M-Instruct instead, built as
`bench/serve.py` builds them, served on the engine serving's rule picks: vLLM for both).
Then, over real HTTP:
1. listing chats (`GET /api/v1/chats`: token check, session lookup, query) at 1 and 8
   concurrent clients: requests/s and p50/p99 latency, beside `GET /healthz` (no auth, no
   database) as the floor;
2. a streamed chat completion through the gateway (`POST /v1/chat/completions` with an
   API key: auth, rate limit, credit reservation, relay, settlement) versus the same
   request sent to serving directly: time to first token and to the end, p50/p99, and
   the overhead ratio, at 1 and 4 concurrent clients, the three targets taken in turn in
   3 rounds (a drifting load weighs on each alike); and through a bare relay
   (`bare_relay.py`: the same uvicorn + httpx hop, nothing else), the floor under the
   gateway's overhead.
One run; prints figures, never fails on time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import httpx  # noqa: E402

from orchard.settings import Settings  # noqa: E402
from testkit.stack import free_port, orchard, stack_env, wait_champion  # noqa: E402

UNTHROTTLED = "1000000/minute"
ROUNDS = 3  # the streams of each level, in rounds that take gateway, relay and serving in turn


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def hammer(url: str, headers: dict, clients: int, total: int) -> dict:
    latencies: list[float] = []
    per_client = max(1, total // clients)
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:

        async def loop() -> None:
            for _ in range(per_client):
                started = time.perf_counter()
                response = await http.get(url)
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text

        await http.get(url)  # warm the connection pool
        started = time.perf_counter()
        await asyncio.gather(*[loop() for _ in range(clients)])
        wall = time.perf_counter() - started
    return {
        "rps": len(latencies) / wall,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
    }


def _has_content(line: str) -> bool:
    if not line.startswith("data: ") or line == "data: [DONE]":
        return False
    choices = json.loads(line[len("data: ") :]).get("choices") or []
    return any((c.get("delta") or {}).get("content") for c in choices)


async def streams(base: str, key: str, clients: int, total: int, max_tokens: int) -> dict:
    """Time to first token and to the end of `total` streams from `clients` clients: lists of
    seconds (`firsts`, `ends`)."""
    body = {
        "model": "champion",
        "messages": [{"role": "user", "content": "Hello! Tell me about apples."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    firsts: list[float] = []
    ends: list[float] = []
    per_client = max(1, total // clients)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(headers=headers, timeout=300) as http:

        async def one() -> None:
            started = time.perf_counter()
            first = None
            async with http.stream("POST", f"{base}/v1/chat/completions", json=body) as r:
                assert r.status_code == 200, await r.aread()
                async for line in r.aiter_lines():
                    if first is None and _has_content(line):
                        first = time.perf_counter() - started
            ends.append(time.perf_counter() - started)
            firsts.append(first if first is not None else ends[-1])

        async def loop() -> None:
            for _ in range(per_client):
                await one()

        await one()  # warm up
        firsts.clear()
        ends.clear()
        await asyncio.gather(*[loop() for _ in range(clients)])
    return {"firsts": firsts, "ends": ends}


def interleaved(targets: list[tuple[str, str]], clients: int, total: int, max_tokens: int):
    """`total` streams to each target, in `ROUNDS` rounds that take the targets in turn, so
    that a machine whose load drifts during the run weighs on every target alike; then
    p50/p99 of each target's time to first token and to the end."""
    runs = [{"firsts": [], "ends": []} for _ in targets]
    for _ in range(ROUNDS):
        for run, (url, token) in zip(runs, targets, strict=True):
            got = asyncio.run(streams(url, token, clients, total // ROUNDS, max_tokens))
            run["firsts"] += got["firsts"]
            run["ends"] += got["ends"]
    return tuple(
        {
            "ttft_p50": percentile(run["firsts"], 0.5),
            "ttft_p99": percentile(run["firsts"], 0.99),
            "end_p50": percentile(run["ends"], 0.5),
            "end_p99": percentile(run["ends"], 0.99),
        }
        for run in runs
    )


_relay: list[subprocess.Popen] = []


def start_relay(upstream: str) -> str:
    """`bare_relay.py` in front of serving, on a free loopback port; its URL."""
    port = free_port()
    script = Path(__file__).with_name("bare_relay.py")
    command = [sys.executable, str(script), "--port", str(port), "--upstream", upstream]
    _relay.append(subprocess.Popen(command, stdin=subprocess.DEVNULL))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/", timeout=2)  # 404: it listens
            return url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("the bare relay did not start")


def stop_relay() -> None:
    for process in _relay:
        process.terminate()
        process.wait(30)


def accounts(settings: Settings) -> tuple[dict, str]:
    """A user with credits, chats to list and an API key; returns (token headers, key)."""
    from platform_api.db import database_url
    from testkit.platform import Api, grant, new_key

    http = httpx.Client(base_url=f"{settings.api_url}/api/v1", timeout=60)
    api = Api(
        http=http, root=settings.api_url, settings=settings, database_url=database_url(settings)
    )
    user = api.user("bench")
    grant(api, user, 100_000_000)
    for i in range(20):  # something to list
        api.chat(user, title=f"chat {i}")
    key = new_key(api, user)
    http.close()
    return user.headers, key


def renice(settings: Settings, nice: int) -> None:
    """Every thread of the platform API's process at `nice` (setpriority is per thread)."""
    from orchard.stack.process import read_record

    record = read_record(settings.run_dir, "api")
    if record is None:
        raise SystemExit("the platform API is not running: nothing to renice")
    for task in Path(f"/proc/{record.pid}/task").iterdir():
        os.setpriority(os.PRIO_PROCESS, int(task.name), nice)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--streams", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument(
        "--model",
        choices=("tiny", "nano", "smollm2-135m"),
        default="tiny",
        help="the served champion: serving's tiny random test model (hand-written engine, "
        "the default), or bench/serve.py's nano / SmolLM2-135M (vLLM)",
    )
    parser.add_argument(
        "--api-nice",
        type=int,
        default=None,
        help="diagnosis: run the platform API's threads at this nice value (-20..19; below 0 "
        "needs root), to tell the gateway's own cost from its waiting for a core that it "
        "shares with the engine on one machine",
    )
    args = parser.parse_args()

    from bench.serve import MODELS  # its model cache lives in the default temp dir
    from orchard.registry import register_hf_model
    from serving.tiny import build_tiny_chat_model

    load_start = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="orchard-bench-api-"))
    os.environ["TMPDIR"] = tempfile.tempdir = str(root)
    env = stack_env(root / "home")
    for scope in ("USER", "API_KEY", "IP", "AUTH_IP"):
        env[f"ORCHARD_RATE_LIMIT_{scope}"] = UNTHROTTLED
    settings = Settings(
        **{
            k.removeprefix("ORCHARD_").lower(): v
            for k, v in env.items()
            if k.startswith("ORCHARD_")
        }
    )
    if args.model == "tiny":
        model_dir = build_tiny_chat_model(root / "model", max_context=512)
    else:
        model_dir = MODELS[args.model]()
    try:
        result = orchard(env, "up", "ray", "mlflow", "serve", "api")
        if result.returncode != 0:
            raise SystemExit(f"orchard up failed:\n{result.stdout}\n{result.stderr}")
        if args.api_nice is not None:
            renice(settings, args.api_nice)
        register_hf_model(
            model_dir, tracking_uri=settings.mlflow_uri, name=settings.model_name, alias="champion"
        )
        wait_champion(settings.serving_base_url)
        headers, key = accounts(settings)
        listing = {}
        for clients in (1, 8):
            listing[clients] = (
                asyncio.run(
                    hammer(f"{settings.api_url}/api/v1/chats", headers, clients, args.requests)
                ),
                asyncio.run(hammer(f"{settings.api_url}/healthz", {}, clients, args.requests)),
            )
        relay_url = start_relay(settings.serving_base_url)
        targets = [
            (settings.api_url, key),
            (relay_url, "unused"),
            (settings.serving_base_url, "unused"),
        ]
        streaming = {
            clients: interleaved(targets, clients, args.streams, args.max_tokens)
            for clients in (1, 4)
        }
    finally:
        stop_relay()
        orchard(env, "down")
        shutil.rmtree(root, ignore_errors=True)

    print(
        f"platform API (uvicorn, SQLite) and Ray Serve on loopback, model {args.model}; "
        f"{args.requests} listings, {args.streams} streams of {args.max_tokens} tokens per level; "
        f"load average (1 min) {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
        + (f"; platform API at nice {args.api_nice}" if args.api_nice is not None else "")
    )
    print(
        f"{'clients':>7} | {'GET /chats req/s':>16} {'p50/p99 ms':>13} | "
        f"{'GET /healthz req/s':>18} {'p50/p99 ms':>13} | {'ratio':>6}"
    )
    for clients, (chats, health) in listing.items():
        chats_ms = f"{chats['p50'] * 1e3:.1f}/{chats['p99'] * 1e3:.1f}"
        health_ms = f"{health['p50'] * 1e3:.1f}/{health['p99'] * 1e3:.1f}"
        print(
            f"{clients:>7} | {chats['rps']:>16.0f} {chats_ms:>13} | "
            f"{health['rps']:>18.0f} {health_ms:>13} | {chats['rps'] / health['rps']:>5.2f}x"
        )
    print(
        f"{'clients':>7} | {'gateway TTFT p50/p99 ms':>24} {'end p50/p99 ms':>16} | "
        f"{'serving TTFT p50/p99 ms':>24} {'end p50/p99 ms':>16} | {'TTFT overhead':>13}"
    )
    for clients, (gateway, _relay, direct) in streaming.items():
        print(
            f"{clients:>7} | {gateway['ttft_p50'] * 1e3:>11.1f}/{gateway['ttft_p99'] * 1e3:<12.1f}"
            f"{gateway['end_p50'] * 1e3:>8.1f}/{gateway['end_p99'] * 1e3:<7.1f} | "
            f"{direct['ttft_p50'] * 1e3:>11.1f}/{direct['ttft_p99'] * 1e3:<12.1f}"
            f"{direct['end_p50'] * 1e3:>8.1f}/{direct['end_p99'] * 1e3:<7.1f} | "
            f"{gateway['ttft_p50'] / direct['ttft_p50']:>12.2f}x"
        )
    print(
        f"{'clients':>7} | {'bare relay TTFT p50/p99 ms':>27} {'end p50/p99 ms':>16} | {'ratio':>6}"
    )
    for clients, (_gateway, relay, direct) in streaming.items():
        print(
            f"{clients:>7} | {relay['ttft_p50'] * 1e3:>14.1f}/{relay['ttft_p99'] * 1e3:<12.1f}"
            f"{relay['end_p50'] * 1e3:>8.1f}/{relay['end_p99'] * 1e3:<7.1f} | "
            f"{relay['ttft_p50'] / direct['ttft_p50']:>5.2f}x"
        )
    print(
        "gateway: API key check, rate limits, credit reservation, relay, settlement; "
        "bare relay: the same uvicorn + httpx hop with nothing else (bench/bare_relay.py), "
        "the floor under the gateway's overhead; serving: the same request to Ray Serve "
        "directly."
    )


if __name__ == "__main__":
    main()
