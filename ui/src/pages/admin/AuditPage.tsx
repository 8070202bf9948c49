import { useEffect, useState } from "react";
import { client, describeError, unwrap } from "../../lib/api";
import { formatDateTime } from "../../lib/dates";
import type { AuditEntry } from "../../lib/types";
import { Button } from "../../components/ui/button";
import { Input } from "../../components/ui/input";
import { Card, ErrorBanner, Spinner } from "../../components/ui/misc";

const PAGE = 50;

export function AuditPage() {
  const [entries, setEntries] = useState<AuditEntry[] | null>(null);
  const [action, setAction] = useState("");
  const [applied, setApplied] = useState("");
  const [offset, setOffset] = useState(0);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    setEntries(null);
    const query = { limit: PAGE, offset, action: applied || undefined };
    unwrap(client.GET("/api/v1/admin/audit", { params: { query } }))
      .then(setEntries)
      .catch((e) => setError(describeError(e)));
  }, [applied, offset]);

  return (
    <Card
      title="Audit log"
      actions={
        <form
          className="flex gap-2"
          onSubmit={(e) => {
            e.preventDefault();
            setOffset(0);
            setApplied(action.trim());
          }}
        >
          <Input aria-label="Filter by action" placeholder="action, e.g. model.promote" value={action} onChange={(e) => setAction(e.target.value)} className="w-56" />
          <Button type="submit" variant="outline">
            Filter
          </Button>
        </form>
      }
    >
      <ErrorBanner message={error} />
      {!entries ? (
        <Spinner />
      ) : entries.length === 0 ? (
        <p className="text-sm text-muted-foreground">No entries.</p>
      ) : (
        <div className="overflow-x-auto">
          <table className="w-full min-w-[40rem] text-sm">
            <thead className="text-left text-muted-foreground">
              <tr>
                <th className="py-1 pr-3 font-medium">When</th>
                <th className="py-1 pr-3 font-medium">Actor</th>
                <th className="py-1 pr-3 font-medium">Action</th>
                <th className="py-1 pr-3 font-medium">Target</th>
                <th className="py-1 font-medium">Details</th>
              </tr>
            </thead>
            <tbody>
              {entries.map((e) => (
                <tr key={e.id} data-testid="audit-row" className="border-t border-border align-top">
                  <td className="py-1.5 pr-3 whitespace-nowrap">{formatDateTime(e.created_at)}</td>
                  <td className="py-1.5 pr-3 font-mono text-xs break-all">{e.actor_id ?? "—"}</td>
                  <td className="py-1.5 pr-3 font-mono">{e.action}</td>
                  <td className="py-1.5 pr-3 font-mono text-xs break-all">{e.target}</td>
                  <td className="py-1.5 font-mono text-xs break-all">{JSON.stringify(e.detail)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <div className="mt-3 flex justify-between">
        <Button variant="outline" size="sm" disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - PAGE))}>
          Newer
        </Button>
        <Button variant="outline" size="sm" disabled={!entries || entries.length < PAGE} onClick={() => setOffset(offset + PAGE)}>
          Older
        </Button>
      </div>
    </Card>
  );
}
