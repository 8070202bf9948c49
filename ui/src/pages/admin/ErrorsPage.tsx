import { useCallback, useEffect, useState } from "react";
import { client, describeError, unwrap } from "../../lib/api";
import { formatDateTime } from "../../lib/dates";
import type { RecentError } from "../../lib/types";
import { Button } from "../../components/ui/button";
import { Input, Select } from "../../components/ui/input";
import { Card, ErrorBanner, Spinner } from "../../components/ui/misc";
import { TableHead } from "../../components/ui/table";

/** The API process's recent ERROR log records (newest first), findable by request id. */
export default function ErrorsPage() {
  const [limit, setLimit] = useState(50);
  const [errors, setErrors] = useState<RecentError[] | null>(null);
  const [requestId, setRequestId] = useState("");
  const [failure, setFailure] = useState<string | null>(null);

  const load = useCallback(() => {
    setFailure(null);
    return unwrap(client.GET("/api/v1/admin/errors", { params: { query: { limit } } }))
      .then(setErrors)
      .catch((e) => setFailure(describeError(e)));
  }, [limit]);

  useEffect(() => {
    setErrors(null);
    void load();
  }, [load]);

  const wanted = requestId.trim();
  const shown = errors?.filter((e) => !wanted || e.request_id?.includes(wanted)) ?? null;
  return (
    <Card
      title="Recent errors"
      actions={
        <div className="flex flex-wrap items-center gap-2">
          <Input aria-label="Filter by request id" placeholder="request id" value={requestId} onChange={(e) => setRequestId(e.target.value)} className="w-56" />
          <Select aria-label="How many" value={limit} onChange={(e) => setLimit(Number(e.target.value))} className="w-24">
            <option value={50}>50</option>
            <option value={100}>100</option>
            <option value={200}>200</option>
          </Select>
          <Button variant="outline" size="sm" onClick={() => void load()}>
            Refresh
          </Button>
        </div>
      }
    >
      <p className="mb-3 text-xs text-muted-foreground">
        The last errors this API process logged (the log files have all of them, with tracebacks).
      </p>
      <ErrorBanner message={failure} />
      {!shown ? (
        !failure && <Spinner />
      ) : shown.length === 0 ? (
        <p className="text-sm text-muted-foreground">No errors.</p>
      ) : (
        <div className="overflow-x-auto">
          <table className="w-full min-w-[48rem] text-sm">
            <TableHead columns={["When", "Request id", "Request", "Exception", "Message"]} />
            <tbody>
              {shown.map((e, i) => (
                <tr key={`${e.time}-${i}`} data-testid="error-row" className="border-t border-border align-top">
                  <td className="py-1.5 pr-3 whitespace-nowrap">{formatDateTime(e.time)}</td>
                  <td className="py-1.5 pr-3 font-mono text-xs break-all">{e.request_id ?? "—"}</td>
                  <td className="py-1.5 pr-3 font-mono text-xs break-all">{e.path ? `${e.method ?? ""} ${e.path}` : "—"}</td>
                  <td className="py-1.5 pr-3 font-mono text-xs break-all">{e.exception ?? "—"}</td>
                  <td className="py-1.5 text-xs break-words">
                    <span className="font-mono text-muted-foreground">{e.logger}</span> {e.message}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Card>
  );
}
