// Plans, token limits and costs: what the forms accept (the API's bounds, src/api/limits.ts)
// and how figures read.
import { CREDIT_GRANT_MAX, TOKEN_LIMIT_MAX } from "../api/limits";

export { CREDIT_GRANT_MAX, TOKEN_LIMIT_MAX };

/** A limit field's text: empty is null (unlimited, or the plan's for a user override). */
export function parseLimit(
  text: string,
  max = TOKEN_LIMIT_MAX,
): { ok: true; value: number | null } | { ok: false; error: string } {
  const t = text.trim().replace(/[_,\s]/g, "");
  if (t === "") return { ok: true, value: null };
  if (!/^\d+$/.test(t)) return { ok: false, error: "A whole number of 0 or more, or empty." };
  const n = Number(t);
  if (n > max) return { ok: false, error: `At most ${max.toLocaleString("en-US")}.` };
  return { ok: true, value: n };
}

export const limitText = (n: number | null | undefined) => (n == null ? "" : String(n));

export function formatTokens(n: number | null | undefined): string {
  return n == null ? "unlimited" : n.toLocaleString("en-US");
}

/** US dollars: cents above a dollar cent, more digits for the fractions a turn costs. */
export function formatUsd(usd: number | null | undefined): string | null {
  if (usd == null || !Number.isFinite(usd)) return null;
  if (usd === 0) return "$0";
  if (Math.abs(usd) >= 0.01) return `$${usd.toFixed(2)}`;
  return `$${Number(usd.toPrecision(2))}`;
}

/** 45 → "45 s", 3700 → "1 h 1 min", 200000 → "2 d 7 h". */
export function formatWait(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return h ? `${d} d ${h} h` : `${d} d`;
  if (h) return m ? `${h} h ${m} min` : `${h} h`;
  return `${m} min`;
}

/** used / limit as 0..1 for a progress bar; null when unlimited. */
export function usageFraction(used: number, limit: number | null | undefined): number | null {
  if (limit == null) return null;
  if (limit <= 0) return 1;
  return Math.min(1, Math.max(0, used / limit));
}
