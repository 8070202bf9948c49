"""The platform API under test: served by uvicorn on a free loopback port, over real HTTP,
on SQLite and on a real PostgreSQL server (every test that takes `api` runs on both),
talking to a stand-in serving app (`serving_stub.py`).

PostgreSQL: one throwaway server per test session (`postgres.py`); a template database
is migrated once, and each test gets its own copy of it. Without PostgreSQL binaries the
PostgreSQL half is skipped locally and fails in CI (CI=true).

Argon2 runs with small parameters here, through the app's own `PlatformOptions`; a test
checks that the app's defaults are the library's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

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
from tests.platform.serving_stub import ServingStub

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


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'platform.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = server.create_database(template=TEMPLATE_DB)
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


@pytest.fixture
def serving() -> Iterator[ServingStub]:
    stub = ServingStub()
    try:
        yield stub
    finally:
        stub.stop()


@pytest.fixture
def settings(clean_env, database_url: str, serving: ServingStub) -> Settings:
    # No Starter plan: each test makes the plans and grants it needs.
    return Settings(
        home=clean_env, database_url=database_url, serving_url=serving.url, starter_plan_credits=0
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
def api(settings: Settings, database_url: str) -> Iterator[Api]:
    with serve_api(settings, database_url) as api:
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
