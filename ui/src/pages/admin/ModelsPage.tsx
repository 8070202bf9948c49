import { useCallback, useEffect, useState } from "react";
import { client, describeError, unwrap } from "../../lib/api";
import { formatDateTime } from "../../lib/dates";
import type { ModelRegistry, PromotionResult } from "../../lib/types";
import { Button } from "../../components/ui/button";
import { Badge, Card, ErrorBanner, Spinner } from "../../components/ui/misc";
import { toast } from "../../store/toasts";
import { SplitCard } from "./SplitCard";

function Tags({ tags, testId }: { tags: Record<string, string>; testId: string }) {
  const entries = Object.entries(tags);
  if (!entries.length) return <span className="text-muted-foreground">—</span>;
  return (
    <dl className="grid grid-cols-[auto_1fr] gap-x-2 gap-y-0.5 text-xs" data-testid={testId}>
      {entries.map(([k, v]) => (
        <div key={k} className="contents">
          <dt className="font-mono text-muted-foreground">{k}</dt>
          <dd className="font-mono break-all">{v}</dd>
        </div>
      ))}
    </dl>
  );
}

export function ModelsPage() {
  const [registry, setRegistry] = useState<ModelRegistry | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const load = useCallback(() => {
    unwrap(client.GET("/api/v1/admin/models"))
      .then((r) => {
        setRegistry(r);
        setError(null);
      })
      .catch((e) => setError(describeError(e)));
  }, []);
  useEffect(load, [load]);

  async function change(call: () => Promise<{ data?: PromotionResult }>) {
    setBusy(true);
    setError(null);
    try {
      const result = await unwrap(call());
      toast(
        `Champion is now version ${result.champion}${result.previous ? ` (was ${result.previous})` : ""}.`,
        "success",
      );
      load();
    } catch (e) {
      setError(describeError(e));
    } finally {
      setBusy(false);
    }
  }

  if (!registry && !error) return <Spinner />;
  const champion = registry?.aliases.champion ?? null;
  return (
    <div className="space-y-4">
      <ErrorBanner message={error} onDismiss={() => setError(null)} />
      {registry && (
        <Card
          title={
            <>
              {registry.name} <span className="font-normal text-muted-foreground">· champion v{champion ?? "—"}</span>
            </>
          }
          actions={
            <Button
              variant="outline"
              data-testid="rollback"
              disabled={busy || registry.champion_history.length === 0}
              title={registry.champion_history.length ? `Back to version ${registry.champion_history.at(-1)}` : "No earlier champion"}
              onClick={() => change(() => client.POST("/api/v1/admin/models/rollback"))}
            >
              Roll back champion
            </Button>
          }
        >
          <p className="mb-3 text-sm text-muted-foreground">
            Aliases:{" "}
            {Object.entries(registry.aliases)
              .map(([a, v]) => `${a} → v${v}`)
              .join(", ") || "none"}
            {registry.champion_history.length > 0 && <> · earlier champions: {registry.champion_history.map((v) => `v${v}`).join(", ")}</>}
          </p>
          <div className="overflow-x-auto">
            <table className="w-full min-w-[40rem] text-sm">
              <thead className="text-left text-muted-foreground">
                <tr>
                  <th className="py-1 pr-3 font-medium">Version</th>
                  <th className="py-1 pr-3 font-medium">Aliases</th>
                  <th className="py-1 pr-3 font-medium">Eval metrics</th>
                  <th className="py-1 pr-3 font-medium">Lineage</th>
                  <th className="py-1 font-medium" />
                </tr>
              </thead>
              <tbody>
                {registry.versions.map((v) => {
                  const isChampion = v.version === champion || v.aliases.includes("champion");
                  return (
                    <tr key={v.version} data-testid="model-row" data-version={v.version} className="border-t border-border align-top">
                      <td className="py-2 pr-3">
                        <div className="font-mono font-medium">v{v.version}</div>
                        <div className="text-xs text-muted-foreground">{formatDateTime(v.created_at)}</div>
                        <div className="text-xs text-muted-foreground">{v.status}</div>
                        {v.run_id && <div className="font-mono text-xs break-all text-muted-foreground">run {v.run_id}</div>}
                      </td>
                      <td className="py-2 pr-3">
                        <div className="flex flex-wrap gap-1">
                          {isChampion && (
                            <Badge data-testid="champion-badge" className="border-primary bg-primary/10 text-primary">
                              champion
                            </Badge>
                          )}
                          {v.aliases
                            .filter((a) => a !== "champion")
                            .map((a) => (
                              <Badge key={a}>{a}</Badge>
                            ))}
                        </div>
                        {v.description && <p className="mt-1 text-xs whitespace-pre-line text-muted-foreground">{v.description}</p>}
                      </td>
                      <td className="py-2 pr-3">
                        <Tags tags={v.metrics} testId="model-metrics" />
                      </td>
                      <td className="py-2 pr-3">
                        <Tags tags={v.lineage} testId="model-lineage" />
                      </td>
                      <td className="py-2 text-right">
                        <Button
                          size="sm"
                          variant={isChampion ? "outline" : "default"}
                          data-testid="promote"
                          disabled={busy || isChampion}
                          title={isChampion ? "Already the champion" : `Make v${v.version} the champion`}
                          onClick={() => change(() => client.POST("/api/v1/admin/models/promote", { body: { version: v.version } }))}
                        >
                          Promote
                        </Button>
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
        </Card>
      )}
      <SplitCard />
    </div>
  );
}
