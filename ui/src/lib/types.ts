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

export interface CreditStatement {
  balance: number;
  entries: CreditEntry[];
}

export interface UsageRow {
  key: string;
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  credits: number;
}

export interface UsageHistory {
  by: "day" | "model";
  since: string;
  rows: UsageRow[];
  total: UsageRow;
}

export interface ApiKey {
  id: string;
  name: string;
  prefix: string;
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
