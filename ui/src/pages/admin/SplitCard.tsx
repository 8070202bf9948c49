import { ThumbsDown, ThumbsUp } from "lucide-react";
import { useCallback, useEffect, useState, type FormEvent } from "react";
import { ApiError, client, describeError, unwrap } from "../../lib/api";
import { formatDateTime } from "../../lib/dates";
import type { GuardrailAlert, SplitResults } from "../../lib/types";
import { Button } from "../../components/ui/button";
import { Input } from "../../components/ui/input";
import { Card, ErrorBanner, Spinner } from "../../components/ui/misc";
import { TableHead } from "../../components/ui/table";
import { toast } from "../../store/toasts";

/** A percent typed in the number box: a whole number from 0 to 100, else null. */
export function parsePercent(text: string): number | null {
  const t = text.trim();
  if (!/^\d{1,3}$/.test(t)) return null;
  const n = Number(t);
  return n <= 100 ? n : null;
}

/** The guardrail cut the challenger to 0 %: what it saw, until an admin sets the split again. */
export function GuardrailBanner({ alert }: { alert: GuardrailAlert }) {
  const what = alert.metric === "error_rate" ? "error rate" : "thumbs-down rate";
  return (
    <div role="alert" data-testid="guardrail-alert" className="mb-3 rounded-md border border-destructive/40 bg-destructive/10 px-3 py-2 text-sm text-destructive">
      <span className="font-medium">Guardrail: the challenger{alert.version ? ` (v${alert.version})` : ""} was cut from {alert.previous_percent}% to 0%.</span>{" "}
      Its {what} was {(alert.rate * 100).toFixed(0)}% over {alert.count} (at least {(alert.low * 100).toFixed(0)}% with 95% confidence, bound{" "}
      {(alert.bound * 100).toFixed(0)}%), {formatDateTime(alert.at)}. Setting the split again clears this alert; the audit log keeps it.
    </div>
  );
}

const mean = (n: number | null, unit = "") => (n == null ? "—" : `${n}${unit}`);

/** The champion/challenger A/B split: the challenger's share, and each side's results. */
export function SplitCard() {
  const [results, setResults] = useState<SplitResults | null>(null);
  const [percent, setPercent] = useState("0");
  const [error, setError] = useState<string | null>(null);
  const [conflict, setConflict] = useState<string | null>(null);
  const [saving, setSaving] = useState(false);

  const load = useCallback((resetInput: boolean) => {
    unwrap(client.GET("/api/v1/admin/models/split/results"))
      .then((r) => {
        setResults(r);
        if (resetInput) setPercent(String(r.split.challenger_percent));
      })
      .catch((e) => setError(describeError(e)));
  }, []);
  useEffect(() => load(true), [load]);

  const value = parsePercent(percent);
  async function save(e: FormEvent) {
    e.preventDefault();
    if (value === null) return;
    setSaving(true);
    setError(null);
    setConflict(null);
    try {
      const split = await unwrap(client.PUT("/api/v1/admin/models/split", { body: { challenger_percent: value } }));
      toast(`The challenger now answers ${split.challenger_percent}% of the champion's traffic.`, "success");
      load(true);
    } catch (err) {
      if (err instanceof ApiError && err.code === "no_challenger") setConflict(err.detail);
      else setError(describeError(err));
    } finally {
      setSaving(false);
    }
  }

  const current = results?.split.challenger_percent;
  return (
    <Card title="A/B split: champion vs challenger">
      <ErrorBanner message={error} onDismiss={() => setError(null)} />
      {conflict && (
        <div role="alert" data-testid="split-conflict" className="mb-3 rounded-md border border-amber-500/50 bg-amber-500/10 px-3 py-2 text-sm">
          <span className="font-medium">No challenger to split to.</span> {conflict}
        </div>
      )}
      {results?.split.guardrail && <GuardrailBanner alert={results.split.guardrail} />}
      <form onSubmit={save} className="flex flex-wrap items-center gap-3" noValidate data-testid="split-form">
        <label htmlFor="split-range" className="text-sm font-medium">
          Challenger share
        </label>
        <input
          id="split-range"
          type="range"
          min={0}
          max={100}
          step={1}
          className="w-48 accent-[var(--primary)]"
          data-testid="split-slider"
          value={value ?? 0}
          onChange={(e) => setPercent(e.target.value)}
        />
        <Input
          aria-label="Challenger percent"
          inputMode="numeric"
          className="w-20"
          data-testid="split-percent"
          aria-invalid={value === null ? true : undefined}
          value={percent}
          onChange={(e) => setPercent(e.target.value)}
        />
        <span className="text-sm">%</span>
        <Button type="submit" data-testid="split-save" disabled={saving || value === null || value === current}>
          {saving ? "Saving…" : "Save split"}
        </Button>
        {value === null && (
          <p role="alert" className="w-full text-sm text-destructive" data-testid="split-error">
            A whole number from 0 to 100.
          </p>
        )}
      </form>
      {!results ? (
        <Spinner />
      ) : (
        <>
          <p className="mt-2 text-xs text-muted-foreground" data-testid="split-current">
            Now {results.split.challenger_percent}% to the challenger
            {results.split.updated_at ? `, set ${formatDateTime(results.split.updated_at)}` : ""}. Chats stay on one side while the
            split stands.
          </p>
          <div className="mt-3 overflow-x-auto">
            <table className="w-full min-w-[32rem] text-sm" data-testid="split-results">
              <TableHead
                columns={["Side", { label: "Answers", right: true }, { label: "Thumbs up", right: true, icon: <ThumbsUp className="size-3.5" aria-hidden /> },
                  { label: "Thumbs down", right: true, icon: <ThumbsDown className="size-3.5" aria-hidden /> },
                  { label: "Mean tokens", right: true }, { label: "Mean latency", right: true }]}
              />
              <tbody>
                {results.variants.map((v) => (
                  <tr key={v.variant} data-testid="split-variant" data-variant={v.variant} className="border-t border-border">
                    <td className="py-1.5 pr-3 font-medium">{v.variant}</td>
                    <td className="py-1.5 pr-3 text-right font-mono">{v.messages}</td>
                    <td className="py-1.5 pr-3 text-right font-mono">{v.thumbs_up}</td>
                    <td className="py-1.5 pr-3 text-right font-mono">{v.thumbs_down}</td>
                    <td className="py-1.5 pr-3 text-right font-mono">{mean(v.mean_completion_tokens)}</td>
                    <td className="py-1.5 text-right font-mono">{mean(v.mean_latency_ms, " ms")}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      )}
    </Card>
  );
}
