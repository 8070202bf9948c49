"""The schema comes from the Alembic migrations, matches the models, and migrating is
idempotent, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, select

from orchard.settings import Settings
from platform_api import search
from platform_api.db import (
    MIGRATIONS_DIR,
    DatabaseURLError,
    alembic_config,
    database_url,
    make_engine,
    migrate,
)
from platform_api.models import ApiKey, Chat, metadata


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path):
    """A database nothing has touched (not the pre-migrated template)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    server = request.getfixturevalue("postgres")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


def test_migrate_creates_the_models_schema_and_is_idempotent(empty_database):
    migrate(empty_database)
    migrate(empty_database)  # a second start-up finds the schema at head
    engine = make_engine(empty_database)
    try:
        with engine.connect() as connection:
            version = connection.execute(text("SELECT version_num FROM alembic_version")).all()
            # one head, the newest migration (two branches claiming one number would fork it)
            heads = ScriptDirectory.from_config(alembic_config()).get_heads()
            assert version == [(heads[0],)] and len(heads) == 1
            newest = max(p.stem[:4] for p in (MIGRATIONS_DIR / "versions").glob("0*.py"))
            assert heads[0] == newest
            context = MigrationContext.configure(
                connection,
                opts={"compare_type": True, "include_object": search.include_object},
            )
            assert compare_metadata(context, metadata) == []
            assert {"users", "chats", "messages", "credit_ledger"} <= set(
                inspect(connection).get_table_names()
            )
    finally:
        engine.dispose()


def test_the_ledger_refuses_update_and_delete_in_the_database(empty_database):
    migrate(empty_database)
    engine = make_engine(empty_database)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO users (id, email, password_hash, display_name, role, status,"
                    " totp_enabled, created_at, updated_at) VALUES ('u1', 'a@b.c', 'x', '',"
                    " 'user', 'active', false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO credit_ledger (user_id, kind, amount, balance_after, reason,"
                    " created_at) VALUES ('u1', 'grant', 5, 5, 'test', CURRENT_TIMESTAMP)"
                )
            )
        for statement in ("UPDATE credit_ledger SET amount = 500", "DELETE FROM credit_ledger"):
            with pytest.raises(DBAPIError, match="append-only"):
                with engine.begin() as connection:
                    connection.execute(text(statement))
    finally:
        engine.dispose()


def test_database_url_defaults_to_sqlite_under_home_and_normalises_postgres(tmp_path):
    assert database_url(Settings(home=tmp_path)) == f"sqlite:///{tmp_path / 'platform.db'}"
    url = database_url(Settings(home=tmp_path, database_url="postgresql://u:p@db:5432/orchard"))
    assert url == "postgresql+psycopg://u:p@db:5432/orchard"
    assert database_url(Settings(home=tmp_path, database_url="postgres://db/x")).startswith(
        "postgresql+psycopg://"
    )


@pytest.mark.parametrize(
    "url, hint",
    [
        ("not a url", "is not a database URL"),
        ("mysql://db/x", "supports postgresql and sqlite"),
        ("sqlite://", "in-memory"),
    ],
)
def test_bad_database_urls_say_what_to_use(tmp_path, url, hint):
    with pytest.raises(DatabaseURLError, match=hint):
        database_url(Settings(home=tmp_path, database_url=url))


@contextmanager
def rows_at_revision(url: str, revision: str) -> Iterator[Connection]:
    """The database migrated to `revision`, with one user `u1`; the rows the block writes
    there are committed, then the database is migrated to head."""
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            connection.execute(
                text(
                    "INSERT INTO users (id, email, password_hash, display_name, role, status,"
                    " totp_enabled, created_at, updated_at) VALUES ('u1', 'a@b.c', 'x', '',"
                    " 'user', 'active', false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            yield connection
    finally:
        engine.dispose()
    migrate(url)


def test_migrating_indexes_what_was_there_before(empty_database):
    """Chats and messages written under 0007 are found once 0008 and 0009 have run."""
    with rows_at_revision(empty_database, "0007") as connection:
        connection.execute(
            text(
                "INSERT INTO chats (id, user_id, title, model_alias, temperature,"
                " max_tokens, system_prompt, tone, pinned, created_at, updated_at)"
                " VALUES ('c1', 'u1', 'Old orchard', 'champion', 0.7, 512, '', 'neutral',"
                " false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO messages (id, chat_id, seq, role, content, status, created_at,"
                " updated_at) VALUES ('m1', 'c1', 1, 'user', 'Cider from russet apples',"
                " 'complete', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )

    engine = make_engine(empty_database)
    try:
        with Session(engine) as session:
            dialect = engine.dialect.name
            for q, matched in [
                ("orchard", ["c1"]),
                ("russet cider", ["c1"]),
                ('"russet apples"', ["c1"]),
                ('"apples russet"', []),
                ("pear", []),
            ]:
                query = select(Chat.id).where(
                    search.chat_matches(dialect, search.SearchQuery.parse(q))
                )
                assert list(session.exec(query)) == matched, q
    finally:
        engine.dispose()


def test_keys_made_before_scopes_keep_the_gateway(empty_database):
    """0010 gives every existing API key `inference`, the scope of the /v1 gateway."""
    with rows_at_revision(empty_database, "0009") as connection:
        connection.execute(
            text(
                "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, created_at)"
                " VALUES ('k1', 'u1', 'sdk', 'orch_abc', :hash, CURRENT_TIMESTAMP)"
            ),
            {"hash": "0" * 64},
        )

    engine = make_engine(empty_database)
    try:
        with Session(engine) as session:
            key = session.get(ApiKey, "k1")
            assert key.scope_list == ["inference"]
            session.add(ApiKey(user_id="u1", name="new", prefix="orch_def", key_hash="1" * 64))
            session.commit()
            assert session.exec(select(ApiKey.scopes).where(ApiKey.name == "new")).one() == (
                "inference"
            )
    finally:
        engine.dispose()
