// Conversation monitoring's queries (GET /admin/conversations and its export).
import type { ChatFlag } from "./types";

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

export function listPath({ q, flagged, userId, offset = 0 }: ListFilters): string {
  const params = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
  if (q.trim()) params.set("q", q.trim());
  if (flagged !== "all") params.set("flagged", flagged);
  if (userId) params.set("user_id", userId);
  return `/admin/conversations?${params}`;
}

/** The export takes `flagged=open|any` only: "resolved" exports every flagged chat. */
export function exportPath({ q, flagged }: ListFilters, format: "jsonl" | "json"): string {
  const params = new URLSearchParams({ format, limit: "1000" });
  if (q.trim()) params.set("q", q.trim());
  if (flagged === "open") params.set("flagged", "open");
  else if (flagged !== "all") params.set("flagged", "any");
  return `/admin/conversations/export?${params}`;
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
