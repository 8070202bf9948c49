"""Chats use shared knowledge bases (the crawled site), and users switch memory off.

`chat_shared_knowledge` links a chat to a shared knowledge base by its slug (the bases
pipelines publish have no row of their own: their newest `index` manifest is the base).
`users.memory_enabled`: long-term memory on (the default, so existing accounts keep it)
or off (nothing is remembered from their chats, nothing recalled into them).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chat_shared_knowledge",
        sa.Column("chat_id", sa.String(length=32), nullable=False),
        sa.Column("slug", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["chat_id"],
            ["chats.id"],
            name=op.f("fk_chat_shared_knowledge_chat_id_chats"),
            ondelete="CASCADE",
        ),  # fmt: skip
        sa.PrimaryKeyConstraint("chat_id", "slug", name=op.f("pk_chat_shared_knowledge")),
    )
    # NOT NULL with a server default: existing rows get it, and SQLite adds the column in
    # place (no table copy).
    op.add_column(
        "users",
        sa.Column("memory_enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
    )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("memory_enabled")
    op.drop_table("chat_shared_knowledge")
