// Shapes returned by the platform API (platform_api/schemas.py).

export type Role = "user" | "admin";
export type UserStatus = "active" | "suspended" | "banned";
export type Tone = "neutral" | "friendly" | "formal" | "concise";
export type MessageStatus = "streaming" | "complete" | "partial" | "failed";

export interface User {
  id: string;
  email: string;
  display_name: string;
  role: Role;
  status: UserStatus;
  totp_enabled: boolean;
  created_at: string;
  deleted_at: string | null;
  /** null: the default plan. */
  plan_id?: string | null;
  /** The user's own limits (null: the plan's). */
  daily_token_limit?: number | null;
  monthly_token_limit?: number | null;
  /** Usage before this does not count toward the limits. */
  limits_reset_at?: string | null;
  /** false: an account an OAuth sign-in made, with no password (yet). */
  has_password?: boolean;
  /** GET/PATCH /users/me only: the linked OAuth providers, last used first. */
  oauth_providers?: string[];
}

export interface TokenPair {
  access_token: string;
  refresh_token: string;
  token_type: "bearer";
  expires_in: number;
}

export interface TotpSetup {
  secret: string;
  otpauth_uri: string;
}

export interface Folder {
  id: string;
  name: string;
  created_at: string;
}

export interface Chat {
  id: string;
  title: string;
  folder_id: string | null;
  pinned: boolean;
  model_alias: string;
  temperature: number;
  max_tokens: number;
  system_prompt: string;
  tone: Tone;
  created_at: string;
  updated_at: string;
}

export interface Message {
  id: string;
  chat_id: string;
  seq: number;
  role: "user" | "assistant";
  content: string;
  status: MessageStatus;
  error: string | null;
  model_version: string | null;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  latency_ms: number | null;
  created_at: string;
  updated_at: string;
  /** Set on a message a regenerate or an edit replaced (only the data export shows those). */
  superseded_at?: string | null;
  /** The caller's own rating of an assistant message (absent from servers before it). */
  feedback?: { rating: "up" | "down"; comment: string } | null;
  /** What the answer cost once it stopped streaming (assistant only). */
  credits?: number | null;
  /** `credits` in US dollars (listing a chat's messages and a turn's final event). */
  cost_usd?: number | null;
}

export interface SearchHit {
  chat: Chat;
  snippet: string;
}

export interface ShareLink {
  id: string;
  chat_id: string;
  created_at: string;
  revoked_at: string | null;
}

export interface ShareLinkCreated extends ShareLink {
  token: string;
  path: string;
}

export interface SharedChat {
  title: string;
  messages: { role: "user" | "assistant"; content: string; status: MessageStatus; created_at: string }[];
}

export interface CreditEntry {
  id: number;
  kind: "grant" | "debit" | "refund";
  amount: number;
  balance_after: number;
  reason: string;
  refund_of: number | null;
  created_at: string;
}

/** A billing plan (routes/plans.py): null limits are unlimited. */
export interface Plan {
  id: string;
  name: string;
  description: string;
  monthly_credits: number;
  daily_token_limit: number | null;
  monthly_token_limit: number | null;
  is_default: boolean;
  created_at: string;
  updated_at: string;
}

/** The limits in force for a user: their own, else their plan's (null: unlimited). */
export interface TokenLimits {
  daily_token_limit: number | null;
  monthly_token_limit: number | null;
}

export interface CreditStatement {
  balance: number;
  /** balance × credit_price_usd. */
  balance_usd?: number;
  credit_price_usd?: number;
  entries: CreditEntry[];
  plan?: Plan | null;
  limits?: TokenLimits | null;
}

/** POST /chats/{id}/estimate: the most sending a message may cost. */
export interface CostEstimate {
  prompt_tokens_max: number;
  completion_tokens_max: number;
  credits_max: number;
  cost_usd_max: number;
  balance: number;
}

export interface UsageRow {
  key: string;
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  credits: number;
  /** credits × the credit price in US dollars. */
  cost_usd?: number;
}

export interface UsageHistory {
  by: "day" | "model";
  since: string;
  rows: UsageRow[];
  total: UsageRow;
  /** Tokens counted toward today's (UTC) and this month's limits. */
  tokens_today?: number;
  tokens_this_month?: number;
  limits?: TokenLimits | null;
  credit_price_usd?: number;
}

export type ApiKeyScope = "inference" | "chats:read" | "chats:write" | "usage:read";

export interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  scopes: ApiKeyScope[];
  created_at: string;
  last_used_at: string | null;
  revoked_at: string | null;
}

export interface ApiKeyCreated extends ApiKey {
  key: string;
}

export interface Feedback {
  message_id: string;
  rating: "up" | "down";
  comment: string;
}

export interface ModelVersion {
  version: string;
  aliases: string[];
  created_at: string;
  status: string;
  run_id: string | null;
  metrics: Record<string, string>;
  lineage: Record<string, string>;
  description: string;
}

export interface ModelRegistry {
  name: string;
  aliases: Record<string, string>;
  champion_history: string[];
  versions: ModelVersion[];
}

export interface PromotionResult {
  champion: string;
  previous: string | null;
}

export interface AuditEntry {
  id: number;
  actor_id: string | null;
  action: string;
  target: string;
  detail: Record<string, unknown>;
  created_at: string;
}

/** The chat settings a chat carries (POST /chats, PATCH /chats/{id}). */
export interface ChatSettings {
  model_alias: string;
  temperature: number;
  max_tokens: number;
  system_prompt: string;
  tone: Tone;
}

// -- admin: usage analytics, training jobs, recent errors -----------------------------------
export interface AnalyticsRow extends UsageRow {
  email: string | null;
  users: number;
}

export interface UsageAnalytics {
  by: "day" | "user" | "model";
  days: number;
  since: string;
  rows: AnalyticsRow[];
  total: AnalyticsRow;
  active_users: { day: string; users: number }[];
  popular_models: { model: string; requests: number; users: number; tokens: number }[];
}

export interface JobRun {
  dag_id: string;
  run_id: string;
  state: string;
  run_type: string | null;
  queued_at: string | null;
  start_date: string | null;
  end_date: string | null;
  conf: Record<string, unknown>;
  airflow_url: string;
  triggered_by: string | null;
}

export interface JobRuns {
  runs: JobRun[];
  airflow_url: string;
  mlflow_url: string;
}

export interface JobTriggered extends JobRun {
  dag_paused: boolean;
  mlflow_url: string;
}

export interface RecentError {
  time: string;
  logger: string;
  message: string;
  request_id: string | null;
  method: string | null;
  path: string | null;
  exception: string | null;
}

// -- admin: conversation monitoring (platform_api/routes/admin_monitoring.py) -------------------
export interface UserRef {
  id: string;
  email: string;
}

export interface ConversationSummary {
  id: string;
  title: string;
  user: UserRef;
  model_alias: string;
  /** Messages the chat shows (superseded ones not). */
  message_count: number;
  updated_at: string;
  open_flags: number;
  /** With a search: where the text was found. */
  snippet?: string | null;
}

export interface ChatFlag {
  id: string;
  chat_id: string;
  message_id: string | null;
  reason: string;
  /** Null once that account is gone. */
  flagged_by: UserRef | null;
  created_at: string;
  resolved_at: string | null;
  resolved_by: UserRef | null;
}

export interface ConversationDetail {
  chat: Chat;
  user: UserRef;
  /** In order, superseded ones too (`superseded_at` set). */
  messages: Message[];
  /** Newest first, resolved ones too. */
  flags: ChatFlag[];
}

// -- model access, feature flags, the A/B split (routes/admin_access.py, admin_models.py) ------
export interface ChatModels {
  /** What a chat's model_alias may be set to. */
  aliases: string[];
  default: string | null;
}

export interface AccessRule {
  id: number;
  role: Role | null;
  user_id: string | null;
  model: string;
  created_at: string;
  created_by: string | null;
}

export interface FeatureFlag {
  key: string;
  description: string;
  enabled: boolean;
  roles: Role[];
  users: string[];
  /** false: no row, the flag has its built-in default. */
  stored: boolean;
  updated_at: string | null;
  updated_by: string | null;
}

export interface TrafficSplit {
  model_name: string;
  challenger_percent: number;
  updated_at: string | null;
  updated_by: string | null;
}

export interface VariantResult {
  variant: string;
  messages: number;
  thumbs_up: number;
  thumbs_down: number;
  mean_completion_tokens: number | null;
  mean_latency_ms: number | null;
}

export interface SplitResults {
  split: TrafficSplit;
  since: string | null;
  variants: VariantResult[];
}
