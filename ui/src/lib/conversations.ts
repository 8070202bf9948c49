// Conversation monitoring's queries (GET /admin/conversations and its export).
import type { paths } from "../api/schema";
import type { ChatFlag } from "./types";

type ListQuery = NonNullable<paths["/api/v1/admin/conversations"]["get"]["parameters"]["query"]>;
type ExportQuery = NonNullable<paths["/api/v1/admin/conversations/export"]["get"]["parameters"]["query"]>;

/** The list's tabs; "all" sends no `flagged` filter. */
export type FlagFilter = "all" | "open" | "resolved" | "any";
export const FLAG_TABS: [FlagFilter, string][] = [
  ["all", "All"],
  ["open", "Open flags"],
  ["resolved", "Resolved"],
  ["any", "Ever flagged"],
];
export const PAGE = 50;

export interface ListFilters {
  q: string;
  flagged: FlagFilter;
  userId?: string;
  offset?: number;
}

/** The list's query (absent filters are not sent). */
export function listQuery({ q, flagged, userId, offset = 0 }: ListFilters): ListQuery {
  return {
    limit: PAGE,
    offset,
    q: q.trim() || undefined,
    flagged: flagged === "all" ? undefined : flagged,
    user_id: userId || undefined,
  };
}

/** The export takes `flagged=open|any` only: "resolved" exports every flagged chat. */
export function exportQuery({ q, flagged }: ListFilters, format: "jsonl" | "json"): ExportQuery {
  return {
    format,
    limit: 1000,
    q: q.trim() || undefined,
    flagged: flagged === "all" ? undefined : flagged === "open" ? "open" : "any",
  };
}

/** Open flags by what they point at: a message id, or "" for the whole chat. */
export function openFlagsByTarget(flags: ChatFlag[]): Map<string, ChatFlag[]> {
  const byTarget = new Map<string, ChatFlag[]>();
  for (const flag of flags) {
    if (flag.resolved_at) continue;
    const key = flag.message_id ?? "";
    byTarget.set(key, [...(byTarget.get(key) ?? []), flag]);
  }
  return byTarget;
}
