"""Users choose whether their feedback trains the model (`users.feedback_for_training`):
on by default, so every existing account starts opted in, as a new one does; the privacy
page turns it off with one click, and the feedback export leaves those accounts out.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NOT NULL with a server default: existing rows get it, and SQLite adds the column in
    # place (no table copy).
    op.add_column(
        "users",
        sa.Column("feedback_for_training", sa.Boolean(), nullable=False, server_default=sa.true()),
    )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("feedback_for_training")
