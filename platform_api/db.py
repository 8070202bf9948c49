"""The platform database: which URL, the engine, sessions, and `migrate`.

SQLite under `<home>/platform.db` is the embedded default; PostgreSQL (psycopg 3) is the
production database (`ORCHARD_DATABASE_URL=postgresql://user:pass@host/db`). The same
models and the same Alembic migrations serve both.

Concurrency notes. PostgreSQL runs at READ COMMITTED: rules that must hold under
concurrent requests (a balance never below zero, a refresh token used once) are single
conditional UPDATEs, which take the row lock and re-check their WHERE clause. SQLite gets
WAL (readers do not block the writer) and a busy timeout, and Python's sqlite3 opens a
transaction only at the first write, so those same UPDATEs queue for the write lock
instead of failing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.pool import NullPool, StaticPool
from sqlmodel import Session

from orchard.errors import OrchardError
from orchard.settings import Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30


class DatabaseURLError(OrchardError, ValueError):
    """ORCHARD_DATABASE_URL names no database this platform can use."""


def database_url(settings: Settings) -> str:
    """`settings.database_url`, or the embedded SQLite file under `<home>`."""
    if settings.database_url:
        return normalize_url(settings.database_url)
    return f"sqlite:///{settings.home / 'platform.db'}"


def normalize_url(url: str) -> str:
    """Accept the usual spellings; use psycopg 3 for PostgreSQL (psycopg2 is not installed)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseURLError(
            f"ORCHARD_DATABASE_URL={url!r} is not a database URL: use "
            "postgresql://user:password@host:5432/dbname or sqlite:////absolute/path.db"
        ) from None
    backend = parsed.get_backend_name()
    if backend in ("postgres", "postgresql"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise DatabaseURLError(
                "an in-memory SQLite database is private to one connection: "
                "use a file, sqlite:////absolute/path/platform.db"
            )
        return url
    raise DatabaseURLError(
        f"ORCHARD_DATABASE_URL uses {backend!r}: the platform supports postgresql and sqlite"
    )


def make_engine(url: str, *, pooled: bool = True) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        database = make_url(url).database
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
            poolclass=None if pooled else NullPool,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if not pooled:
        return create_engine(url, poolclass=NullPool)
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def make_loop_engine(url: str) -> Engine | None:
    """For SQLite, an engine whose one connection the event loop itself may use for short
    work that must not wait for a worker thread (the OpenAI gateway's admission): a local
    file, no busy wait (a held write lock fails at once with "database is locked", and
    the caller goes to a worker thread instead). None for PostgreSQL, where every query
    is a network round trip and runs in a worker thread."""
    url = normalize_url(url)
    if not url.startswith("sqlite"):
        return None
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 0}, poolclass=StaticPool
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def is_locked(error: OperationalError) -> bool:
    """SQLite's write lock was held (by another connection's transaction)."""
    return "database is locked" in str(error.orig)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def migrate(url: str) -> None:
    """Bring the database at `url` to the newest schema. Idempotent; on PostgreSQL two
    processes migrating at once take turns (an advisory lock in migrations/env.py)."""
    engine = make_engine(url, pooled=False)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


def session_scope(engine: Engine) -> Iterator[Session]:
    """A session per request; `expire_on_commit=False` so committed rows stay readable."""
    with Session(engine, expire_on_commit=False) as session:
        yield session
