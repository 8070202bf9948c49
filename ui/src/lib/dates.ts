import type { Chat } from "./types";

export type DateGroup = "Today" | "Yesterday" | "Previous 7 days" | "Older";
export const DATE_GROUPS: DateGroup[] = ["Today", "Yesterday", "Previous 7 days", "Older"];

function startOfDay(d: Date): number {
  return new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
}

/** The API's datetimes are UTC; some come without a zone suffix. */
export function parseDate(value: string): Date {
  return new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(value) ? value : `${value}Z`);
}

export function dateGroup(value: string, now = new Date()): DateGroup {
  const day = startOfDay(parseDate(value));
  const today = startOfDay(now);
  const dayMs = 86_400_000;
  if (day >= today) return "Today";
  if (day >= today - dayMs) return "Yesterday";
  if (day >= today - 7 * dayMs) return "Previous 7 days";
  return "Older";
}

export function groupByDate(chats: Chat[], now = new Date()): [DateGroup, Chat[]][] {
  const groups = new Map<DateGroup, Chat[]>();
  for (const chat of chats) {
    const g = dateGroup(chat.updated_at, now);
    groups.set(g, [...(groups.get(g) ?? []), chat]);
  }
  return DATE_GROUPS.filter((g) => groups.has(g)).map((g) => [g, groups.get(g)!]);
}

export function formatDateTime(value: string): string {
  return parseDate(value).toLocaleString();
}

/** The UTC days (YYYY-MM-DD) of a window of `days` days from `since` (YYYY-MM-DD). */
export function windowDays(since: string, days: number): string[] {
  const start = new Date(`${since}T00:00:00Z`).getTime();
  return Array.from({ length: days }, (_, i) => new Date(start + i * 86_400_000).toISOString().slice(0, 10));
}
