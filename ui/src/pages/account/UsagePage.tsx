import { useEffect, useState } from "react";
import { client, describeError, unwrap } from "../../lib/api";
import { windowDays } from "../../lib/dates";
import type { UsageHistory } from "../../lib/types";
import { Card, ErrorBanner, Spinner } from "../../components/ui/misc";
import { TokensPerDayChart, UsageTable } from "../../components/UsageCharts";
import { Select } from "../../components/ui/input";
import { PlanLimits } from "../../components/PlanLimits";
import { formatUsd } from "../../lib/billing";

/** Every day of the window, zero where nothing was used (the API lists only used days). */
function fillDays(history: UsageHistory, days: number) {
  const byKey = new Map(history.rows.map((r) => [r.key, r]));
  return windowDays(history.since, days).map((d) => {
    const r = byKey.get(d);
    return { day: d.slice(5), prompt: r?.prompt_tokens ?? 0, completion: r?.completion_tokens ?? 0, requests: r?.requests ?? 0, credits: r?.credits ?? 0 };
  });
}

export default function UsagePage() {
  const [days, setDays] = useState(30);
  const [byDay, setByDay] = useState<UsageHistory | null>(null);
  const [byModel, setByModel] = useState<UsageHistory | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    setError(null);
    Promise.all([
      unwrap(client.GET("/api/v1/usage", { params: { query: { by: "day", days } } })),
      unwrap(client.GET("/api/v1/usage", { params: { query: { by: "model", days } } })),
    ])
      .then(([d, m]) => {
        setByDay(d);
        setByModel(m);
      })
      .catch((e) => setError(describeError(e)));
  }, [days]);

  return (
    <div className="space-y-4">
      <ErrorBanner message={error} />
      <Card
        title="Usage"
        actions={
          <label className="flex items-center gap-2 text-sm">
            Period
            <Select value={days} onChange={(e) => setDays(Number(e.target.value))} className="w-32">
              <option value={7}>7 days</option>
              <option value={30}>30 days</option>
              <option value={90}>90 days</option>
            </Select>
          </label>
        }
      >
        {!byDay ? (
          <Spinner />
        ) : (
          <>
            <p className="mb-3 text-sm text-muted-foreground">
              Since {byDay.since}: {byDay.total.requests} requests, {byDay.total.prompt_tokens} prompt and{" "}
              {byDay.total.completion_tokens} completion tokens, {byDay.total.credits} credits
              {formatUsd(byDay.total.cost_usd) ? <span data-testid="usage-cost"> (≈ {formatUsd(byDay.total.cost_usd)})</span> : null}.
            </p>
            {byDay.limits && (
              <div className="mb-4">
                <PlanLimits limits={byDay.limits} today={byDay.tokens_today ?? 0} month={byDay.tokens_this_month ?? 0} />
              </div>
            )}
            <div data-testid="usage-chart" className="h-72 w-full" role="img" aria-label={`Tokens per day over the last ${days} days`}>
              <TokensPerDayChart data={fillDays(byDay, days)} />
            </div>
          </>
        )}
      </Card>
      {byModel && byModel.rows.length > 0 && (
        <Card title="By model">
          <UsageTable keyLabel="Model" rows={byModel.rows} />
        </Card>
      )}
    </div>
  );
}
