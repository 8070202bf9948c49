import { cn } from "../../lib/cn";
import { formatTokens, usageFraction } from "../../lib/billing";

/** Tokens used against a limit: an accessible progress bar (none when unlimited). */
export function LimitBar({ label, used, limit, testId }: { label: string; used: number; limit: number | null | undefined; testId?: string }) {
  const fraction = usageFraction(used, limit);
  const percent = fraction === null ? null : Math.round(fraction * 100);
  return (
    <div data-testid={testId} className="space-y-1">
      <div className="flex justify-between gap-2 text-sm">
        <span className="font-medium">{label}</span>
        <span className="font-mono text-muted-foreground" data-testid={testId && `${testId}-text`}>
          {used.toLocaleString("en-US")} / {formatTokens(limit)}
        </span>
      </div>
      {percent === null ? (
        <p className="text-xs text-muted-foreground">No limit.</p>
      ) : (
        <div
          role="progressbar"
          aria-label={label}
          aria-valuemin={0}
          aria-valuemax={100}
          aria-valuenow={percent}
          aria-valuetext={`${used} of ${limit} tokens (${percent}%)`}
          className="h-2 w-full overflow-hidden rounded-full bg-muted"
        >
          <div
            className={cn("h-full rounded-full", percent >= 100 ? "bg-destructive" : percent >= 80 ? "bg-amber-500" : "bg-primary")}
            style={{ width: `${percent}%` }}
          />
        </div>
      )}
    </div>
  );
}
