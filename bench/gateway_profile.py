"""Where the gateway's time goes: milliseconds per stage of a streamed `POST
/v1/chat/completions`, from the request's arrival to serving's first token relayed.

    .venv/bin/python bench/gateway_profile.py [--requests 200] [--postgres]

No stack: the platform API (uvicorn in this process, SQLite in a temporary home, or with
`--postgres` a throwaway PostgreSQL server as the tests start one) in front of the test
suite's stand-in serving app, which answers at once, so what is measured is the gateway
alone. Each stage is timed by wrapping the function that does it (the same objects the
route calls); "arrival → sent to serving" is the whole of the gateway's work before
serving sees the request, and "rest" what no stage accounts for (FastAPI's dependency
resolution, thread-pool hops, middleware). Sequential requests from `--clients` client
threads (the clients share this process with the server: take the figures at 1 client as
the gateway's own, those at more as a sign of contention). Medians.
Prints figures, never fails on time.
"""

from __future__ import annotations

import argparse
import contextvars
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import aiohttp  # noqa: E402
import httpx  # noqa: E402

from orchard.settings import Settings  # noqa: E402

SPANS: dict[str, list[float]] = defaultdict(list)
UNTHROTTLED = "1000000/minute"
# Stages timed inside another stage (not added up twice).
NESTED = {"token limits (inside reserve)"}
ADMISSION = "admission (one call: loop or thread)"
IN_ADMISSION = {  # the rate limits only in part (the IP's is counted outside): 0.05 ms
    "API key lookup",
    "rate limit",
    "request JSON parse + check",
    "model route (access rules, A/B)",
    "monthly plan grant check",
    "credit reserve",
}


def timed(name: str, function):
    """`function`, its time in each call added to SPANS[name]."""

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SPANS[name].append(time.perf_counter() - started)

    wrapper.__wrapped__ = function
    return wrapper


def instrument(stages: dict[str, tuple[object, str]]) -> None:
    for name, (owner, attribute) in stages.items():
        if hasattr(owner, attribute):
            setattr(owner, attribute, timed(name, getattr(owner, attribute)))


ARRIVED: contextvars.ContextVar[float] = contextvars.ContextVar("arrived")


class Arrival:
    """Outermost ASGI wrapper: when each gateway request arrived (in its own context)."""

    def __init__(self, app) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/chat/completions":
            ARRIVED.set(time.perf_counter())
        await self.app(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--clients", type=int, default=1, help="concurrent clients (threads)")
    args = parser.parse_args()

    import platform_api.deps as deps
    import platform_api.metering as metering
    import platform_api.routes.gateway as gateway
    from platform_api.app import create_app
    from platform_api.ratelimit import RateLimiter
    from testkit.platform import FAST_ARGON2, Api, LiveServer, grant, new_key
    from testkit.serving_stub import ServingStub

    instrument(
        {
            "API key lookup": (deps, "_api_key_principal"),
            "rate limit": (RateLimiter, "hit"),
            "request JSON parse + check": (gateway, "_read"),
            "model route (access rules, A/B)": (gateway, "gateway_route"),
            "monthly plan grant check": (gateway, "grant_due"),
            "token limits (inside reserve)": (metering, "check_token_limits"),
            "credit reserve": (gateway, "reserve"),
            "settlement": (gateway, "settle"),
        }
    )
    # Newer code may name its stages differently: time them too when they exist.
    instrument(
        {
            ADMISSION: (gateway, "admit"),
        }
    )

    root = Path(tempfile.mkdtemp(prefix="orchard-gateway-profile-"))
    postgres = None
    if args.postgres:
        from testkit.postgres import start_postgres

        postgres = start_postgres()
        with postgres.connect() as connection:
            connection.execute("CREATE DATABASE profile")
    stub = ServingStub()
    stub.server.handle_error = lambda *_: None  # the platform's pooled connections closing
    limits = {f"rate_limit_{s}": UNTHROTTLED for s in ("user", "api_key", "ip", "auth_ip")}
    settings = Settings(
        home=root / "home",
        database_url=postgres.url("profile") if postgres else None,
        serving_url=stub.url,
        starter_plan_credits=0,
        **limits,
    )
    app = create_app(settings, FAST_ARGON2)
    arrival = Arrival(app)
    server = LiveServer(arrival)
    server.app = app
    server.start()
    sent: list[float] = []
    firsts: list[float] = []
    original_send = aiohttp.ClientSession._request  # the gateway's client to serving

    async def send(self, method, url, *args, **kwargs):
        arrived = ARRIVED.get(None)
        if str(url).endswith("/v1/chat/completions") and arrived is not None:
            sent.append(time.perf_counter() - arrived)
        return await original_send(self, method, url, *args, **kwargs)

    aiohttp.ClientSession._request = send
    try:
        from platform_api.db import database_url

        http = httpx.Client(base_url=f"{server.url}/api/v1", timeout=60)
        url = database_url(settings)
        api = Api(http=http, root=server.url, settings=settings, database_url=url)
        user = api.user("profile")
        grant(api, user, 100_000_000)
        key = new_key(api, user)
        body = {
            "model": "champion",
            "messages": [{"role": "user", "content": "Hello! Tell me about apples."}],
            "max_tokens": 16,
            "stream": True,
        }
        headers = {"Authorization": f"Bearer {key}"}
        client = httpx.Client(headers=headers, timeout=60)

        def first_token(url: str, client: httpx.Client = client) -> float:
            started = time.perf_counter()
            with client.stream("POST", url, json=body) as response:
                assert response.status_code == 200, response.read()
                first = None
                for line in response.iter_lines():
                    if first is None and '"content": "' in line and '"content": ""' not in line:
                        first = time.perf_counter() - started
            return first

        for _ in range(10):  # warm up both paths
            first_token(f"{server.url}/v1/chat/completions")
        SPANS.clear()
        sent.clear()

        def one_client() -> None:
            with httpx.Client(headers=headers, timeout=60) as own:
                for _ in range(args.requests // args.clients):
                    firsts.append(first_token(f"{server.url}/v1/chat/completions", own))

        threads = [threading.Thread(target=one_client) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        client.close()
        http.close()
    finally:
        aiohttp.ClientSession._request = original_send
        server.stop()
        stub.stop()
        if postgres:
            postgres.stop()

    backend = "PostgreSQL" if postgres else "SQLite"
    print(
        f"gateway stages, {args.requests} streamed requests from {args.clients} client(s), "
        f"{backend}; ms median"
    )
    accounted = 0.0
    nested = NESTED | (IN_ADMISSION if ADMISSION in SPANS else set())
    for name, values in SPANS.items():
        if name == "settlement":
            continue
        calls = len(values) / args.requests
        median = statistics.median(values) * 1e3 * calls  # per request
        if name not in nested:
            accounted += median
        print(f"  {name:<34} {median:7.2f}  ({calls:.0f} call(s) per request)")
    before = statistics.median(sent) * 1e3
    print(f"  {'rest (FastAPI, middleware, hops)':<34} {before - accounted:7.2f}")
    print(f"  {'arrival → sent to serving':<34} {before:7.2f}")
    if "settlement" in SPANS:
        settle = statistics.median(SPANS["settlement"]) * 1e3
        print(f"  {'settlement (after the last token)':<34} {settle:7.2f}")
    print(
        "TTFT through the gateway (the stand-in serving answers at once): "
        f"{statistics.median(firsts) * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
