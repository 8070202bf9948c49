"""A throwaway PostgreSQL server for tests: `initdb` in a temporary directory, `postgres`
on a free loopback port, trust authentication, no fsync. Run as the `postgres` system
user when the tests run as root (initdb refuses root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from testkit.stack import free_port

SUPERUSER = "orchard"


class PostgresUnavailable(RuntimeError):
    pass


def find_bindir() -> Path | None:
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    return None


class PostgresServer:
    def __init__(self, root: Path, port: int, process: subprocess.Popen) -> None:
        self.root = root
        self.port = port
        self.process = process

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database, autocommit=True
        )

    def create_database(self, template: str | None = None) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with self.connect() as connection:
            suffix = f" TEMPLATE {template}" if template else ""
            connection.execute(f"CREATE DATABASE {name}{suffix}")
        return name

    def drop_database(self, name: str) -> None:
        with self.connect() as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown: ends open sessions
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> PostgresServer:
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable(
            "no PostgreSQL server binaries (initdb, postgres): "
            "apt-get install postgresql (Debian), or put initdb on PATH"
        )
    as_user: dict = {}
    root = Path(tempfile.mkdtemp(prefix="orchard-pg-"))
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            raise PostgresUnavailable(
                "tests run as root and there is no 'postgres' user for initdb"
            ) from None
        os.chown(root, account.pw_uid, account.pw_gid)
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    data = root / "data"
    init = subprocess.run(
        [bindir / "initdb", "-D", data, "-U", SUPERUSER, "--auth=trust", "-E", "UTF8"]
        + ["--no-sync", "--no-instructions"],
        capture_output=True,
        text=True,
        **as_user,
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(f"initdb failed: {init.stderr.strip()[-500:]}")
    port = free_port()
    log = open(root / "postgres.log", "w")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [bindir / "postgres", "-D", data, "-p", str(port), "-k", root]
        + ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"]
        + ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
        stdout=log,
        stderr=subprocess.STDOUT,
        **as_user,
    )
    log.close()
    server = PostgresServer(root, port, process)
    deadline = time.monotonic() + 60
    while True:
        try:
            server.connect().close()
            return server
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                output = (root / "postgres.log").read_text(errors="replace")[-1000:]
                server.stop()
                raise PostgresUnavailable(f"postgres did not start:\n{output}") from None
            time.sleep(0.1)
