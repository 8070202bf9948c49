"""What the API accepts and returns. Tables are in `models.py`.

Every request schema forbids unknown fields, so a client cannot set what the endpoint
does not offer (`{"role": "admin"}` on register or profile update is a 422 naming the
field), and every response schema lists its fields, so a table column (a password hash,
a key hash) cannot leak by accident.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from platform_api.deps import API_KEY_SCOPES, DEFAULT_API_KEY_SCOPES, ApiKeyScope
from platform_api.security import has_usable_password

# Limits: named here, enforced by the schemas below.
PASSWORD_MIN = 10
PASSWORD_MAX = 256  # Argon2 takes any length; a bound keeps a request's cost bounded
NAME_MAX = 100
TITLE_MAX = 200
SYSTEM_PROMPT_MAX = 8_000
MESSAGE_MAX = 32_000
MAX_TOKENS_LIMIT = 4_096
TEMPERATURE_MAX = 2.0
CREDIT_GRANT_MAX = 1_000_000_000
OFFSET_MAX = 1_000_000_000  # list offsets: far past any table, well inside a 64-bit integer
FEEDBACK_COMMENT_MAX = 2_000
TOKEN_LIMIT_MAX = 10**12
REASON_MAX = 2_000  # an administrator's reason for flagging a conversation

Tone = Literal["neutral", "friendly", "formal", "concise"]
Role = Literal["user", "admin"]
UserStatus = Literal["active", "suspended", "banned"]


def _totp_code(default=...):
    return Field(default, pattern=r"^\d{6}$", description="The authenticator app's 6 digits.")


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Names and titles lose surrounding blanks; passwords and message text are kept as sent.
Trimmed = Annotated[str, StringConstraints(strip_whitespace=True)]


class Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# -- auth ------------------------------------------------------------------------------
class RegisterRequest(Request):
    email: EmailStr
    password: str = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)
    display_name: Trimmed = Field("", max_length=NAME_MAX)


class LoginRequest(Request):
    email: Trimmed = Field(max_length=320)
    password: str = Field(max_length=PASSWORD_MAX)
    totp_code: str | None = _totp_code(None)


class RefreshRequest(Request):
    refresh_token: str = Field(min_length=1, max_length=200)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")


class TotpSetup(BaseModel):
    secret: str = Field(description="Base32 secret for the authenticator app.")
    otpauth_uri: str = Field(description="The same secret as an otpauth:// URI (QR code).")


class TotpConfirm(Request):
    code: str = _totp_code()


class TotpDisable(Request):
    password: str | None = Field(
        None, max_length=PASSWORD_MAX, description="Required when the account has a password."
    )
    code: str = _totp_code()


# -- users -----------------------------------------------------------------------------
class UserPublic(Public):
    id: str
    email: str
    display_name: str
    role: Role
    status: UserStatus
    totp_enabled: bool
    created_at: datetime
    deleted_at: datetime | None = Field(None, description="Set when the account was erased.")
    plan_id: str | None = Field(None, description="null: the default plan.")
    daily_token_limit: int | None = Field(None, description="Own limit; null: the plan's.")
    monthly_token_limit: int | None = Field(None, description="Own limit; null: the plan's.")
    limits_reset_at: datetime | None = Field(
        None, description="Usage before this does not count toward the limits."
    )
    # Read from the row's password_hash, never sent: false for an account an OAuth sign-in
    # made (it confirms sensitive actions with a recent sign-in instead, see reauth.py).
    has_password: bool = Field(
        False,
        validation_alias=AliasChoices("has_password", "password_hash"),
        description="false: the account cannot log in with a password (OAuth sign-in only).",
    )

    @field_validator("has_password", mode="before")
    @classmethod
    def _usable(cls, value: object) -> bool:
        return value if isinstance(value, bool) else has_usable_password(value)


class UserMe(UserPublic):
    """The caller's own account: with the OAuth providers it is linked to."""

    oauth_providers: list[str] = Field(
        default_factory=list, description="Providers it can sign in with, last used first."
    )
    feedback_for_training: bool = Field(
        True, description="Use my feedback to improve the model (on by default)."
    )
    memory_enabled: bool = Field(
        True, description="Long-term memory: remember facts I state, recall them in chats."
    )


class ProfileUpdate(Request):
    display_name: Trimmed = Field(max_length=NAME_MAX)


class PasswordChange(Request):
    current_password: str | None = Field(
        None,
        max_length=PASSWORD_MAX,
        description="Required when the account has one; an account without (OAuth sign-in) "
        "sets its first password after a recent sign-in.",
    )
    new_password: str = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)


class AdminUserUpdate(Request):
    """Only the fields sent change; for the plan and the limits, null is a value: the
    default plan, and the plan's own limit."""

    role: Role | None = None
    status: UserStatus | None = None
    plan_id: str | None = Field(None, max_length=32, description="null: the default plan.")
    daily_token_limit: int | None = Field(
        None, ge=0, le=TOKEN_LIMIT_MAX, description="Tokens per UTC day; null: the plan's."
    )
    monthly_token_limit: int | None = Field(
        None, ge=0, le=TOKEN_LIMIT_MAX, description="Tokens per UTC month; null: the plan's."
    )


class ApiKeyCreate(Request):
    name: Trimmed = Field(min_length=1, max_length=NAME_MAX)
    scopes: list[ApiKeyScope] = Field(
        default_factory=lambda: list(DEFAULT_API_KEY_SCOPES),
        min_length=1,
        max_length=len(API_KEY_SCOPES),
        description="What the key may do (default: inference, the /v1 gateway): "
        + "; ".join(f"{name}: {what}" for name, what in API_KEY_SCOPES.items())
        + ". Never: the profile, password, 2FA, API keys, account export or deletion.",
    )

    @field_validator("scopes")
    @classmethod
    def _distinct_scopes(cls, value: list[str]) -> list[str]:
        return sorted(set(value), key=list(API_KEY_SCOPES).index)


class ApiKeyPublic(Public):
    id: str
    name: str
    prefix: str
    scopes: list[ApiKeyScope]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @field_validator("scopes", mode="before")
    @classmethod
    def _split_scopes(cls, value: str | list[str]) -> list[str]:
        return value.split() if isinstance(value, str) else value  # stored space-separated


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="The key itself: shown this once, stored only as a hash.")


# -- chats -----------------------------------------------------------------------------
class FolderWrite(Request):
    name: Trimmed = Field(min_length=1, max_length=NAME_MAX)


class FolderPublic(Public):
    id: str
    name: str
    created_at: datetime


class ChatSettings(Request):
    model_alias: str | None = Field(None, min_length=1, max_length=64)
    temperature: float | None = Field(None, ge=0.0, le=TEMPERATURE_MAX)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    system_prompt: str | None = Field(None, max_length=SYSTEM_PROMPT_MAX)
    tone: Tone | None = None


class ChatCreate(ChatSettings):
    title: Trimmed = Field("New chat", min_length=1, max_length=TITLE_MAX)
    folder_id: str | None = None
    pinned: bool = False


class ChatUpdate(ChatSettings):
    """Only the fields sent change; `"folder_id": null` takes the chat out of its folder."""

    title: Trimmed | None = Field(None, min_length=1, max_length=TITLE_MAX)
    folder_id: str | None = None
    pinned: bool | None = None


class ChatPublic(Public):
    id: str
    title: str
    folder_id: str | None
    pinned: bool
    model_alias: str
    temperature: float
    max_tokens: int
    system_prompt: str
    tone: Tone
    created_at: datetime
    updated_at: datetime


class MessageCreate(Request):
    content: str = Field(min_length=1, max_length=MESSAGE_MAX)


class MessageRating(Public):
    """The caller's own rating of an answer, as `GET /chats/{id}/messages` shows it."""

    rating: Literal["up", "down"]
    comment: str


class Citation(BaseModel):
    """A numbered source of an answer: a passage of one of the user's files."""

    n: int = Field(description="Its number in the answer ([1], [2], ...).")
    chunk_id: str
    file_id: str
    knowledge_base_id: str
    source: str = Field(description="The file's name.")
    page: int | None = None
    heading: str = ""
    snippet: str = Field(description="The passage's start, for a one-line source list.")
    text: str = Field(description="The passage as the model was given it.")


class MessagePublic(Public):
    id: str
    chat_id: str
    seq: int
    role: Literal["user", "assistant"]
    content: str
    status: Literal["streaming", "complete", "partial", "failed"]
    error: str | None
    model_version: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: int | None
    created_at: datetime
    updated_at: datetime
    superseded_at: datetime | None = Field(
        None,
        description="When a regenerated answer or an edited question replaced this message "
        "(only the data export shows such messages).",
    )
    feedback: MessageRating | None = Field(
        None,
        description="The caller's thumbs up/down on this answer (listing a chat's messages "
        "fills it; elsewhere null).",
    )
    credits: int | None = Field(
        None, description="What the answer cost, once it stopped streaming (assistant only)."
    )
    cost_usd: float | None = Field(
        None,
        description="`credits` × the credit price in US dollars (where the API computes it: "
        "listing a chat's messages and a turn's final event).",
    )
    citations: list[Citation] = Field(
        default_factory=list,
        description="The passages retrieved from the chat's knowledge for this answer, "
        "numbered as the model saw them (assistant messages of chats with knowledge).",
    )

    @field_validator("citations", mode="before")
    @classmethod
    def _no_citations(cls, value):
        return [] if value is None else value


# -- a chat over a WebSocket (routes/chat_socket.py): the client's frames ---------------------
class SocketAuth(Request):
    type: Literal["auth"]
    token: str = Field(min_length=1, max_length=4_096, description="Access token or API key.")


class SocketSend(MessageCreate):
    type: Literal["send"]


class SocketRegenerate(Request):
    type: Literal["regenerate"]
    message_id: str = Field(min_length=1, max_length=64)


class SocketEdit(MessageCreate):
    type: Literal["edit"]
    message_id: str = Field(min_length=1, max_length=64)


class SocketStop(Request):
    type: Literal["stop"]


SOCKET_FRAMES: dict[str, type[Request]] = {
    "auth": SocketAuth,
    "send": SocketSend,
    "regenerate": SocketRegenerate,
    "edit": SocketEdit,
    "stop": SocketStop,
}


class SearchHit(BaseModel):
    chat: ChatPublic
    snippet: str = Field(description="Where the text was found: the title or a message.")


class ShareLinkPublic(Public):
    id: str
    chat_id: str
    created_at: datetime
    revoked_at: datetime | None


class ShareLinkCreated(ShareLinkPublic):
    token: str = Field(description="The link's secret: shown this once.")
    path: str = Field(description="The public read-only view, relative to the API root.")


class SharedMessage(Public):
    role: Literal["user", "assistant"]
    content: str
    status: Literal["streaming", "complete", "partial", "failed"]
    created_at: datetime


class SharedChat(BaseModel):
    title: str
    messages: list[SharedMessage]


# -- credits ---------------------------------------------------------------------------
class CreditEntryPublic(Public):
    id: int
    kind: Literal["grant", "debit", "refund"]
    amount: int
    balance_after: int
    reason: str
    refund_of: int | None
    created_at: datetime


class PlanPublic(Public):
    id: str
    name: str
    description: str
    monthly_credits: int = Field(description="Granted once per calendar month (UTC).")
    daily_token_limit: int | None = Field(description="null: unlimited.")
    monthly_token_limit: int | None = Field(description="null: unlimited.")
    is_default: bool
    created_at: datetime
    updated_at: datetime


class TokenLimits(BaseModel):
    """The limits in force for a user: their own, else their plan's (null: unlimited)."""

    daily_token_limit: int | None
    monthly_token_limit: int | None


class CreditStatement(BaseModel):
    balance: int
    balance_usd: float = Field(0.0, description="`balance` × `credit_price_usd`.")
    credit_price_usd: float = Field(0.0, description="What one credit costs in US dollars.")
    entries: list[CreditEntryPublic] = Field(description="Newest first.")
    plan: PlanPublic | None = Field(None, description="The caller's plan (null: none).")
    limits: TokenLimits | None = None


class CreditGrant(Request):
    amount: int = Field(gt=0, le=CREDIT_GRANT_MAX)
    reason: Trimmed = Field(min_length=1, max_length=200)


class UsageRow(BaseModel):
    key: str = Field(description="The UTC day (YYYY-MM-DD) or the model asked for.")
    requests: int
    prompt_tokens: int
    completion_tokens: int
    credits: int
    cost_usd: float = Field(0.0, description="`credits` × the credit price in US dollars.")


class UsageHistory(BaseModel):
    by: Literal["day", "model"]
    since: str = Field(description="First UTC day counted.")
    rows: list[UsageRow] = Field(description="Oldest day first, or models by name.")
    tokens_today: int = Field(0, description="Counted toward the daily limit (UTC day).")
    tokens_this_month: int = Field(0, description="Counted toward the monthly limit.")
    limits: TokenLimits | None = None
    total: UsageRow
    credit_price_usd: float = Field(0.0, description="What one credit costs in US dollars.")


class FeedbackSet(Request):
    rating: Literal["up", "down"]
    comment: Trimmed = Field("", max_length=FEEDBACK_COMMENT_MAX)


class FeedbackPublic(Public):
    message_id: str
    rating: Literal["up", "down"]
    comment: str
    created_at: datetime
    updated_at: datetime


class FeedbackConsent(Request):
    feedback_for_training: bool = Field(
        description="Use my feedback (ratings, regenerations, edits) to improve the model."
    )


class MemorySwitch(Request):
    memory_enabled: bool = Field(
        description="Remember facts I state in chats and recall them in later chats."
    )


class AccountDelete(Request):
    password: str | None = Field(
        None,
        min_length=1,
        max_length=PASSWORD_MAX,
        description="Required when the account has a password; without: a recent sign-in.",
    )
    totp_code: str | None = _totp_code(None)


class ModelVersionPublic(BaseModel):
    version: str
    aliases: list[str]
    created_at: datetime
    status: str
    run_id: str | None
    metrics: dict[str, str] = Field(description="The version's eval.* tags, without the prefix.")
    lineage: dict[str, str] = Field(description="The orchard.* tags: manifests and runs behind it.")
    description: str
    review: dict[str, Any] | None = Field(
        None, description="The latest A/B review of this version (tag ab.review), if any."
    )


class ModelRegistryPublic(BaseModel):
    name: str
    aliases: dict[str, str]
    champion_history: list[str] = Field(description="Earlier champions, oldest first.")
    versions: list[ModelVersionPublic] = Field(description="Newest first.")


class Promotion(Request):
    version: str = Field(pattern=r"^[1-9][0-9]{0,9}$", description="A registered version number.")


class PromotionResult(BaseModel):
    champion: str
    previous: str | None = Field(description="The champion it replaced (none on a first).")


class AuditEntryPublic(BaseModel):
    id: int
    actor_id: str | None
    action: str
    target: str
    detail: dict
    created_at: datetime


# -- administrators: usage analytics, training jobs, recent errors -------------------------
ANALYTICS_DAYS_MAX = 366
POPULAR_MODELS = 10
JOB_CONF_MAX = 65_536  # characters of a trigger's conf as JSON
JobDag = Literal["orchard_build", "orchard_posttrain"]  # the DAGs admins may trigger here


class AnalyticsRow(UsageRow):
    key: str = Field(description="The UTC day (YYYY-MM-DD), the user's id or the model asked for.")
    email: str | None = Field(None, description="The user's e-mail (by=user only).")
    users: int = Field(description="Distinct users with a request.")
    cost_usd: float = Field(0.0, description="`credits` × the credit price in US dollars.")


class ActiveUsers(BaseModel):
    day: str = Field(description="A UTC day (YYYY-MM-DD) with at least one request.")
    users: int = Field(description="Distinct users with a request that day.")


class PopularModel(BaseModel):
    model: str = Field(description="The model asked for (alias or pinned version).")
    requests: int
    users: int
    tokens: int = Field(description="Prompt plus completion tokens.")


class UsageAnalytics(BaseModel):
    by: Literal["day", "user", "model"]
    days: int
    since: str = Field(description="First UTC day counted.")
    rows: list[AnalyticsRow] = Field(
        description="Oldest day first; users and models by tokens used, most first."
    )
    total: AnalyticsRow = Field(
        description="The whole window: `credits` is the estimated cost, `users` the distinct "
        "active users."
    )
    active_users: list[ActiveUsers] = Field(description="Per UTC day, oldest first.")
    popular_models: list[PopularModel] = Field(description="Most requested first.")


class JobTrigger(Request):
    dag: JobDag
    conf: dict[str, Any] = Field(
        default_factory=dict,
        description="The run's Params (the DAG's trigger form), validated by Airflow.",
        # A bound JSON Schema cannot state (the validator below): published for clients.
        json_schema_extra={"x-orchard-max-json-length": JOB_CONF_MAX},
    )

    @field_validator("conf")
    @classmethod
    def _bounded(cls, conf: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(conf, separators=(",", ":"), ensure_ascii=False)) > JOB_CONF_MAX:
            raise ValueError(f"conf is at most {JOB_CONF_MAX} characters of JSON")
        return conf


class JobRun(BaseModel):
    dag_id: str
    run_id: str
    state: str = Field(description="Airflow's: queued, running, success, failed.")
    run_type: str | None = None
    queued_at: datetime | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    conf: dict[str, Any] = Field(default_factory=dict)
    airflow_url: str = Field(description="The run in Airflow's UI.")
    triggered_by: str | None = Field(
        None, description="The administrator who triggered it here (from the audit log)."
    )


class JobRuns(BaseModel):
    runs: list[JobRun] = Field(description="Newest first.")
    airflow_url: str = Field(description="Airflow's UI.")
    mlflow_url: str = Field(description="MLflow's UI: the runs' experiments and the registry.")


class JobTriggered(JobRun):
    dag_paused: bool = Field(description="The DAG is paused in Airflow: the run waits queued.")
    mlflow_url: str


class RecentError(BaseModel):
    time: datetime
    logger: str
    message: str
    request_id: str | None
    method: str | None
    path: str | None = Field(description="The route template, or the path when none matched.")
    exception: str | None = Field(description="The exception's type, when one was logged.")


# -- sign-in with an OAuth provider (routes/oauth.py) -----------------------------------------
class OAuthProviderPublic(BaseModel):
    name: str
    label: str


class OAuthExchange(Request):
    code: str = Field(min_length=1, max_length=200)
    totp_code: str | None = Field(None, pattern=r"^\d{6}$", description="With 2FA on.")


# -- what a message would cost (routes/credits.py) --------------------------------------------
class CostEstimate(BaseModel):
    """The most sending a message can cost: the same bound a turn reserves."""

    prompt_tokens_max: int
    completion_tokens_max: int = Field(description="The chat's max_tokens.")
    credits_max: int
    cost_usd_max: float
    balance: int


# -- billing plans, for administrators (routes/plans.py) --------------------------------------
class PlanUpdate(Request):
    """Only the fields sent change; a null limit means unlimited."""

    name: Trimmed | None = Field(None, min_length=1, max_length=64)
    description: Trimmed | None = Field(None, max_length=200)
    monthly_credits: int | None = Field(None, ge=0, le=CREDIT_GRANT_MAX)
    daily_token_limit: int | None = Field(None, ge=0, le=TOKEN_LIMIT_MAX)
    monthly_token_limit: int | None = Field(None, ge=0, le=TOKEN_LIMIT_MAX)
    is_default: bool | None = None


class PlanCreate(PlanUpdate):
    name: Trimmed = Field(min_length=1, max_length=64)


# -- model access rules and feature flags (routes/admin_access.py) ----------------------------
class AccessRuleCreate(Request):
    role: Role | None = None
    user_id: str | None = Field(None, max_length=32)
    model: str = Field(
        min_length=1,
        max_length=200,
        description="A serve alias, the model name, `<model name>/<version>`, the embedding "
        "model (/v1/embeddings), or `*`.",
    )

    @model_validator(mode="after")
    def _one_subject(self) -> AccessRuleCreate:
        if (self.role is None) == (self.user_id is None):
            raise ValueError("send either role or user_id, not both and not neither")
        return self


class AccessRulePublic(Public):
    id: int
    role: str | None
    user_id: str | None
    model: str
    created_at: datetime
    created_by: str | None


class FeatureFlagWrite(Request):
    description: str = Field("", max_length=200)
    enabled: bool = False
    roles: list[Role] = Field(
        default_factory=list, description="Only these roles when enabled (empty: everyone)."
    )
    users: list[str] = Field(
        default_factory=list, max_length=1000, description="User ids it is always on for."
    )


class FeatureFlagPublic(Public):
    key: str
    description: str
    enabled: bool
    roles: list[str]
    users: list[str]
    stored: bool  # false: no row, the flag has its built-in default
    updated_at: datetime | None
    updated_by: str | None


class ChatModels(Public):
    aliases: list[str]  # what a chat's model_alias may be set to
    default: str | None  # what a new chat gets


class Features(Public):
    features: list[str]


# -- the champion/challenger A/B split (routes/admin_models.py) -------------------------------
class SplitWrite(Request):
    challenger_percent: int = Field(
        ge=0, le=100, description="Share (%) of the champion's requests the challenger answers."
    )


class GuardrailAlert(BaseModel):
    """The guardrail cut the challenger's share to 0 (an audit entry `model.guardrail`)."""

    at: datetime
    metric: str  # error_rate or thumbs_down_rate
    rate: float  # what was observed
    low: float  # its Wilson interval's lower end, which crossed the bound
    bound: float
    count: int  # answers (or ratings) it was measured on
    previous_percent: int
    version: str | None  # the challenger version, when known


class SplitPublic(BaseModel):
    model_name: str
    challenger_percent: int
    updated_at: datetime | None
    updated_by: str | None
    guardrail: GuardrailAlert | None = Field(
        None, description="Set while the last change of the split was the guardrail's cut."
    )


class VariantResult(BaseModel):
    variant: str
    messages: int  # answers given on this side (regenerated ones included)
    thumbs_up: int
    thumbs_down: int
    mean_completion_tokens: float | None
    mean_latency_ms: float | None
    gateway_requests: int = 0  # OpenAI-gateway requests for the champion sent to this side
    gateway_mean_completion_tokens: float | None = None  # of those that completed


class SplitResults(BaseModel):
    split: SplitPublic
    since: datetime | None
    variants: list[VariantResult]


class SideStats(BaseModel):
    """One side's counts for the A/B review (orchard.ab_stats.SideCounts): chat answers
    (regenerated ones included) plus the gateway's requests for the champion."""

    variant: str
    answers: int
    rated: int
    thumbs_up: int
    thumbs_down: int
    regenerated: int  # answers a regeneration or an edited question replaced
    stopped: int  # answers the user stopped or left (partial)
    failed: int  # answers and gateway requests that failed
    latency_ms_mean: float | None
    latency_ms_mean_sq: float | None
    credits_mean: float | None
    credits_mean_sq: float | None
    chat_answers: int  # the chat answers alone: what latency and credits are means of
    ttft_answers: int = 0  # the chat answers that got a first token: what TTFT is a mean of
    ttft_ms_mean: float | None = None  # time to first token (send to first piece of text)
    ttft_ms_mean_sq: float | None = None


class SplitStats(BaseModel):
    split: SplitPublic
    since: datetime | None
    sides: list[SideStats]


class LoopSplit(BaseModel):
    started: bool  # false: nothing to start (the reason says why)
    reason: str
    version: str | None
    split: SplitPublic


class CardLink(BaseModel):
    label: str
    url: str | None  # None: nothing to link to (shown as text)


class CardRun(BaseModel):
    step: str
    manifest: str  # the manifest's directory name, not its local path
    mlflow: CardLink | None
    airflow: CardLink | None


class CardMetric(BaseModel):
    name: str  # task/metric
    value: str  # 3 significant figures
    champion: str | None  # the champion's value of the same metric, when it has one


class ModelCardPublic(BaseModel):
    """A registered version's model card (orchard.model_card), also an MLflow artifact."""

    version: str
    aliases: list[str]
    model_step: str | None
    tokenizer: str | None
    data: dict[str, str] = Field(description="Training data behind it: name -> counts.")
    runs: list[CardRun]
    metrics: list[CardMetric]
    decontamination: dict[str, str]
    feedback_datasets: list[str]
    review: dict[str, Any] | None = Field(
        None, description="The latest A/B review (orchard.ab_stats.review), if any."
    )
    markdown: str
    artifact: str | None = Field(None, description="The card's MLflow artifact URI, once logged.")


# -- conversation monitoring, for administrators (routes/admin_monitoring.py) -----------------
class UserRef(Public):
    id: str
    email: str


class FlagCreate(Request):
    reason: Trimmed = Field(min_length=1, max_length=REASON_MAX, description="Why it needs review.")
    message_id: str | None = Field(None, max_length=32, description="One message of the chat.")


class FlagPublic(BaseModel):
    id: str
    chat_id: str
    message_id: str | None
    reason: str
    flagged_by: UserRef | None = Field(description="Null once that account is gone.")
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: UserRef | None


class ConversationSummary(BaseModel):
    id: str
    title: str
    user: UserRef
    model_alias: str
    message_count: int = Field(description="Messages the chat shows (superseded ones not).")
    updated_at: datetime
    open_flags: int
    snippet: str | None = Field(None, description="With `q`: where the text was found.")


class ConversationDetail(BaseModel):
    chat: ChatPublic
    user: UserRef
    messages: list[MessagePublic] = Field(
        description="In order, superseded ones too (their `superseded_at` is set)."
    )
    flags: list[FlagPublic] = Field(description="Newest first, resolved ones too.")


# -- knowledge bases ---------------------------------------------------------------------
KNOWLEDGE_QUERY_MAX = 2_000
KNOWLEDGE_HITS_MAX = 20


class KnowledgeBaseWrite(Request):
    name: Trimmed = Field(min_length=1, max_length=NAME_MAX)
    description: Trimmed = Field("", max_length=1_000)


class KnowledgeBasePublic(Public):
    id: str
    name: str
    description: str
    embedding_model: str | None  # set when the first file is indexed
    embedding_dimension: int | None
    created_at: datetime
    updated_at: datetime


KnowledgeFileStatus = Literal["queued", "parsing", "embedding", "ready", "failed"]


class KnowledgeFilePublic(Public):
    id: str
    knowledge_base_id: str
    filename: str
    media_type: str
    size_bytes: int
    status: KnowledgeFileStatus
    error: str  # why it failed ("" unless failed)
    pages: int | None
    chunks: int
    created_at: datetime
    updated_at: datetime


class KnowledgeChunkPublic(Public):
    id: str
    file_id: str
    seq: int
    text: str
    source: str  # the file's name
    page: int | None
    heading: str


class SharedKnowledgeBasePublic(BaseModel):
    """A knowledge base a pipeline published for everyone (the crawled site)."""

    slug: str
    title: str
    embedding_model: str
    embedding_dimension: int
    documents: int
    chunks: int
    published_at: str


class ChatKnowledgeSet(Request):
    knowledge_base_ids: list[str] = Field(
        max_length=20, description="The caller's knowledge bases this chat retrieves from."
    )
    shared_knowledge_bases: list[str] | None = Field(
        None,
        max_length=20,
        description="Slugs of the shared knowledge bases (the crawled site) this chat "
        "retrieves from, each one the caller may use; left out: unchanged.",
    )


class ChatKnowledgePublic(BaseModel):
    knowledge_bases: list[KnowledgeBasePublic] = Field(
        description="The knowledge bases the user attached to the chat."
    )
    files: list[KnowledgeFilePublic] = Field(description="The files uploaded into the chat.")
    shared_knowledge_bases: list[SharedKnowledgeBasePublic] = Field(
        default_factory=list,
        description="The shared knowledge bases the chat uses (those the caller may use).",
    )


class KnowledgeFlagPublic(Public):
    """A chunk with instruction-like text, found at ingestion (for administrators)."""

    id: str
    user_id: str
    user_email: str = ""
    knowledge_base_id: str
    file_id: str
    filename: str = ""
    chunk_id: str
    page: int | None
    rule: str
    excerpt: str
    created_at: datetime


class ReEmbedJobPublic(Public):
    """A re-embedding job (platform_api/reembedding.py): `running`, then `done` or
    `failed` with `error`; `current_base_id` while a base is being rebuilt."""

    id: str
    status: str
    embedding_model: str
    embedding_dimension: int | None
    bases_total: int
    bases_done: int
    files_total: int
    files_done: int
    chunks_done: int
    current_base_id: str | None
    error: str
    started_by: str | None
    started_at: datetime
    finished_at: datetime | None


class StaleKnowledgeBase(Public):
    """A knowledge base whose vectors are of another model than the platform's."""

    id: str
    user_id: str
    name: str
    embedding_model: str | None
    embedding_dimension: int | None


class ReEmbedStatus(BaseModel):
    embedding_model: str  # what the platform embeds with now
    job: ReEmbedJobPublic | None  # the newest job, if any ran
    stale: list[StaleKnowledgeBase]  # bases still on another model


class KnowledgeSearch(Request):
    query: str = Field(min_length=1, max_length=KNOWLEDGE_QUERY_MAX)
    k: int = Field(5, ge=1, le=KNOWLEDGE_HITS_MAX)
    file_ids: list[str] | None = Field(None, max_length=100)


class KnowledgeHit(BaseModel):
    score: float
    chunk: KnowledgeChunkPublic


class ServingHealth(BaseModel):
    """Serving over the last 5 minutes, from Prometheus; null where there is no traffic."""

    requests_per_second: float | None = None
    error_ratio: float | None = Field(None, description="Share of requests answered with a 5xx.")
    ttft_p95_seconds: float | None = Field(
        None, description="Time to first token, 95th percentile."
    )
    queue_depth: float | None = Field(None, description="Requests waiting for a batch slot, now.")


class TargetHealth(BaseModel):
    job: str = Field(description="The service Prometheus scrapes: ray, api, mlflow, airflow…")
    up: bool


class OpsLinks(BaseModel):
    grafana: str | None = Field(None, description="Orchard's dashboards folder (when configured).")
    prometheus: str
    airflow: str
    mlflow: str
    ray: str


class OpsHealth(BaseModel):
    available: bool = Field(description="Prometheus answered.")
    detail: str | None = Field(None, description="Why not, when it did not.")
    serving: ServingHealth
    targets: list[TargetHealth]
    firing_alerts: list[str] = Field(description="Names of the alerts firing now.")
    links: OpsLinks


MEMORY_CHARS = 500
MemorySource = Literal["rules", "model", "user"]


class MemoryPublic(Public):
    id: str
    content: str
    enabled: bool  # a disabled memory is kept but never put into a prompt
    source: MemorySource  # extracted from a chat (rules, model) or written by the user
    message_id: str | None  # the chat message it was extracted from
    embedding_model: str
    embedding_dimension: int
    created_at: datetime
    updated_at: datetime


class MemoryCreate(Request):
    content: Trimmed = Field(min_length=1, max_length=MEMORY_CHARS)


class MemoryUpdate(Request):
    content: Trimmed | None = Field(None, min_length=1, max_length=MEMORY_CHARS)
    enabled: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> MemoryUpdate:
        if self.content is None and self.enabled is None:
            raise ValueError("send content, enabled or both")
        return self


class KnowledgeAccessRuleCreate(Request):
    role: Role | None = None
    user_id: str | None = Field(None, max_length=32)
    knowledge_base: str = Field(
        min_length=1,
        max_length=40,
        description="A shared knowledge base's slug (GET /shared-knowledge), or `*`.",
    )

    @model_validator(mode="after")
    def _one_subject(self) -> KnowledgeAccessRuleCreate:
        if (self.role is None) == (self.user_id is None):
            raise ValueError("send either role or user_id, not both and not neither")
        return self


class KnowledgeAccessRulePublic(Public):
    id: int
    role: str | None
    user_id: str | None
    knowledge_base: str
    created_at: datetime
    created_by: str | None
