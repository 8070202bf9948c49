// The platform API's shapes under the names the UI uses: aliases of the schemas generated
// from its OpenAPI document (src/api/schema.d.ts, `make ui-client`), never written here.
import type { components } from "../api/schema";

type Schemas = components["schemas"];

// -- accounts ------------------------------------------------------------------------------
export type User = Schemas["UserPublic"];
/** GET/PATCH /users/me: the user with the linked OAuth providers, last used first. */
export type Me = Schemas["UserMe"];
export type Role = User["role"];
export type UserStatus = User["status"];
export type UserRef = Schemas["UserRef"];
export type TokenPair = Schemas["TokenPair"];
export type TotpSetup = Schemas["TotpSetup"];
export type OAuthProvider = Schemas["OAuthProviderPublic"];
export type ApiKey = Schemas["ApiKeyPublic"];
export type MemoryItem = Schemas["MemoryPublic"];
export type ApiKeyCreated = Schemas["ApiKeyCreated"];
export type ApiKeyScope = ApiKey["scopes"][number];

// -- chats ---------------------------------------------------------------------------------
export type Folder = Schemas["FolderPublic"];
export type Chat = Schemas["ChatPublic"];
export type Tone = Chat["tone"];
export type ChatUpdate = Schemas["ChatUpdate"];
/** The settings a chat carries (POST /chats, PATCH /chats/{id}). */
export type ChatSettings = Pick<Chat, "model_alias" | "temperature" | "max_tokens" | "system_prompt" | "tone">;
export type Message = Schemas["MessagePublic"];
export type MessageStatus = Message["status"];
/** A numbered source of an answer: a passage of one of the user's files. */
export type Citation = Schemas["Citation"];
export type KnowledgeBase = Schemas["KnowledgeBasePublic"];
export type KnowledgeFile = Schemas["KnowledgeFilePublic"];
export type ChatKnowledge = Schemas["ChatKnowledgePublic"];
export type KnowledgeFlag = Schemas["KnowledgeFlagPublic"];
/** A message's thumbs as the UI keeps them (PUT .../feedback answers, or a message's own). */
export type Feedback = Pick<Schemas["FeedbackPublic"], "message_id" | "rating" | "comment">;
export type SearchHit = Schemas["SearchHit"];
export type ShareLink = Schemas["ShareLinkPublic"];
export type ShareLinkCreated = Schemas["ShareLinkCreated"];
export type SharedChat = Schemas["SharedChat"];
export type ChatModels = Schemas["ChatModels"];

// -- credits, plans, usage -----------------------------------------------------------------
export type CreditEntry = Schemas["CreditEntryPublic"];
export type CreditStatement = Schemas["CreditStatement"];
/** A billing plan: null limits are unlimited. */
export type Plan = Schemas["PlanPublic"];
export type PlanCreate = Schemas["PlanCreate"];
/** The limits in force for a user: their own, else their plan's (null: unlimited). */
export type TokenLimits = Schemas["TokenLimits"];
export type CostEstimate = Schemas["CostEstimate"];
export type UsageRow = Schemas["UsageRow"];
export type UsageHistory = Schemas["UsageHistory"];

// -- admin ---------------------------------------------------------------------------------
export type ModelVersion = Schemas["ModelVersionPublic"];
export type ModelRegistry = Schemas["ModelRegistryPublic"];
export type PromotionResult = Schemas["PromotionResult"];
export type AuditEntry = Schemas["AuditEntryPublic"];
export type AnalyticsRow = Schemas["AnalyticsRow"];
export type UsageAnalytics = Schemas["UsageAnalytics"];
export type JobRun = Schemas["JobRun"];
export type JobRuns = Schemas["JobRuns"];
export type JobTriggered = Schemas["JobTriggered"];
export type JobDag = Schemas["JobTrigger"]["dag"];
export type RecentError = Schemas["RecentError"];
export type OpsHealth = Schemas["OpsHealth"];
export type ConversationSummary = Schemas["ConversationSummary"];
export type ChatFlag = Schemas["FlagPublic"];
export type ConversationDetail = Schemas["ConversationDetail"];
export type AccessRule = Schemas["AccessRulePublic"];
export type FeatureFlag = Schemas["FeatureFlagPublic"];
export type TrafficSplit = Schemas["SplitPublic"];
export type VariantResult = Schemas["VariantResult"];
export type SplitResults = Schemas["SplitResults"];
export type GuardrailAlert = Schemas["GuardrailAlert"];
export type ModelCardData = Schemas["ModelCardPublic"];
export type CardLink = Schemas["CardLink"];
