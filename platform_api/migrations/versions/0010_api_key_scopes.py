"""API keys get scopes (`api_keys.scopes`, space-separated, deps.API_KEY_SCOPES): what a
key may do. Every existing key gets `inference` (the /v1 gateway), the scope a new key
gets by default, so SDK clients keep working; what they could reach beyond it before
(chats, usage, the profile, the account export) now needs a key made with those scopes,
or a login.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NOT NULL with a server default: existing rows get it, and SQLite adds the column in
    # place (no table copy).
    op.add_column(
        "api_keys",
        sa.Column("scopes", sa.String(length=200), nullable=False, server_default="inference"),
    )


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("scopes")
