"""The platform's tables (SQLModel). API request and response shapes live in `schemas.py`.

The tables belong to their own registry and `MetaData` (not SQLModel's global one), so
the Alembic migrations in `migrations/` describe exactly these tables and nothing another
package defines. Every public id is a random hex string, so ids cannot be enumerated.
Timestamps are stored as naive UTC and read back as aware UTC (`UTCDateTime`), the same
on SQLite and PostgreSQL.

Rules the database itself enforces (CHECK constraints, unique keys, triggers written in
the migration): a credit balance is never negative, the credits ledger is append-only, a
refund refers to one debit at most once, a chat's messages have distinct sequence numbers.
A message is never rewritten by regenerate or edit: the new one is added and the old one
marked `superseded_at`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    LargeBinary,
    MetaData,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import registry
from sqlalchemy.sql.expression import true as sa_true
from sqlmodel import Field, SQLModel

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING_CONVENTION)

ROLES = ("user", "admin")
USER_STATUSES = ("active", "suspended", "banned")
MESSAGE_ROLES = ("user", "assistant")
# streaming: being written now; partial: cut short (client gone or stopped), what was
# received is kept; failed: serving broke, what was received is kept with the error.
MESSAGE_STATUSES = ("streaming", "complete", "partial", "failed")
LEDGER_KINDS = ("grant", "debit", "refund")
FEEDBACK_RATINGS = ("up", "down")
USAGE_SOURCES = ("chat", "gateway")
# complete: serving finished; partial: the client left early; failed: serving broke off.
USAGE_STATUSES = ("complete", "partial", "failed")
TONES = ("neutral", "friendly", "formal", "concise")
# Which way an A/B split sent a request: the champion, or the challenger under test.
VARIANTS = ("champion", "challenger")
# An uploaded file's ingestion: waiting, being read, being embedded, searchable, or not.
KNOWLEDGE_FILE_STATUSES = ("queued", "parsing", "embedding", "ready", "failed")
# A re-embedding job: under way, finished, or stopped with the reason.
REEMBED_STATUSES = ("running", "done", "failed")
# Where a memory came from: rules or the model reading a chat turn, or the user writing it.
MEMORY_SOURCES = ("rules", "model", "user")


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Naive UTC in the database, aware UTC in Python, on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        assert value.tzinfo is not None, "store aware datetimes only"
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _created() -> datetime:
    return Field(default_factory=utcnow, sa_type=UTCDateTime)


class PlatformTable(SQLModel, registry=registry(metadata=metadata)):
    pass


# -- accounts and authentication -------------------------------------------------------
class User(PlatformTable, table=True):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(_in("role", ROLES), name="role"),
        CheckConstraint(_in("status", USER_STATUSES), name="status"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    email: str = Field(max_length=320, unique=True)  # stored lower-cased
    password_hash: str = Field(max_length=255)
    display_name: str = Field(default="", max_length=100)
    role: str = Field(default="user", max_length=16)
    status: str = Field(default="active", max_length=16)
    # TOTP secret, encrypted with the platform's Fernet key; pending until the first code.
    totp_secret: str | None = Field(default=None, max_length=255)
    totp_enabled: bool = Field(default=False)
    totp_last_step: int | None = Field(default=None)  # a code's time step is used once
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # erased account
    # Billing: the plan (monthly credit grant, token limits), per-user overrides of the
    # plan's limits (None: the plan's), and when an admin last reset the limits (usage
    # before it does not count toward the current day's or month's limit).
    # No database foreign key: SQLite can add one to an existing table only by copying it,
    # and dropping the old `users` with foreign keys on cascades into every chat and key.
    # Deleting a plan therefore sets its users' plan_id to NULL in the same transaction
    # (plans.py), and a dangling id reads as "no plan" (the default plan).
    plan_id: str | None = Field(default=None, index=True, max_length=32)
    daily_token_limit: int | None = Field(default=None)
    monthly_token_limit: int | None = Field(default=None)
    limits_reset_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # "Use my feedback to improve the model": on by default (as in common chat products),
    # off with one click on the privacy page; the feedback export leaves out those off.
    feedback_for_training: bool = Field(
        default=True, sa_column_kwargs={"server_default": sa_true()}
    )
    # Long-term memory (memory.py): on by default; off, nothing is remembered from the
    # user's chats and nothing recalled into them (the memories stay, to list or delete).
    memory_enabled: bool = Field(default=True, sa_column_kwargs={"server_default": sa_true()})
    created_at: datetime = _created()
    updated_at: datetime = _created()


class OAuthIdentity(PlatformTable, table=True):
    """An account at an OAuth2/OIDC provider (Google, GitHub, any OIDC issuer) linked to a
    user: `subject` is the provider's stable id for it (OIDC `sub`, GitHub's user id)."""

    __tablename__ = "oauth_identities"
    __table_args__ = (UniqueConstraint("provider", "subject"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=32, ondelete="CASCADE")
    provider: str = Field(max_length=64)
    subject: str = Field(max_length=255)
    email: str = Field(default="", max_length=320)
    created_at: datetime = _created()
    last_login_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class AuthSession(PlatformTable, table=True):
    """One login: the family of its rotating refresh tokens; access tokens name it (sid)."""

    __tablename__ = "auth_sessions"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=32, ondelete="CASCADE")
    created_at: datetime = _created()
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_reason: str | None = Field(default=None, max_length=100)
    user_agent: str = Field(default="", max_length=255)


class RefreshToken(PlatformTable, table=True):
    __tablename__ = "refresh_tokens"

    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(
        foreign_key="auth_sessions.id", index=True, max_length=32, ondelete="CASCADE"
    )
    token_hash: str = Field(max_length=64, unique=True)  # SHA-256 hex of the token
    issued_at: datetime = _created()
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # rotated


class ApiKey(PlatformTable, table=True):
    __tablename__ = "api_keys"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=32, ondelete="CASCADE")
    name: str = Field(max_length=100)
    prefix: str = Field(max_length=16)  # the key's first characters, to recognise it
    key_hash: str = Field(max_length=64, unique=True)  # SHA-256 hex of the key
    # What the key may do (deps.API_KEY_SCOPES), space-separated as in OAuth's `scope`.
    scopes: str = Field(
        default="inference", max_length=200, sa_column_kwargs={"server_default": "inference"}
    )
    created_at: datetime = _created()
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    @property
    def scope_list(self) -> list[str]:
        return self.scopes.split()


# -- chats -----------------------------------------------------------------------------
class Folder(PlatformTable, table=True):
    __tablename__ = "folders"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=32, ondelete="CASCADE")
    name: str = Field(max_length=100)
    created_at: datetime = _created()


class Chat(PlatformTable, table=True):
    __tablename__ = "chats"
    __table_args__ = (CheckConstraint(_in("tone", TONES), name="tone"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=32, ondelete="CASCADE")
    folder_id: str | None = Field(
        default=None, foreign_key="folders.id", index=True, max_length=32, ondelete="SET NULL"
    )
    title: str = Field(max_length=200)
    pinned: bool = Field(default=False)
    model_alias: str = Field(max_length=64)
    temperature: float = Field(default=0.7)
    max_tokens: int = Field(default=512)
    system_prompt: str = Field(default="", sa_type=Text)
    tone: str = Field(default="neutral", max_length=16)
    created_at: datetime = _created()
    updated_at: datetime = _created()


class Message(PlatformTable, table=True):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("chat_id", "seq"),
        CheckConstraint(_in("role", MESSAGE_ROLES), name="role"),
        CheckConstraint(_in("status", MESSAGE_STATUSES), name="status"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    chat_id: str = Field(foreign_key="chats.id", index=True, max_length=32, ondelete="CASCADE")
    seq: int  # order within the chat; unique, so two concurrent sends cannot interleave
    role: str = Field(max_length=16)
    content: str = Field(default="", sa_type=Text)
    status: str = Field(default="complete", max_length=16)
    error: str | None = Field(default=None, sa_type=Text)
    model_version: str | None = Field(default=None, max_length=200)
    prompt_tokens: int | None = Field(default=None)
    completion_tokens: int | None = Field(default=None)
    latency_ms: int | None = Field(default=None)
    ttft_ms: int | None = Field(default=None)  # time to the first token (None: none came)
    created_at: datetime = _created()
    updated_at: datetime = _created()
    # Set when a regenerated answer or an edited question replaced it: the row is kept
    # (feedback, the user's data export) but the chat, its history and its views skip it.
    superseded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    credits: int | None = Field(default=None)  # what the answer cost (assistant messages)
    variant: str | None = Field(default=None, max_length=16)  # A/B split: which side answered
    # The passages the answer was given, numbered as the model saw them (chat_knowledge.py):
    # [{"n", "chunk_id", "file_id", "knowledge_base_id", "source", "page", "heading", "text"}].
    citations: list[dict] | None = Field(default=None, sa_type=JSON)


class ChatFlag(PlatformTable, table=True):
    """Conversation monitoring: an administrator flagged a chat (optionally one message of
    it) for review, with a reason; resolving it keeps the row."""

    __tablename__ = "chat_flags"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    chat_id: str = Field(foreign_key="chats.id", index=True, max_length=32, ondelete="CASCADE")
    message_id: str | None = Field(
        default=None, foreign_key="messages.id", max_length=32, ondelete="SET NULL"
    )
    reason: str = Field(default="", sa_type=Text)
    flagged_by: str | None = Field(
        default=None, foreign_key="users.id", max_length=32, ondelete="SET NULL"
    )
    created_at: datetime = _created()
    resolved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    resolved_by: str | None = Field(
        default=None, foreign_key="users.id", max_length=32, ondelete="SET NULL"
    )


class MessageFeedback(PlatformTable, table=True):
    """A user's thumbs up or down on an assistant answer, with an optional comment: one per
    answer (set again to change it). Exported as preference data for post-training."""

    __tablename__ = "message_feedback"
    __table_args__ = (CheckConstraint(_in("rating", FEEDBACK_RATINGS), name="rating"),)

    message_id: str = Field(
        foreign_key="messages.id", primary_key=True, max_length=32, ondelete="CASCADE"
    )
    user_id: str = Field(foreign_key="users.id", index=True, max_length=32, ondelete="CASCADE")
    rating: str = Field(max_length=8)
    comment: str = Field(default="", sa_type=Text)
    created_at: datetime = _created()
    updated_at: datetime = _created()


class ShareLink(PlatformTable, table=True):
    """A read-only public link to one chat; the token is shown once and stored hashed."""

    __tablename__ = "share_links"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    chat_id: str = Field(foreign_key="chats.id", index=True, max_length=32, ondelete="CASCADE")
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = _created()
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


# -- credits ---------------------------------------------------------------------------
class CreditAccount(PlatformTable, table=True):
    """A user's balance: changed only by `credits.CreditLedger`, next to a ledger entry."""

    __tablename__ = "credit_accounts"
    __table_args__ = (CheckConstraint("balance >= 0", name="balance_not_negative"),)

    user_id: str = Field(foreign_key="users.id", primary_key=True, max_length=32)
    balance: int = Field(default=0)
    updated_at: datetime = _created()


class CreditEntry(PlatformTable, table=True):
    """One line of the append-only ledger (the migration adds triggers refusing UPDATE and
    DELETE). `amount` is positive; `kind` says which way it moved the balance."""

    __tablename__ = "credit_ledger"
    __table_args__ = (
        CheckConstraint(_in("kind", LEDGER_KINDS), name="kind"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("balance_after >= 0", name="balance_after_not_negative"),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=32)
    kind: str = Field(max_length=16)
    amount: int
    balance_after: int
    reason: str = Field(max_length=200)
    refund_of: int | None = Field(default=None, foreign_key="credit_ledger.id", unique=True)
    created_at: datetime = _created()


class Plan(PlatformTable, table=True):
    """A billing plan: credits granted each calendar month (UTC) and token limits per day
    and per month (None: unlimited). At most one is the default new accounts get."""

    __tablename__ = "plans"
    __table_args__ = (
        CheckConstraint("monthly_credits >= 0", name="monthly_credits_not_negative"),
        CheckConstraint("daily_token_limit IS NULL OR daily_token_limit >= 0", name="daily_limit"),
        CheckConstraint(
            "monthly_token_limit IS NULL OR monthly_token_limit >= 0", name="monthly_limit"
        ),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    name: str = Field(max_length=64, unique=True)
    description: str = Field(default="", max_length=200)
    monthly_credits: int = Field(default=0)
    daily_token_limit: int | None = Field(default=None)
    monthly_token_limit: int | None = Field(default=None)
    is_default: bool = Field(default=False)
    created_at: datetime = _created()
    updated_at: datetime = _created()


class PlanGrant(PlatformTable, table=True):
    """A plan's monthly grant to one user: one per user and month (`period` "YYYY-MM"), so
    a retried or concurrent grant run cannot grant twice."""

    __tablename__ = "plan_grants"
    __table_args__ = (UniqueConstraint("user_id", "period"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=32)
    plan_id: str | None = Field(
        default=None, foreign_key="plans.id", max_length=32, ondelete="SET NULL"
    )
    period: str = Field(max_length=7)
    ledger_entry_id: int = Field(foreign_key="credit_ledger.id")
    created_at: datetime = _created()


# -- usage -----------------------------------------------------------------------------
class UsageRecord(PlatformTable, table=True):
    """What one request to a model used and cost: tokens from serving's `usage`, credits
    from the prices in force. Written when the request ends, whichever way it ends."""

    __tablename__ = "usage_records"
    __table_args__ = (
        CheckConstraint(_in("source", USAGE_SOURCES), name="source"),
        CheckConstraint(_in("status", USAGE_STATUSES), name="status"),
        CheckConstraint("credits >= 0", name="credits_not_negative"),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=32, ondelete="CASCADE")
    api_key_id: str | None = Field(
        default=None, foreign_key="api_keys.id", max_length=32, ondelete="SET NULL"
    )
    source: str = Field(max_length=16)
    model: str = Field(max_length=200)  # what the request asked for (alias or version)
    model_version: str | None = Field(default=None, max_length=200)  # what answered
    status: str = Field(max_length=16)
    prompt_tokens: int = Field(default=0)
    completion_tokens: int = Field(default=0)
    credits: int = Field(default=0)
    latency_ms: int = Field(default=0)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    variant: str | None = Field(default=None, max_length=16)  # A/B split: which side answered


# -- administration ----------------------------------------------------------------------
class AuditEntry(PlatformTable, table=True):
    """One administrator action: who, what, on what, with which details (JSON)."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    actor_id: str | None = Field(
        default=None, foreign_key="users.id", index=True, max_length=32, ondelete="SET NULL"
    )
    action: str = Field(max_length=64, index=True)
    target: str = Field(default="", max_length=200)
    detail: str = Field(default="{}", sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)


def _subject_checks() -> tuple[CheckConstraint, ...]:
    """An access rule's checks (fresh objects: a constraint belongs to one table)."""
    return (
        CheckConstraint("(role IS NULL) <> (user_id IS NULL)", name="one_subject"),
        CheckConstraint(f"role IS NULL OR {_in('role', ROLES)}", name="role"),
    )


class AccessRule(PlatformTable):
    """What every access rule has: its subject, a role or one user (exactly one of the
    two), and who made it when. A table of rules adds the column naming what is granted
    (`ModelAccessRule.model`, `KnowledgeAccessRule.knowledge_base`) and the checks of
    `_subject_checks()`; platform_api/access.py has the semantics."""

    id: int | None = Field(default=None, primary_key=True)
    role: str | None = Field(default=None, max_length=16)
    user_id: str | None = Field(
        default=None, foreign_key="users.id", index=True, max_length=32, ondelete="CASCADE"
    )
    created_at: datetime = _created()
    created_by: str | None = Field(
        default=None, foreign_key="users.id", max_length=32, ondelete="SET NULL"
    )


class ModelAccessRule(AccessRule, table=True):
    """Grants a role or one user a model: a serve alias (`champion`), a registered version
    (`orchard-chat/3`) or `*` for every one. A subject with no rule gets the defaults."""

    __tablename__ = "model_access_rules"
    __table_args__ = _subject_checks()

    model: str = Field(max_length=200)


class FeatureFlag(PlatformTable, table=True):
    """A feature switch: on for everyone (`enabled`, limited to `roles` when that JSON list
    is not empty) and always on for the user ids in `users` (JSON list)."""

    __tablename__ = "feature_flags"

    key: str = Field(primary_key=True, max_length=64)
    description: str = Field(default="", max_length=200)
    enabled: bool = Field(default=False)
    roles: str = Field(default="[]", sa_type=Text)
    users: str = Field(default="[]", sa_type=Text)
    updated_at: datetime = _created()
    updated_by: str | None = Field(
        default=None, foreign_key="users.id", max_length=32, ondelete="SET NULL"
    )


class TrafficSplit(PlatformTable, table=True):
    """A/B test of a registered model: the share (percent) of requests for its champion
    that the challenger answers instead. No row, or 0: the champion answers all."""

    __tablename__ = "traffic_splits"
    __table_args__ = (
        CheckConstraint("challenger_percent >= 0 AND challenger_percent <= 100", name="percent"),
    )

    model_name: str = Field(primary_key=True, max_length=200)
    challenger_percent: int = Field(default=0)
    updated_at: datetime = _created()
    updated_by: str | None = Field(
        default=None, foreign_key="users.id", max_length=32, ondelete="SET NULL"
    )


class OAuthLoginCode(PlatformTable, table=True):
    """The one-time code an OAuth sign-in hands the browser (in a URL fragment), which the UI
    exchanges for tokens: stored as SHA-256, valid 60 s, spent once (`used_at`)."""

    __tablename__ = "oauth_login_codes"

    code_hash: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=32, ondelete="CASCADE")
    provider: str = Field(max_length=64)
    created_at: datetime = _created()
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The login session the code opened: presenting the spent code again revokes it (the
    # code leaked), and while it is new it is a recent sign-in for accounts without a
    # password (reauth.py).
    session_id: str | None = Field(
        default=None, foreign_key="auth_sessions.id", index=True, max_length=32, ondelete="CASCADE"
    )


# -- knowledge: bases of uploaded files (docs/knowledge.md) -------------------------------
class KnowledgeBase(PlatformTable, table=True):
    """A user's collection of files to search and cite. Its chunks and vectors live in the
    vector store's collection `collection` (`kb_<id>` while NULL), made for the embedding
    model named here when the first file is indexed; re-embedding for a new model builds
    another collection beside it and switches this column when it is complete."""

    __tablename__ = "knowledge_bases"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=32, ondelete="CASCADE")
    name: str = Field(max_length=100)
    description: str = Field(default="", max_length=1000)
    embedding_model: str | None = Field(default=None, max_length=200)
    embedding_dimension: int | None = Field(default=None)
    collection: str | None = Field(default=None, max_length=63)
    created_at: datetime = _created()
    updated_at: datetime = _created()


class KnowledgeReEmbedJob(PlatformTable, table=True):
    """One run of re-embedding every knowledge base whose vectors are of another model
    than the platform's (platform_api/reembedding.py): running, then done or failed with
    the reason; bases and files counted as they are switched, chunks as they are embedded."""

    __tablename__ = "knowledge_reembed_jobs"
    __table_args__ = (CheckConstraint(_in("status", REEMBED_STATUSES), name="status"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    status: str = Field(default="running", max_length=16)
    embedding_model: str = Field(max_length=200)
    embedding_dimension: int | None = Field(default=None)
    bases_total: int = Field(default=0)
    bases_done: int = Field(default=0)
    files_total: int = Field(default=0)
    files_done: int = Field(default=0)
    chunks_done: int = Field(default=0)
    current_base_id: str | None = Field(default=None, max_length=32)
    error: str = Field(default="", sa_type=Text)
    started_by: str | None = Field(
        default=None, foreign_key="users.id", max_length=32, ondelete="SET NULL"
    )
    started_at: datetime = _created()
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class KnowledgeFile(PlatformTable, table=True):
    """An uploaded file and where its ingestion stands: queued → parsing → embedding →
    ready, or failed with the reason (`error`). The original is under
    `<home>/knowledge/files/<user id>/<file id>`."""

    __tablename__ = "knowledge_files"
    __table_args__ = (CheckConstraint(_in("status", KNOWLEDGE_FILE_STATUSES), name="status"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    knowledge_base_id: str = Field(
        foreign_key="knowledge_bases.id", index=True, max_length=32, ondelete="CASCADE"
    )
    user_id: str = Field(foreign_key="users.id", index=True, max_length=32, ondelete="CASCADE")
    filename: str = Field(max_length=200)
    media_type: str = Field(max_length=100)
    size_bytes: int
    sha256: str = Field(max_length=64)
    status: str = Field(default="queued", max_length=16)
    error: str = Field(default="", sa_type=Text)
    pages: int | None = Field(default=None)
    chunks: int = Field(default=0)
    created_at: datetime = _created()
    updated_at: datetime = _created()


class KnowledgeAccessRule(AccessRule, table=True):
    """Grants a role or one user a shared knowledge base (by slug, or `*` for every one),
    with the semantics of `ModelAccessRule`: a subject with no rule may use every shared
    base, its first rule restricts it to what its rules name (platform_api/access.py)."""

    __tablename__ = "knowledge_access_rules"
    __table_args__ = _subject_checks()

    knowledge_base: str = Field(max_length=40)


class Memory(PlatformTable, table=True):
    """A fact about a user that later chats are told (platform_api/memory.py): stated in
    a chat turn and extracted after it, or written by the user. Only its owner reads it.
    `embedding` is its vector (float32, little-endian) of the model named beside it; a
    disabled memory is kept but never put into a prompt."""

    __tablename__ = "memories"
    __table_args__ = (
        UniqueConstraint("user_id", "content"),
        CheckConstraint(_in("source", MEMORY_SOURCES), name="source"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=32, ondelete="CASCADE")
    content: str = Field(max_length=500)
    enabled: bool = Field(default=True)
    source: str = Field(max_length=16)
    message_id: str | None = Field(
        default=None, foreign_key="messages.id", max_length=32, ondelete="SET NULL"
    )
    embedding: bytes = Field(sa_type=LargeBinary)
    embedding_model: str = Field(max_length=200)
    embedding_dimension: int
    created_at: datetime = _created()
    updated_at: datetime = _created()


class ChatKnowledge(PlatformTable, table=True):
    """A knowledge base a chat retrieves from: one the user attached, or the chat's own
    (`chat_files`: the files uploaded into the chat, deleted with the chat)."""

    __tablename__ = "chat_knowledge"

    chat_id: str = Field(
        foreign_key="chats.id", primary_key=True, max_length=32, ondelete="CASCADE"
    )
    knowledge_base_id: str = Field(
        foreign_key="knowledge_bases.id", primary_key=True, index=True, max_length=32,
        ondelete="CASCADE",
    )  # fmt: skip
    chat_files: bool = Field(default=False)
    created_at: datetime = _created()


class ChatSharedKnowledge(PlatformTable, table=True):
    """A shared knowledge base (by slug: the crawled site) a chat retrieves from. Used only
    while the access rules let the chat's user use it (platform_api/shared_knowledge.py)."""

    __tablename__ = "chat_shared_knowledge"

    chat_id: str = Field(
        foreign_key="chats.id", primary_key=True, max_length=32, ondelete="CASCADE"
    )
    slug: str = Field(primary_key=True, max_length=40)
    created_at: datetime = _created()


class KnowledgeFlag(PlatformTable, table=True):
    """A chunk whose text reads like instructions to the model ("ignore previous
    instructions..."), found at ingestion (orchard/knowledge/injection.py): listed to
    administrators; the chunk stays data and never reaches a system prompt."""

    __tablename__ = "knowledge_flags"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=32, ondelete="CASCADE")
    knowledge_base_id: str = Field(
        foreign_key="knowledge_bases.id", max_length=32, ondelete="CASCADE"
    )
    file_id: str = Field(
        foreign_key="knowledge_files.id", index=True, max_length=32, ondelete="CASCADE"
    )
    chunk_id: str = Field(max_length=32)
    page: int | None = Field(default=None)
    rule: str = Field(max_length=64)  # which pattern matched
    excerpt: str = Field(sa_type=Text)  # the matching text with some context
    created_at: datetime = _created()
