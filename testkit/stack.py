"""The local stack for a test or a benchmark: free loopback ports, an environment for the
`orchard` CLI with a private home, running the CLI as a user would, waiting for serving."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ORCHARD_BIN = str(Path(sys.executable).parent / "orchard")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_block(size: int, start: int = 30000, stop: int = 60000) -> int:
    """The first port of `size` consecutive free loopback ports."""
    base = start + (os.getpid() * 97) % 1000 * 20
    while base + size < stop:
        taken = False
        for port in range(base, base + size):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    taken = True
                    break
        if not taken:
            return base
        base += size
    raise RuntimeError("no block of free ports")


def stack_env(home: Path) -> dict[str, str]:
    """An environment for the `orchard` CLI: a private home and free ports for everything."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHARD_")}
    # One stack serves every stack test of a run (serving swapped per module, Ray jobs,
    # embedding and model replicas): Ray needs a port per worker process it starts.
    worker_ports = 64
    base = free_port_block(10 + worker_ports)
    site = home.parent / f"{home.name}-site"
    if not (site / "index.html").exists():
        from testkit.corpus import planted_corpus, write_site

        write_site(site, planted_corpus())
    ports = {
        "ORCHARD_HOME": str(home),
        "ORCHARD_SITE_DIR": str(site),
        "ORCHARD_RAY_INTERNAL_PORT_BASE": str(base),
        "ORCHARD_RAY_WORKER_PORTS": str(worker_ports),
        "ORCHARD_PROMETHEUS_SCRAPE_INTERVAL_S": "5",
    }
    for name in (
        "API_PORT",
        "SITE_PORT",
        "MLFLOW_PORT",
        "AIRFLOW_PORT",
        "AIRFLOW_WORKER_LOG_PORT",
        "AIRFLOW_TRIGGER_LOG_PORT",
        "AIRFLOW_SCHEDULER_HEALTH_PORT",
        "RAY_PORT",
        "RAY_DASHBOARD_PORT",
        "RAY_CLIENT_PORT",
        "SERVE_PORT",
        "PROMETHEUS_PORT",
        "OTLP_PORT",
    ):
        port = free_port()
        while base <= port < base + 10 + worker_ports or str(port) in ports.values():
            port = free_port()
        ports[f"ORCHARD_{name}"] = str(port)
    env.update(ports)
    return env


def orchard(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real `orchard` CLI as a user would."""
    return subprocess.run(
        [ORCHARD_BIN, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def wait_champion(base_url: str, timeout: float = 300) -> str:
    """Until serving at `base_url` serves a `champion`; returns its version (for benches)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            serving = httpx.get(f"{base_url}/healthz", timeout=10).json()["serving"]
        except httpx.HTTPError:  # a busy 2-core machine can be slow to answer
            serving = {}
        if "champion" in serving:
            return serving["champion"]
        time.sleep(1)
    raise SystemExit("the champion never loaded: see the serve log and Ray's serve logs")


def wait_alias(base_url: str, alias: str, version: str, timeout: float = 300) -> None:
    """Until serving at `base_url` serves `alias` as `version` (it polls the registry)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=10).json()["serving"].get(alias) == version:
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass  # a busy 2-core machine can be slow to answer
        time.sleep(1)
    raise SystemExit(f"serving never served {alias} = version {version}: see the serve log")
