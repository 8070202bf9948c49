import { useEffect, useState } from "react";
import { client, describeError, unwrap } from "../../lib/api";
import { formatDateTime } from "../../lib/dates";
import type { CreditStatement, UsageHistory } from "../../lib/types";
import { formatUsd } from "../../lib/billing";
import { PlanLimits } from "../../components/PlanLimits";
import { Card, ErrorBanner, Spinner } from "../../components/ui/misc";
import { useSession } from "../../store/session";

export function CreditsPage() {
  const [statement, setStatement] = useState<CreditStatement | null>(null);
  const [usage, setUsage] = useState<UsageHistory | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    unwrap(client.GET("/api/v1/credits"))
      .then((s) => {
        setStatement(s);
        useSession.setState({ credits: s.balance });
      })
      .catch((e) => setError(describeError(e)));
    // the counts toward the limits (today's and this month's tokens)
    unwrap(client.GET("/api/v1/usage", { params: { query: { by: "day", days: 1 } } }))
      .then(setUsage)
      .catch(() => undefined);
  }, []);
  if (error) return <ErrorBanner message={error} />;
  if (!statement) return <Spinner />;
  return (
    <div className="space-y-4">
    <Card title="Plan and limits">
      <PlanLimits
        plan={statement.plan ?? null}
        limits={statement.limits ?? usage?.limits}
        today={usage?.tokens_today ?? 0}
        month={usage?.tokens_this_month ?? 0}
      />
    </Card>
    <Card title="Credits">
      <p className="mb-4 text-3xl font-semibold" data-testid="credit-balance">
        {statement.balance}
        <span className="ml-2 text-sm font-normal text-muted-foreground">credits left</span>
        {formatUsd(statement.balance_usd) && (
          <span className="ml-2 text-sm font-normal text-muted-foreground" data-testid="credit-balance-usd">
            (≈ {formatUsd(statement.balance_usd)})
          </span>
        )}
      </p>
      {!!statement.credit_price_usd && (
        <p className="-mt-3 mb-4 text-xs text-muted-foreground" data-testid="credit-price">
          One credit costs {formatUsd(statement.credit_price_usd)}.
        </p>
      )}
      {statement.entries.length === 0 ? (
        <p className="text-sm text-muted-foreground">No entries yet.</p>
      ) : (
        <div className="overflow-x-auto">
          <table className="w-full text-sm">
            <thead className="text-left text-muted-foreground">
              <tr>
                <th className="py-1 pr-3 font-medium">When</th>
                <th className="py-1 pr-3 font-medium">Kind</th>
                <th className="py-1 pr-3 text-right font-medium">Amount</th>
                <th className="py-1 pr-3 text-right font-medium">Balance</th>
                <th className="py-1 font-medium">Reason</th>
              </tr>
            </thead>
            <tbody>
              {statement.entries.map((e) => (
                <tr key={e.id} className="border-t border-border" data-testid="credit-entry">
                  <td className="py-1.5 pr-3 whitespace-nowrap">{formatDateTime(e.created_at)}</td>
                  <td className="py-1.5 pr-3">{e.kind}</td>
                  <td className="py-1.5 pr-3 text-right font-mono">{e.kind === "debit" ? `−${e.amount}` : `+${e.amount}`}</td>
                  <td className="py-1.5 pr-3 text-right font-mono">{e.balance_after}</td>
                  <td className="py-1.5 break-words">{e.reason}</td>
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
