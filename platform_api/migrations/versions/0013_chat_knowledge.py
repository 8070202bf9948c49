"""Chats with knowledge: the knowledge bases a chat retrieves from, the citations of an
answer, and the chunks flagged as instruction-like at ingestion (docs/knowledge.md).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN (no batch copy of `messages`, whose search triggers must stay).
    op.add_column("messages", sa.Column("citations", sa.JSON(), nullable=True))
    op.create_table(
        "chat_knowledge",
        sa.Column("chat_id", sa.String(length=32), nullable=False),
        sa.Column("knowledge_base_id", sa.String(length=32), nullable=False),
        sa.Column("chat_files", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["chat_id"],
            ["chats.id"],
            name=op.f("fk_chat_knowledge_chat_id_chats"),
            ondelete="CASCADE",
        ),  # fmt: skip
        sa.ForeignKeyConstraint(
            ["knowledge_base_id"],
            ["knowledge_bases.id"],
            name=op.f("fk_chat_knowledge_knowledge_base_id_knowledge_bases"),
            ondelete="CASCADE",
        ),  # fmt: skip
        sa.PrimaryKeyConstraint("chat_id", "knowledge_base_id", name=op.f("pk_chat_knowledge")),
    )
    op.create_index(
        op.f("ix_chat_knowledge_knowledge_base_id"), "chat_knowledge", ["knowledge_base_id"]
    )
    op.create_table(
        "knowledge_flags",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("knowledge_base_id", sa.String(length=32), nullable=False),
        sa.Column("file_id", sa.String(length=32), nullable=False),
        sa.Column("chunk_id", sa.String(length=32), nullable=False),
        sa.Column("page", sa.Integer(), nullable=True),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("excerpt", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_knowledge_flags_user_id_users"),
            ondelete="CASCADE",
        ),  # fmt: skip
        sa.ForeignKeyConstraint(
            ["knowledge_base_id"],
            ["knowledge_bases.id"],
            name=op.f("fk_knowledge_flags_knowledge_base_id_knowledge_bases"),
            ondelete="CASCADE",
        ),  # fmt: skip
        sa.ForeignKeyConstraint(
            ["file_id"],
            ["knowledge_files.id"],
            name=op.f("fk_knowledge_flags_file_id_knowledge_files"),
            ondelete="CASCADE",
        ),  # fmt: skip
        sa.PrimaryKeyConstraint("id", name=op.f("pk_knowledge_flags")),
    )
    op.create_index(op.f("ix_knowledge_flags_user_id"), "knowledge_flags", ["user_id"])
    op.create_index(op.f("ix_knowledge_flags_file_id"), "knowledge_flags", ["file_id"])


def downgrade() -> None:
    op.drop_table("knowledge_flags")
    op.drop_table("chat_knowledge")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("citations")
