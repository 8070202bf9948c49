"""Time to first token per chat answer (`messages.ttft_ms`): the A/B review compares it per
side of the split, beside the whole answer's latency (`latency_ms`).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column without a constraint: SQLite adds it in place (no table copy).
    # NULL for answers that never got a token (failed before it) and for older rows.
    op.add_column("messages", sa.Column("ttft_ms", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("ttft_ms")
