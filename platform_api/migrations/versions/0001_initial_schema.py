"""Initial schema: accounts, sessions, API keys, chats, messages, share links, credits.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(length=32)


def _timestamps(*names: str, nullable: bool = False) -> list[sa.Column]:
    return [sa.Column(name, sa.DateTime(), nullable=nullable) for name in names]


def _user_fk(table: str, ondelete: str | None = "CASCADE") -> list:
    return [
        sa.Column("user_id", ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f(f"fk_{table}_user_id_users"), ondelete=ondelete
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", ID, nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("display_name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("totp_secret", sa.String(length=255), nullable=True),
        sa.Column("totp_enabled", sa.Boolean(), nullable=False),
        sa.Column("totp_last_step", sa.Integer(), nullable=True),
        *_timestamps("created_at", "updated_at"),
        sa.CheckConstraint("role IN ('user', 'admin')", name=op.f("ck_users_role")),
        sa.CheckConstraint(
            "status IN ('active', 'suspended', 'banned')", name=op.f("ck_users_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_table(
        "auth_sessions",
        sa.Column("id", ID, nullable=False),
        *_user_fk("auth_sessions"),
        *_timestamps("created_at"),
        *_timestamps("revoked_at", nullable=True),
        sa.Column("revoked_reason", sa.String(length=100), nullable=True),
        sa.Column("user_agent", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_sessions")),
    )
    op.create_index(op.f("ix_auth_sessions_user_id"), "auth_sessions", ["user_id"])
    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", ID, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        *_timestamps("issued_at", "expires_at"),
        *_timestamps("used_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["auth_sessions.id"],
            name=op.f("fk_refresh_tokens_session_id_auth_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_refresh_tokens_token_hash")),
    )
    op.create_index(op.f("ix_refresh_tokens_session_id"), "refresh_tokens", ["session_id"])
    op.create_table(
        "api_keys",
        sa.Column("id", ID, nullable=False),
        *_user_fk("api_keys"),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        *_timestamps("created_at"),
        *_timestamps("last_used_at", "revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_user_id"), "api_keys", ["user_id"])
    op.create_table(
        "folders",
        sa.Column("id", ID, nullable=False),
        *_user_fk("folders"),
        sa.Column("name", sa.String(length=100), nullable=False),
        *_timestamps("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_folders")),
        sa.UniqueConstraint("user_id", "name", name=op.f("uq_folders_user_id_name")),
    )
    op.create_index(op.f("ix_folders_user_id"), "folders", ["user_id"])
    op.create_table(
        "chats",
        sa.Column("id", ID, nullable=False),
        *_user_fk("chats"),
        sa.Column("folder_id", ID, nullable=True),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("model_alias", sa.String(length=64), nullable=False),
        sa.Column("temperature", sa.Float(), nullable=False),
        sa.Column("max_tokens", sa.Integer(), nullable=False),
        sa.Column("system_prompt", sa.Text(), nullable=False),
        sa.Column("tone", sa.String(length=16), nullable=False),
        *_timestamps("created_at", "updated_at"),
        sa.CheckConstraint(
            "tone IN ('neutral', 'friendly', 'formal', 'concise')", name=op.f("ck_chats_tone")
        ),
        sa.ForeignKeyConstraint(
            ["folder_id"],
            ["folders.id"],
            name=op.f("fk_chats_folder_id_folders"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chats")),
    )
    op.create_index(op.f("ix_chats_folder_id"), "chats", ["folder_id"])
    op.create_index(op.f("ix_chats_user_id"), "chats", ["user_id"])
    op.create_table(
        "messages",
        sa.Column("id", ID, nullable=False),
        sa.Column("chat_id", ID, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("model_version", sa.String(length=200), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        *_timestamps("created_at", "updated_at"),
        sa.CheckConstraint("role IN ('user', 'assistant')", name=op.f("ck_messages_role")),
        sa.CheckConstraint(
            "status IN ('streaming', 'complete', 'partial', 'failed')",
            name=op.f("ck_messages_status"),
        ),
        sa.ForeignKeyConstraint(
            ["chat_id"], ["chats.id"], name=op.f("fk_messages_chat_id_chats"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("chat_id", "seq", name=op.f("uq_messages_chat_id_seq")),
    )
    op.create_index(op.f("ix_messages_chat_id"), "messages", ["chat_id"])
    op.create_table(
        "share_links",
        sa.Column("id", ID, nullable=False),
        sa.Column("chat_id", ID, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        *_timestamps("created_at"),
        *_timestamps("revoked_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["chat_id"],
            ["chats.id"],
            name=op.f("fk_share_links_chat_id_chats"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_share_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_share_links_token_hash")),
    )
    op.create_index(op.f("ix_share_links_chat_id"), "share_links", ["chat_id"])
    _create_credits()


def _create_credits() -> None:
    op.create_table(
        "credit_accounts",
        sa.Column("user_id", ID, nullable=False),
        sa.Column("balance", sa.Integer(), nullable=False),
        *_timestamps("updated_at"),
        sa.CheckConstraint("balance >= 0", name=op.f("ck_credit_accounts_balance_not_negative")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_credit_accounts_user_id_users")
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_credit_accounts")),
    )
    op.create_table(
        "credit_ledger",
        sa.Column("id", sa.Integer(), nullable=False),
        *_user_fk("credit_ledger", ondelete=None),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("balance_after", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("refund_of", sa.Integer(), nullable=True),
        *_timestamps("created_at"),
        sa.CheckConstraint(
            "kind IN ('grant', 'debit', 'refund')", name=op.f("ck_credit_ledger_kind")
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_credit_ledger_amount_positive")),
        sa.CheckConstraint(
            "balance_after >= 0", name=op.f("ck_credit_ledger_balance_after_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["refund_of"],
            ["credit_ledger.id"],
            name=op.f("fk_credit_ledger_refund_of_credit_ledger"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_ledger")),
        sa.UniqueConstraint("refund_of", name=op.f("uq_credit_ledger_refund_of")),
    )
    op.create_index(op.f("ix_credit_ledger_user_id"), "credit_ledger", ["user_id"])
    # The ledger is append-only for everyone, the application included.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION credit_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'credit_ledger is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER credit_ledger_append_only BEFORE UPDATE OR DELETE ON credit_ledger "
            "FOR EACH ROW EXECUTE FUNCTION credit_ledger_append_only()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER credit_ledger_no_{action.lower()} BEFORE {action} "
                "ON credit_ledger BEGIN SELECT RAISE(ABORT, 'credit_ledger is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER credit_ledger_append_only ON credit_ledger")
        op.execute("DROP FUNCTION credit_ledger_append_only()")
    for table in (
        "credit_ledger",
        "credit_accounts",
        "share_links",
        "messages",
        "chats",
        "folders",
        "api_keys",
        "refresh_tokens",
        "auth_sessions",
        "users",
    ):
        op.drop_table(table)
