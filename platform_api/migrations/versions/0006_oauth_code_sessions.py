"""The login session an OAuth sign-in code opened (revoked when the spent code is replayed;
a recent one confirms sensitive actions of accounts without a password).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-18
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode on SQLite copies the table to add the foreign key: a small table of
    # 60-second codes that nothing references.
    with op.batch_alter_table("oauth_login_codes") as batch:
        batch.add_column(sa.Column("session_id", sa.String(length=32), nullable=True))
        batch.create_foreign_key(
            op.f("fk_oauth_login_codes_session_id_auth_sessions"),
            "auth_sessions",
            ["session_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_index(op.f("ix_oauth_login_codes_session_id"), ["session_id"])


def downgrade() -> None:
    with op.batch_alter_table("oauth_login_codes") as batch:
        batch.drop_index(op.f("ix_oauth_login_codes_session_id"))
        batch.drop_constraint(
            op.f("fk_oauth_login_codes_session_id_auth_sessions"), type_="foreignkey"
        )
        batch.drop_column("session_id")
