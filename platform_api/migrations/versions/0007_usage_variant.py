"""Which side of the champion/challenger split answered a gateway request
(`usage_records.variant`; chat answers keep theirs on `messages.variant`).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-19
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column without a constraint: SQLite adds it in place (no table copy).
    op.add_column("usage_records", sa.Column("variant", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("variant")
