"""The platform API under test: served by uvicorn on a free loopback port, over real HTTP,
on SQLite and on a real PostgreSQL server (every test that takes `api` runs on both),
talking to a stand-in serving app (`serving_stub.py`).

PostgreSQL: one throwaway server per test session (`postgres.py`); a template database
is migrated once, and each test gets its own copy of it. Without PostgreSQL binaries the
PostgreSQL half is skipped locally and fails in CI (CI=true). SQLite: a template file is
migrated once and copied for each test.

The tests of a module share one platform API server per backend (`PlatformPool`): each
test still gets a fresh database, a reset rate limiter and a reset serving stub.

Argon2 runs with small parameters here, through the app's own `PlatformOptions`; a test
checks that the app's defaults are the library's.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pyotp
import pytest

from orchard.settings import Settings
from platform_api.app import create_app
from platform_api.db import migrate

# The client and server of the tests live in testkit/ (bench/ uses them too); the names
# that test modules import from here are re-exported.
from testkit.platform import CHAT_CREDITS as CHAT_CREDITS
from testkit.platform import FAST_ARGON2, Api, LiveServer
from testkit.platform import PASSWORD as PASSWORD
from testkit.platform import Account as Account
from testkit.platform import grant_credits as grant_credits
from testkit.postgres import PostgresServer, PostgresUnavailable, start_postgres
from testkit.serving_stub import ServingStub

TEMPLATE_DB = "orchard_template"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    try:
        server = start_postgres()
    except PostgresUnavailable as error:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test the platform on PostgreSQL: {error}")
        pytest.skip(f"PostgreSQL unavailable: {error}")
    try:
        with server.connect() as connection:
            connection.execute(f"CREATE DATABASE {TEMPLATE_DB}")
        migrate(server.url(TEMPLATE_DB))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite platform database migrated to head once; each test gets a copy."""
    path = tmp_path_factory.mktemp("sqlite-template") / "platform.db"
    migrate(f"sqlite:///{path}")
    return path


class PlatformPool:
    """The platform API servers of one test module: one per database backend, reused by
    every test of the module whose settings are the same, each test on a fresh copy of a
    migrated database at the same URL (SQLite: the template file copied over; PostgreSQL:
    the database dropped and re-created from the template). Starting an app (routes,
    lifespan, uvicorn) costs about a second; a copy of the database a few milliseconds.

    A test whose settings differ from the running server's (a module's own `settings`
    fixture) gets a new server, which replaces that backend's old one."""

    def __init__(self, root: Path, request: pytest.FixtureRequest) -> None:
        self.root = root
        self.home = root / "home"
        self.request = request
        self.servers: dict[str, tuple[Settings, LiveServer]] = {}
        self.pg_name = f"m_{uuid.uuid4().hex[:12]}"
        self.pg_server: PostgresServer | None = None

    def fresh_database(self, backend: str, sqlite_template: Path) -> str:
        """The backend's database URL, its content reset to the migrated template."""
        running = self.servers.get(backend)
        if running:  # no pooled connection may outlive the old content
            for name in ("engine", "loop_engine"):
                engine = getattr(running[1].app.state, name, None)
                if engine is not None:
                    engine.dispose()
        if backend == "sqlite":
            # SQLite's backup API, not a file copy: the running server's background tasks
            # (the A/B guardrail checks every 0.2 s in some modules) may open the file at
            # any moment, and must see the old content or the new, never a truncated
            # file or a WAL that belongs to the other one.
            path = self.root / "sqlite" / "platform.db"
            path.parent.mkdir(parents=True, exist_ok=True)
            source, target = sqlite3.connect(sqlite_template), sqlite3.connect(path, timeout=30)
            try:
                source.backup(target)
            finally:
                source.close()
                target.close()
            return f"sqlite:///{path}"
        server: PostgresServer = self.request.getfixturevalue("postgres")
        self.pg_server = server
        with server.connect() as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {self.pg_name} WITH (FORCE)")
            connection.execute(f"CREATE DATABASE {self.pg_name} TEMPLATE {TEMPLATE_DB}")
        return server.url(self.pg_name)

    @contextmanager
    def api(self, settings: Settings, database_url: str) -> Iterator[Api]:
        backend = "sqlite" if database_url.startswith("sqlite") else "postgresql"
        running = self.servers.get(backend)
        if running and running[0] == settings and running[1].thread.is_alive():
            server = running[1]
            server.app.state.rate_limiter.storage.reset()
            server.app.state.serving.contexts.forget()
        else:
            if running:
                running[1].stop()
            server = LiveServer(create_app(settings, FAST_ARGON2))
            server.start()
            self.servers[backend] = (settings, server)
        http = httpx.Client(base_url=f"{server.url}/api/v1", timeout=60)
        try:
            yield Api(http=http, root=server.url, settings=settings, database_url=database_url)
        finally:
            http.close()
            if not server.quiesce():  # a turn still running would write into the next test
                server.stop()
                del self.servers[backend]

    def close(self) -> None:
        for _settings, server in self.servers.values():
            server.stop()
        self.servers.clear()
        if self.pg_server is not None:
            self.pg_server.drop_database(self.pg_name)


@pytest.fixture(scope="module")
def platform_pool(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PlatformPool]:
    pool = PlatformPool(tmp_path_factory.mktemp("platform"), request)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, platform_pool: PlatformPool, sqlite_template: Path
) -> str:
    """The module's database for this backend, fresh for each test."""
    return platform_pool.fresh_database(request.param, sqlite_template)


@pytest.fixture(scope="module")
def serving_stub() -> Iterator[ServingStub]:
    stub = ServingStub()
    try:
        yield stub
    finally:
        stub.stop()


@pytest.fixture
def serving(serving_stub: ServingStub) -> ServingStub:
    """The module's stub, reset (and listening again if a test stopped it)."""
    serving_stub.reset()
    if serving_stub.stopped:
        serving_stub.start()
    return serving_stub


@pytest.fixture
def settings(
    clean_env, platform_pool: PlatformPool, database_url: str, serving: ServingStub
) -> Settings:
    # No Starter plan: each test makes the plans and grants it needs. The home is the
    # module's, so the module's tests share one server (its secrets live there).
    return Settings(
        home=platform_pool.home,
        database_url=database_url,
        serving_url=serving.url,
        starter_plan_credits=0,
    )


@contextmanager
def serve_api(
    settings: Settings, database_url: str, server: LiveServer | None = None
) -> Iterator[Api]:
    """The platform API with `settings` (or the app `server` holds) running, as an `Api`."""
    server = server or LiveServer(create_app(settings, FAST_ARGON2))
    server.start()
    http = httpx.Client(base_url=f"{server.url}/api/v1", timeout=60)
    try:
        yield Api(http=http, root=server.url, settings=settings, database_url=database_url)
    finally:
        http.close()
        server.stop()


@pytest.fixture
def api(settings: Settings, database_url: str, platform_pool: PlatformPool) -> Iterator[Api]:
    with platform_pool.api(settings, database_url) as api:
        yield api


def totp_code(secret: str, step_offset: int) -> str:
    """The code of the current time step + offset; offsets -1, 0, +1 are all accepted, and
    using them in increasing order gives codes of strictly increasing steps.

    Near the end of a 30 s step it first waits for the next one, so that the server,
    which checks a moment later, still sees the same current step (a -1 code would be -2
    there, and refused)."""
    left = 30 - time.time() % 30
    if left < 5:
        time.sleep(left + 0.1)
    return pyotp.TOTP(secret).at(time.time() + 30 * step_offset)
