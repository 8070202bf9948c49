import type { Plan, TokenLimits } from "../lib/types";
import { LimitBar } from "./ui/progress";

/** Today's and this month's tokens against the limits in force (the user's own, else
 * their plan's); the plan's name and monthly grant when there is one. */
export function PlanLimits({
  plan,
  limits,
  today,
  month,
}: {
  plan?: Plan | null;
  limits?: TokenLimits | null;
  today: number;
  month: number;
}) {
  return (
    <div className="space-y-3" data-testid="plan-limits">
      {plan !== undefined && (
        <p className="text-sm" data-testid="plan-name">
          {plan ? (
            <>
              Plan <span className="font-semibold">{plan.name}</span>: {plan.monthly_credits.toLocaleString("en-US")} credits
              granted each month (UTC).
              {plan.description && <span className="block text-muted-foreground">{plan.description}</span>}
            </>
          ) : (
            <span className="text-muted-foreground">No plan: no monthly grant.</span>
          )}
        </p>
      )}
      <LimitBar label="Tokens today (UTC)" used={today} limit={limits?.daily_token_limit} testId="limit-daily" />
      <LimitBar label="Tokens this month" used={month} limit={limits?.monthly_token_limit} testId="limit-monthly" />
    </div>
  );
}
