"""A throwaway Redis server for tests: Debian's `redis-server` on a free loopback port,
no persistence, stopped (and its directory removed) by the fixture that started it."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.conftest import free_port


class RedisUnavailable(RuntimeError):
    pass


class RedisServer:
    def __init__(self, root: Path, port: int, process: subprocess.Popen) -> None:
        self.root = root
        self.port = port
        self.process = process

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start_redis() -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable("no redis-server: apt-get install redis-server (Debian)")
    root = Path(tempfile.mkdtemp(prefix="orchard-redis-"))
    port = free_port()
    log = open(root / "redis.log", "w")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(root)]
        + ["--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    server = RedisServer(root, port, process)
    deadline = time.monotonic() + 30
    while True:
        try:
            if server.client().ping():
                return server
        except redis.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            output = (root / "redis.log").read_text(errors="replace")[-1000:]
            server.stop()
            raise RedisUnavailable(f"redis-server did not start:\n{output}")
        time.sleep(0.05)
