import { useCallback, useEffect, useState } from "react";
import { ApiError, client, describeError, unwrap } from "../../lib/api";
import { formatDateTime } from "../../lib/dates";
import { CONF_EXAMPLES, JOB_DAGS, isActive, validateConf, type JobDag } from "../../lib/jobs";
import type { JobRuns, JobTriggered } from "../../lib/types";
import { Button } from "../../components/ui/button";
import { Field, Select, Textarea } from "../../components/ui/input";
import { Badge, Card, ErrorBanner, Spinner } from "../../components/ui/misc";
import { TableHead } from "../../components/ui/table";
import { toast } from "../../store/toasts";

const POLL_MS = 10_000;

const STATE_STYLE: Record<string, string> = {
  success: "border-green-600/50 text-green-700 dark:text-green-400",
  failed: "border-destructive/50 text-destructive",
  running: "border-blue-500/50 text-blue-600 dark:text-blue-400",
  queued: "text-muted-foreground",
};

function when(value: string | null | undefined) {
  return value ? formatDateTime(value) : "—";
}

/** Trigger a training DAG with its Params (JSON); the API and then Airflow validate it. */
export function TriggerForm({ onTriggered }: { onTriggered: (run: JobTriggered) => void }) {
  const [dag, setDag] = useState<JobDag>("orchard_posttrain");
  const [conf, setConf] = useState("{}");
  const [confError, setConfError] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: React.FormEvent) {
    e.preventDefault();
    setError(null);
    const checked = validateConf(conf);
    if (!checked.ok) {
      setConfError(checked.error);
      return;
    }
    setConfError(null);
    setBusy(true);
    try {
      onTriggered(await unwrap(client.POST("/api/v1/admin/jobs", { body: { dag, conf: checked.conf } })));
    } catch (err) {
      // Airflow's Param validation (conf_refused) and the API's own (invalid_request) are
      // about the conf: show them on the field.
      if (err instanceof ApiError && err.status === 422) setConfError(err.detail);
      else setError(describeError(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <form onSubmit={submit} className="space-y-3" noValidate>
      <ErrorBanner message={error} />
      <Field label="DAG">
        {(props) => (
          <Select {...props} value={dag} onChange={(e) => setDag(e.target.value as JobDag)} className="sm:w-64">
            {JOB_DAGS.map((d) => (
              <option key={d} value={d}>
                {d}
              </option>
            ))}
          </Select>
        )}
      </Field>
      <Field label="Conf (JSON)" error={confError} hint={<>The DAG's Params, e.g. <code className="font-mono">{CONF_EXAMPLES[dag]}</code></>}>
        {(props) => (
          <Textarea
            {...props}
            value={conf}
            onChange={(e) => setConf(e.target.value)}
            rows={6}
            spellCheck={false}
            className="font-mono text-xs"
          />
        )}
      </Field>
      <Button type="submit" data-testid="job-trigger" disabled={busy}>
        {busy ? "Triggering…" : "Trigger run"}
      </Button>
    </form>
  );
}

export default function JobsPage() {
  const [filter, setFilter] = useState<JobDag | "">("");
  const [runs, setRuns] = useState<JobRuns | null>(null);
  const [error, setError] = useState<string | null>(null);

  const load = useCallback(() => {
    return unwrap(client.GET("/api/v1/admin/jobs", { params: { query: { limit: 25, dag: filter || undefined } } }))
      .then((r) => {
        setRuns(r);
        setError(null);
      })
      .catch((e) => setError(describeError(e)));
  }, [filter]);

  useEffect(() => {
    setRuns(null);
    void load();
  }, [load]);

  const active = runs?.runs.some((r) => isActive(r.state)) ?? false;
  useEffect(() => {
    if (!active) return;
    const timer = setInterval(() => void load(), POLL_MS);
    return () => clearInterval(timer);
  }, [active, load]);

  return (
    <div className="space-y-4">
      <Card title="Trigger a training job">
        <TriggerForm
          onTriggered={(run) => {
            toast(
              run.dag_paused
                ? `${run.dag_id} is paused in Airflow: run ${run.run_id} waits queued until it is unpaused.`
                : `Triggered ${run.dag_id}: ${run.run_id}`,
              run.dag_paused ? "info" : "success",
            );
            void load();
          }}
        />
      </Card>
      <Card
        title="Runs"
        actions={
          <div className="flex flex-wrap items-center gap-2 text-sm">
            {runs && (
              <>
                <a href={runs.airflow_url} target="_blank" rel="noopener noreferrer" className="underline">
                  Airflow
                </a>
                <a href={runs.mlflow_url} target="_blank" rel="noopener noreferrer" className="underline">
                  MLflow
                </a>
              </>
            )}
            <Select aria-label="Filter by DAG" value={filter} onChange={(e) => setFilter(e.target.value as JobDag | "")} className="w-48">
              <option value="">All training DAGs</option>
              {JOB_DAGS.map((d) => (
                <option key={d} value={d}>
                  {d}
                </option>
              ))}
            </Select>
            <Button variant="outline" size="sm" onClick={() => void load()}>
              Refresh
            </Button>
          </div>
        }
      >
        <ErrorBanner message={error} />
        {!runs ? (
          !error && <Spinner />
        ) : runs.runs.length === 0 ? (
          <p className="text-sm text-muted-foreground">No runs yet.</p>
        ) : (
          <div className="overflow-x-auto">
            <table className="w-full min-w-[48rem] text-sm">
              <TableHead columns={["DAG", "Run", "State", "Queued", "Started", "Ended", "By", "Conf"]} />
              <tbody>
                {runs.runs.map((r) => (
                  <tr key={`${r.dag_id}/${r.run_id}`} data-testid="job-row" data-state={r.state} className="border-t border-border align-top">
                    <td className="py-1.5 pr-3 font-mono text-xs">{r.dag_id}</td>
                    <td className="py-1.5 pr-3 font-mono text-xs break-all">
                      <a href={r.airflow_url} target="_blank" rel="noopener noreferrer" className="underline">
                        {r.run_id}
                      </a>
                    </td>
                    <td className="py-1.5 pr-3">
                      <Badge className={STATE_STYLE[r.state]}>{r.state}</Badge>
                    </td>
                    <td className="py-1.5 pr-3 whitespace-nowrap">{when(r.queued_at)}</td>
                    <td className="py-1.5 pr-3 whitespace-nowrap">{when(r.start_date)}</td>
                    <td className="py-1.5 pr-3 whitespace-nowrap">{when(r.end_date)}</td>
                    <td className="py-1.5 pr-3 text-xs break-all">{r.triggered_by ?? "—"}</td>
                    <td className="py-1.5 font-mono text-xs break-all">{JSON.stringify(r.conf)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Card>
    </div>
  );
}
