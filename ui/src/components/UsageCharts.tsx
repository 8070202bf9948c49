// What the account's usage page and the admin analytics share: the tokens-per-day chart
// and the usage table (rows of requests, tokens and credits).
import { Bar, BarChart, CartesianGrid, Legend, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import { formatUsd } from "../lib/billing";
import type { UsageRow } from "../lib/types";
import { TableHead } from "./ui/table";

export const CHART_TICK = { fontSize: 11, fill: "var(--muted-foreground)" };
export const CHART_TOOLTIP = { background: "var(--card)", border: "1px solid var(--border)", color: "var(--foreground)" };
export const CHART_MARGIN = { top: 8, right: 8, bottom: 0, left: -12 };

/** Prompt and completion tokens stacked, one bar per day (`day` is the axis label). */
export function TokensPerDayChart({ data }: { data: { day: string; prompt: number; completion: number }[] }) {
  return (
    <ResponsiveContainer width="100%" height="100%">
      <BarChart data={data} margin={CHART_MARGIN}>
        <CartesianGrid strokeDasharray="3 3" stroke="var(--border)" />
        <XAxis dataKey="day" tick={CHART_TICK} />
        <YAxis tick={CHART_TICK} allowDecimals={false} />
        <Tooltip contentStyle={CHART_TOOLTIP} />
        <Legend />
        <Bar dataKey="prompt" name="Prompt tokens" stackId="t" fill="#60a5fa" />
        <Bar dataKey="completion" name="Completion tokens" stackId="t" fill="#16a34a" />
      </BarChart>
    </ResponsiveContainer>
  );
}

type Row = UsageRow & { email?: string | null; users?: number };

/** Usage rows under `keyLabel` (day, model or user: the e-mail when there is one); with
 * `users`, the distinct users of each row too. */
export function UsageTable({ keyLabel, rows, users = false, rowTestId }: { keyLabel: string; rows: Row[]; users?: boolean; rowTestId?: string }) {
  // the cost column when the server prices the rows (cost_usd: credits × the credit price)
  const cost = rows.some((r) => r.cost_usd != null);
  const figures = ["Requests", "Prompt", "Completion", ...(users ? ["Users"] : []), "Credits", ...(cost ? ["Cost"] : [])];
  return (
    <div className="overflow-x-auto">
      <table className="w-full text-sm">
        <TableHead columns={[keyLabel, ...figures.map((label) => ({ label, right: true }))]} />
        <tbody>
          {rows.map((r) => (
            <tr key={r.key} data-testid={rowTestId} className="border-t border-border">
              <td className="py-1.5 pr-3 font-mono break-all">{r.email ?? r.key}</td>
              <td className="py-1.5 pr-3 text-right">{r.requests}</td>
              <td className="py-1.5 pr-3 text-right">{r.prompt_tokens}</td>
              <td className="py-1.5 pr-3 text-right">{r.completion_tokens}</td>
              {users && <td className="py-1.5 pr-3 text-right">{r.users}</td>}
              <td className={cost ? "py-1.5 pr-3 text-right" : "py-1.5 text-right"}>{r.credits}</td>
              {cost && <td className="py-1.5 text-right whitespace-nowrap">{formatUsd(r.cost_usd ?? 0)}</td>}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
