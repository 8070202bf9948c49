import { useEffect, useState, type ReactNode } from "react";
import {
  Bar,
  BarChart,
  CartesianGrid,
  Legend,
  Line,
  LineChart,
  ResponsiveContainer,
  Tooltip,
  XAxis,
  YAxis,
} from "recharts";
import { client, describeError, unwrap } from "../../lib/api";
import { windowDays } from "../../lib/dates";
import type { UsageAnalytics } from "../../lib/types";
import { Card, ErrorBanner, Spinner } from "../../components/ui/misc";
import { Select } from "../../components/ui/input";
import { CHART_MARGIN, CHART_TICK, CHART_TOOLTIP, TokensPerDayChart, UsageTable } from "../../components/UsageCharts";

type By = UsageAnalytics["by"];

/** Every day of the window, zero where nobody used anything (the API lists active days). */
function daily(analytics: UsageAnalytics) {
  const tokens = new Map(analytics.rows.map((r) => [r.key, r]));
  const active = new Map(analytics.active_users.map((a) => [a.day, a.users]));
  return windowDays(analytics.since, analytics.days).map((d) => ({
    day: d.slice(5),
    prompt: tokens.get(d)?.prompt_tokens ?? 0,
    completion: tokens.get(d)?.completion_tokens ?? 0,
    users: active.get(d) ?? 0,
  }));
}

function Figure({ label, value }: { label: string; value: string | number }) {
  return (
    <div className="rounded-md border border-border px-3 py-2">
      <div className="text-xs text-muted-foreground">{label}</div>
      <div className="text-lg font-semibold tabular-nums">{value}</div>
    </div>
  );
}

function ChartBox({ title, children }: { title: string; children: ReactNode }) {
  return (
    <figure className="rounded-md border border-border p-3">
      <figcaption className="mb-2 text-sm font-medium">{title}</figcaption>
      <div className="h-64 w-full" role="img" aria-label={title}>
        {children}
      </div>
    </figure>
  );
}

export default function AnalyticsPage() {
  const [days, setDays] = useState(30);
  const [by, setBy] = useState<By>("day");
  const [perDay, setPerDay] = useState<UsageAnalytics | null>(null);
  const [table, setTable] = useState<UsageAnalytics | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    setError(null);
    setPerDay(null);
    setTable(null);
    const load = (b: By) => unwrap(client.GET("/api/v1/admin/analytics", { params: { query: { by: b, days } } }));
    Promise.all([load("day"), by === "day" ? null : load(by)])
      .then(([d, t]) => {
        setPerDay(d);
        setTable(t ?? d);
      })
      .catch((e) => setError(describeError(e)));
  }, [days, by]);

  const total = perDay?.total;
  return (
    <div className="space-y-4">
      <ErrorBanner message={error} />
      <Card
        title="Usage analytics"
        actions={
          <label className="flex items-center gap-2 text-sm">
            Period
            <Select aria-label="Period" value={days} onChange={(e) => setDays(Number(e.target.value))} className="w-32">
              <option value={7}>7 days</option>
              <option value={30}>30 days</option>
              <option value={90}>90 days</option>
              <option value={366}>366 days</option>
            </Select>
          </label>
        }
      >
        {!perDay || !total ? (
          <Spinner />
        ) : (
          <>
            <div className="mb-4 grid grid-cols-2 gap-2 sm:grid-cols-4">
              <Figure label="Requests" value={total.requests} />
              <Figure label="Tokens (prompt + completion)" value={total.prompt_tokens + total.completion_tokens} />
              <Figure label="Active users" value={total.users} />
              <Figure label="Estimated cost" value={`${total.credits} credits`} />
            </div>
            <p className="mb-3 text-xs text-muted-foreground">
              Since {perDay.since} (UTC days). The cost is the credits charged at the prices in force.
            </p>
            <div data-testid="analytics-chart" className="grid gap-4 lg:grid-cols-2">
              <ChartBox title="Tokens per day">
                <TokensPerDayChart data={daily(perDay)} />
              </ChartBox>
              <ChartBox title="Active users per day">
                <ResponsiveContainer width="100%" height="100%">
                  <LineChart data={daily(perDay)} margin={CHART_MARGIN}>
                    <CartesianGrid strokeDasharray="3 3" stroke="var(--border)" />
                    <XAxis dataKey="day" tick={CHART_TICK} />
                    <YAxis tick={CHART_TICK} allowDecimals={false} />
                    <Tooltip contentStyle={CHART_TOOLTIP} />
                    <Line dataKey="users" name="Active users" stroke="#a855f7" dot={false} strokeWidth={2} />
                  </LineChart>
                </ResponsiveContainer>
              </ChartBox>
              <ChartBox title="Most requested models">
                <ResponsiveContainer width="100%" height="100%">
                  <BarChart data={perDay.popular_models} margin={CHART_MARGIN}>
                    <CartesianGrid strokeDasharray="3 3" stroke="var(--border)" />
                    <XAxis dataKey="model" tick={CHART_TICK} />
                    <YAxis tick={CHART_TICK} allowDecimals={false} />
                    <Tooltip contentStyle={CHART_TOOLTIP} />
                    <Legend />
                    <Bar dataKey="requests" name="Requests" fill="#f59e0b" />
                  </BarChart>
                </ResponsiveContainer>
              </ChartBox>
            </div>
          </>
        )}
      </Card>
      <Card
        title="Breakdown"
        actions={
          <label className="flex items-center gap-2 text-sm">
            By
            <Select aria-label="Group by" value={by} onChange={(e) => setBy(e.target.value as By)} className="w-32">
              <option value="day">day</option>
              <option value="user">user</option>
              <option value="model">model</option>
            </Select>
          </label>
        }
      >
        {!table ? (
          <Spinner />
        ) : table.rows.length === 0 ? (
          <p className="text-sm text-muted-foreground">No usage in this period.</p>
        ) : (
          <UsageTable
            keyLabel={table.by === "day" ? "Day" : table.by === "user" ? "User" : "Model"}
            rows={table.rows}
            users
            rowTestId="analytics-row"
          />
        )}
      </Card>
    </div>
  );
}
