"""Plans (monthly credit grants, token limits) and per-user limit overrides, what each
answer cost and which A/B side gave it, OAuth identities, conversation flags, model access
rules, feature flags and champion/challenger traffic splits.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-16
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _fk(table: str, column: str, target: str, ondelete: str | None = None):
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.id"],
        name=op.f(f"fk_{table}_{column}_{target}"),
        ondelete=ondelete,
    )


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("monthly_credits", sa.Integer(), nullable=False),
        sa.Column("daily_token_limit", sa.Integer(), nullable=True),
        sa.Column("monthly_token_limit", sa.Integer(), nullable=True),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "monthly_credits >= 0", name=op.f("ck_plans_monthly_credits_not_negative")
        ),
        sa.CheckConstraint(
            "daily_token_limit IS NULL OR daily_token_limit >= 0",
            name=op.f("ck_plans_daily_limit"),
        ),
        sa.CheckConstraint(
            "monthly_token_limit IS NULL OR monthly_token_limit >= 0",
            name=op.f("ck_plans_monthly_limit"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
        sa.UniqueConstraint("name", name=op.f("uq_plans_name")),
    )
    # users.plan_id has no foreign key: see the comment on `User.plan_id` (models.py).
    op.add_column("users", sa.Column("plan_id", sa.String(length=32), nullable=True))
    for column in ("daily_token_limit", "monthly_token_limit"):
        op.add_column("users", sa.Column(column, sa.Integer(), nullable=True))
    op.add_column("users", sa.Column("limits_reset_at", sa.DateTime(), nullable=True))
    op.create_index(op.f("ix_users_plan_id"), "users", ["plan_id"])
    op.add_column("messages", sa.Column("credits", sa.Integer(), nullable=True))
    op.add_column("messages", sa.Column("variant", sa.String(length=16), nullable=True))
    op.create_table(
        "plan_grants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("plan_id", sa.String(length=32), nullable=True),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("ledger_entry_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        _fk("plan_grants", "user_id", "users"),
        _fk("plan_grants", "plan_id", "plans", "SET NULL"),
        sa.ForeignKeyConstraint(
            ["ledger_entry_id"],
            ["credit_ledger.id"],
            name=op.f("fk_plan_grants_ledger_entry_id_credit_ledger"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_grants")),
        sa.UniqueConstraint("user_id", "period", name=op.f("uq_plan_grants_user_id_period")),
    )
    op.create_index(op.f("ix_plan_grants_user_id"), "plan_grants", ["user_id"])
    op.create_table(
        "oauth_identities",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_login_at", sa.DateTime(), nullable=True),
        _fk("oauth_identities", "user_id", "users", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_identities")),
        sa.UniqueConstraint(
            "provider", "subject", name=op.f("uq_oauth_identities_provider_subject")
        ),
    )
    op.create_index(op.f("ix_oauth_identities_user_id"), "oauth_identities", ["user_id"])
    op.create_table(
        "chat_flags",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("chat_id", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("flagged_by", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("resolved_at", sa.DateTime(), nullable=True),
        sa.Column("resolved_by", sa.String(length=32), nullable=True),
        _fk("chat_flags", "chat_id", "chats", "CASCADE"),
        _fk("chat_flags", "message_id", "messages", "SET NULL"),
        sa.ForeignKeyConstraint(
            ["flagged_by"],
            ["users.id"],
            name=op.f("fk_chat_flags_flagged_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["resolved_by"],
            ["users.id"],
            name=op.f("fk_chat_flags_resolved_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_flags")),
    )
    op.create_index(op.f("ix_chat_flags_chat_id"), "chat_flags", ["chat_id"])
    op.create_table(
        "model_access_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=True),
        sa.Column("user_id", sa.String(length=32), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=32), nullable=True),
        sa.CheckConstraint(
            "(role IS NULL) <> (user_id IS NULL)", name=op.f("ck_model_access_rules_one_subject")
        ),
        sa.CheckConstraint(
            "role IS NULL OR role IN ('user', 'admin')", name=op.f("ck_model_access_rules_role")
        ),
        _fk("model_access_rules", "user_id", "users", "CASCADE"),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_model_access_rules_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_access_rules")),
    )
    op.create_index(op.f("ix_model_access_rules_user_id"), "model_access_rules", ["user_id"])
    op.create_table(
        "feature_flags",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("roles", sa.Text(), nullable=False),
        sa.Column("users", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["updated_by"],
            ["users.id"],
            name=op.f("fk_feature_flags_updated_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_feature_flags")),
    )
    op.create_table(
        "traffic_splits",
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("challenger_percent", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=32), nullable=True),
        sa.CheckConstraint(
            "challenger_percent >= 0 AND challenger_percent <= 100",
            name=op.f("ck_traffic_splits_percent"),
        ),
        sa.ForeignKeyConstraint(
            ["updated_by"],
            ["users.id"],
            name=op.f("fk_traffic_splits_updated_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("model_name", name=op.f("pk_traffic_splits")),
    )


def downgrade() -> None:
    op.drop_table("traffic_splits")
    op.drop_table("feature_flags")
    op.drop_table("model_access_rules")
    op.drop_table("chat_flags")
    op.drop_table("oauth_identities")
    op.drop_table("plan_grants")
    op.drop_column("messages", "variant")
    op.drop_column("messages", "credits")
    # Plain DROP COLUMN (SQLite >= 3.35), not batch mode: batch would copy `users` and
    # drop the original, which cascades into every chat and key.
    op.drop_index(op.f("ix_users_plan_id"), table_name="users")
    for column in ("limits_reset_at", "monthly_token_limit", "daily_token_limit", "plan_id"):
        op.drop_column("users", column)
    op.drop_table("plans")
