import { X } from "lucide-react";
import { useToasts } from "../../store/toasts";
import { cn } from "../../lib/cn";

export function Toaster() {
  const toasts = useToasts((s) => s.toasts);
  const dismiss = useToasts((s) => s.dismiss);
  return (
    <div
      aria-live="polite"
      role="status"
      className="pointer-events-none fixed right-0 bottom-0 left-0 z-[60] flex flex-col items-center gap-2 p-4 sm:right-4 sm:left-auto sm:items-end"
    >
      {toasts.map((t) => (
        <div
          key={t.id}
          data-testid="toast"
          className={cn(
            "pointer-events-auto flex w-full max-w-sm items-center gap-3 rounded-lg border border-border bg-card px-4 py-3 text-sm shadow-lg",
            t.tone === "error" && "border-destructive text-destructive",
          )}
        >
          <span className="flex-1">{t.message}</span>
          {t.action && (
            <button
              type="button"
              data-testid={t.action.testId}
              className="rounded px-2 py-1 font-semibold text-primary hover:bg-accent focus-visible:outline-2 focus-visible:outline-ring"
              onClick={t.action.onClick}
            >
              {t.action.label}
            </button>
          )}
          <button
            type="button"
            aria-label="Dismiss"
            className="rounded p-1 hover:bg-accent focus-visible:outline-2 focus-visible:outline-ring"
            onClick={() => dismiss(t.id)}
          >
            <X className="size-4" aria-hidden />
          </button>
        </div>
      ))}
    </div>
  );
}
