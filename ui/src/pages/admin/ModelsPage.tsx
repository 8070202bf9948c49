import { useCallback, useEffect, useState } from "react";
import { client, describeError, unwrap } from "../../lib/api";
import { formatDateTime } from "../../lib/dates";
import type { ModelRegistry, PromotionResult } from "../../lib/types";
import { Button } from "../../components/ui/button";
import { Badge, Card, ErrorBanner, Spinner } from "../../components/ui/misc";
import { toast } from "../../store/toasts";
import { ModelCard, VerdictBadge, sig3 } from "./ModelCard";
import { SplitCard } from "./SplitCard";

/** Eval metrics to 3 significant figures, this version against the champion. */
function Metrics({ metrics, champion, isChampion }: { metrics: Record<string, string>; champion: Record<string, string> | null; isChampion: boolean }) {
  const names = Object.keys(metrics).filter((k) => !k.endsWith("/examples"));
  if (!names.length) return <p className="text-sm text-muted-foreground">No eval metrics.</p>;
  const compare = champion && !isChampion;
  return (
    <table className="w-full text-sm" data-testid="model-metrics">
      <thead className="text-left text-xs text-muted-foreground">
        <tr>
          <th className="py-1 pr-2 font-medium">Eval metric</th>
          <th className="py-1 pr-2 text-right font-medium">this</th>
          {compare && <th className="py-1 text-right font-medium">champion</th>}
        </tr>
      </thead>
      <tbody>
        {names.map((name) => (
          <tr key={name} className="border-t border-border" data-testid="model-metric" data-metric={name}>
            <td className="w-full py-1 pr-2 [overflow-wrap:anywhere]">{name.replace(/^lm_eval\//, "")}</td>
            <td className="py-1 pr-2 text-right font-mono whitespace-nowrap">{sig3(metrics[name])}</td>
            {compare && <td className="py-1 text-right font-mono whitespace-nowrap">{sig3(champion[name])}</td>}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function ModelsPage() {
  const [registry, setRegistry] = useState<ModelRegistry | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [openCards, setOpenCards] = useState<Record<string, boolean>>({});

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
  const championMetrics = registry?.versions.find((v) => v.version === champion)?.metrics ?? null;
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
          <ul className="space-y-3">
            {registry.versions.map((v) => {
              const isChampion = v.version === champion || v.aliases.includes("champion");
              return (
                <li key={v.version} data-testid="model-row" data-version={v.version} className="rounded-md border border-border p-3">
                  <div className="flex flex-wrap items-start gap-x-3 gap-y-2">
                    <div className="min-w-0 flex-1">
                      <div className="flex flex-wrap items-center gap-2">
                        <span className="font-mono font-medium">v{v.version}</span>
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
                        {v.review && <VerdictBadge verdict={String((v.review as { verdict: string }).verdict)} />}
                      </div>
                      <div className="text-xs text-muted-foreground">
                        {formatDateTime(v.created_at)} · {v.status}
                      </div>
                    </div>
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
                  </div>
                  <div className="mt-2">
                    <Metrics metrics={v.metrics} champion={championMetrics} isChampion={isChampion} />
                  </div>
                  <details className="mt-2" data-testid="model-card-toggle" onToggle={(e) => {
                    const open = (e.currentTarget as HTMLDetailsElement).open;
                    setOpenCards((cards) => ({ ...cards, [v.version]: open }));
                  }}>
                    <summary className="cursor-pointer text-sm font-medium text-primary">Model card</summary>
                    <div className="mt-2">{openCards[v.version] && <ModelCard version={v.version} />}</div>
                  </details>
                </li>
              );
            })}
          </ul>
        </Card>
      )}
      <SplitCard />
    </div>
  );
}
