"""Re-embedding knowledge bases for a new embedding model: each base names the vector
store collection it reads (`knowledge_bases.collection`, NULL: `kb_<id>`), so a new one can
be built beside it and switched to whole; `knowledge_reembed_jobs` records each run.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column without a constraint: SQLite adds it in place (no table copy).
    op.add_column("knowledge_bases", sa.Column("collection", sa.String(length=63), nullable=True))
    op.create_table(
        "knowledge_reembed_jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("embedding_model", sa.String(length=200), nullable=False),
        sa.Column("embedding_dimension", sa.Integer(), nullable=True),
        sa.Column("bases_total", sa.Integer(), nullable=False),
        sa.Column("bases_done", sa.Integer(), nullable=False),
        sa.Column("files_total", sa.Integer(), nullable=False),
        sa.Column("files_done", sa.Integer(), nullable=False),
        sa.Column("chunks_done", sa.Integer(), nullable=False),
        sa.Column("current_base_id", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("started_by", sa.String(length=32), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'done', 'failed')",
            name=op.f("ck_knowledge_reembed_jobs_status"),
        ),
        sa.ForeignKeyConstraint(
            ["started_by"],
            ["users.id"],
            name=op.f("fk_knowledge_reembed_jobs_started_by_users"),
            ondelete="SET NULL",
        ),  # fmt: skip
        sa.PrimaryKeyConstraint("id", name=op.f("pk_knowledge_reembed_jobs")),
    )


def downgrade() -> None:
    op.drop_table("knowledge_reembed_jobs")
    with op.batch_alter_table("knowledge_bases") as batch:
        batch.drop_column("collection")
