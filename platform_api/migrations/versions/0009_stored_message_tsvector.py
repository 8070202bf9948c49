"""PostgreSQL: messages keep their `tsvector` in a stored generated column.

0008 indexed the expression `to_tsvector('simple', content)`. A GIN index does not hold
word positions, so every row it returns for a phrase or prefix query is checked again,
and with an expression index that means tokenizing the message again: a common phrase
("le nu") re-tokenized ~12,000 messages and took ~400 ms in bench/search.py at 50,000
messages. With the vector stored beside the text (PostgreSQL's documented way, "a
separate tsvector column", 12.2.2) the check reads it instead. The column is computed by
PostgreSQL on every insert and update of `content`; the models do not declare it.

Adding a stored generated column rewrites `messages` under an exclusive lock: on a large
production table run this migration in a maintenance window. SQLite is unchanged (its
FTS5 index already stores what it needs).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-21
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMN = "search_vector"  # platform_api/search.py reads it; search.include_object skips it
INDEX = "ix_messages_content_search"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"ALTER TABLE messages ADD COLUMN {COLUMN} tsvector"
        " GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, content)) STORED"
    )
    op.execute(f"DROP INDEX {INDEX}")
    op.execute(f"CREATE INDEX {INDEX} ON messages USING gin ({COLUMN})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP INDEX {INDEX}")
    op.execute(f"ALTER TABLE messages DROP COLUMN {COLUMN}")
    op.execute(
        f"CREATE INDEX {INDEX} ON messages USING gin (to_tsvector('simple'::regconfig, content))"
    )
