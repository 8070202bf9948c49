import { useCallback, useEffect, useState } from "react";
import { client, describeError, unwrap } from "../../lib/api";
import type { OpsHealth } from "../../lib/types";
import { Button } from "../../components/ui/button";
import { Card, ErrorBanner, Spinner } from "../../components/ui/misc";

function seconds(value: number | null | undefined): string {
  if (value == null) return "—";
  return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`;
}

function percent(value: number | null | undefined): string {
  return value == null ? "—" : `${(value * 100).toFixed(1)}%`;
}

function number(value: number | null | undefined, digits = 0): string {
  return value == null ? "—" : value.toFixed(digits);
}

function Stat({ label, value, testid }: { label: string; value: string; testid: string }) {
  return (
    <div className="rounded-lg border border-border p-3">
      <div className="text-xs text-muted-foreground">{label}</div>
      <div data-testid={testid} className="mt-1 text-lg font-semibold tabular-nums">
        {value}
      </div>
    </div>
  );
}

/** Serving's health over the last 5 minutes, the scrape targets and firing alerts, from
 * Prometheus; and links to the operations UIs (from the platform's settings). */
export default function HealthPage() {
  const [health, setHealth] = useState<OpsHealth | null>(null);
  const [failure, setFailure] = useState<string | null>(null);

  const load = useCallback(() => {
    setFailure(null);
    return unwrap(client.GET("/api/v1/admin/health"))
      .then(setHealth)
      .catch((e) => setFailure(describeError(e)));
  }, []);

  useEffect(() => {
    void load();
  }, [load]);

  const links = health
    ? ([
        ["Grafana", health.links.grafana],
        ["Prometheus", health.links.prometheus],
        ["Airflow", health.links.airflow],
        ["MLflow", health.links.mlflow],
        ["Ray", health.links.ray],
      ] as const)
    : [];
  return (
    <Card
      title="Health"
      actions={
        <Button variant="outline" size="sm" onClick={() => void load()}>
          Refresh
        </Button>
      }
    >
      <ErrorBanner message={failure} />
      {!health ? (
        !failure && <Spinner />
      ) : (
        <div className="space-y-4">
          {!health.available && (
            <p role="status" data-testid="health-unavailable" className="text-sm text-muted-foreground">
              {health.detail}
            </p>
          )}
          <div className="grid grid-cols-2 gap-3 sm:grid-cols-4">
            <Stat label="Time to first token p95 (5 min)" value={seconds(health.serving.ttft_p95_seconds)} testid="health-ttft" />
            <Stat label="Serving error ratio (5 min)" value={percent(health.serving.error_ratio)} testid="health-errors" />
            <Stat label="Queued requests" value={number(health.serving.queue_depth)} testid="health-queue" />
            <Stat label="Requests/s (5 min)" value={number(health.serving.requests_per_second, 2)} testid="health-rps" />
          </div>
          {health.targets.length > 0 && (
            <ul aria-label="Scrape targets" className="flex flex-wrap gap-2 text-sm">
              {health.targets.map((t, i) => (
                <li key={`${t.job}-${i}`} className={t.up ? "text-foreground" : "font-medium text-destructive"}>
                  {t.job}: {t.up ? "up" : "down"}
                </li>
              ))}
            </ul>
          )}
          {health.available && (
            <p data-testid="health-alerts" className="text-sm">
              {health.firing_alerts.length === 0 ? "No alert firing." : `Firing: ${health.firing_alerts.join(", ")}`}
            </p>
          )}
          <nav aria-label="Operations dashboards" className="flex flex-wrap gap-3 text-sm">
            {links.map(([label, href]) =>
              href ? (
                <a key={label} href={href} target="_blank" rel="noopener noreferrer" className="underline">
                  {label}
                </a>
              ) : null,
            )}
          </nav>
        </div>
      )}
    </Card>
  );
}
