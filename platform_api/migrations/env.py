"""Alembic environment, driven from `platform_api.db.migrate` (no alembic.ini).

`migrate` hands over an open connection in `config.attributes["connection"]`. On
PostgreSQL a transaction-scoped advisory lock makes concurrent start-ups migrate one
after the other; the second finds the schema at head and does nothing.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from platform_api.models import metadata
from platform_api.search import include_object

# Any constant identifies "the platform's migration" among advisory locks.
MIGRATION_LOCK_ID = 0x0C4A2D

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through platform_api.db.migrate(database_url)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE on SQLite
    compare_type=True,
    include_object=include_object,  # the full-text search objects are not in the models
)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    context.run_migrations()
