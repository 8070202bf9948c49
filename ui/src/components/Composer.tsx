import { useEffect, useRef, type KeyboardEvent } from "react";
import { ArrowUp, Square } from "lucide-react";
import { MESSAGE_MAX } from "../api/limits";
import { Button } from "./ui/button";
import { cn } from "../lib/cn";
import { formatUsd } from "../lib/billing";
import { useCostEstimate } from "../lib/estimate";

export function Composer({
  value,
  onChange,
  onSend,
  onStop,
  phase,
  disabled,
  chatId,
}: {
  value: string;
  onChange: (v: string) => void;
  onSend: () => void;
  onStop: () => void;
  phase: "idle" | "sending" | "streaming";
  disabled?: boolean;
  /** The chat the message goes to: its estimate is asked for (none for a new chat). */
  chatId?: string | null;
}) {
  const estimate = useCostEstimate(phase === "idle" ? (chatId ?? null) : null, value);
  const ref = useRef<HTMLTextAreaElement>(null);
  const busy = phase !== "idle";

  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    el.style.height = "auto";
    el.style.height = `${Math.min(el.scrollHeight, 240)}px`;
  }, [value]);

  function onKeyDown(e: KeyboardEvent<HTMLTextAreaElement>) {
    if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      if (!busy && value.trim()) onSend();
    }
  }

  return (
    <>
    <form
      className="flex items-end gap-2 rounded-xl border border-input bg-background p-2 focus-within:outline-2 focus-within:outline-ring"
      onSubmit={(e) => {
        e.preventDefault();
        if (!busy && value.trim()) onSend();
      }}
    >
      <label htmlFor="composer" className="sr-only">
        Message
      </label>
      <textarea
        id="composer"
        ref={ref}
        data-testid="composer"
        rows={1}
        value={value}
        maxLength={MESSAGE_MAX}
        placeholder="Message Orchard (Enter to send, Shift+Enter for a new line)"
        onChange={(e) => onChange(e.target.value)}
        onKeyDown={onKeyDown}
        disabled={disabled}
        className="max-h-60 min-h-9 flex-1 resize-none bg-transparent px-2 py-1.5 text-sm outline-none placeholder:text-muted-foreground"
      />
      {busy ? (
        <Button data-testid="stop" variant="outline" size="icon" aria-label="Stop" onClick={onStop}>
          <Square className="size-4 fill-current" aria-hidden />
        </Button>
      ) : null}
      <Button
        type="submit"
        data-testid="send"
        size="icon"
        aria-label="Send"
        disabled={busy || !value.trim() || disabled}
        className={busy ? "hidden" : undefined}
      >
        <ArrowUp className="size-4" aria-hidden />
      </Button>
    </form>
    {estimate && (
      <p
        data-testid="cost-estimate"
        className={cn("px-2 pt-1 text-right text-xs text-muted-foreground", estimate.credits_max > estimate.balance && "text-destructive")}
        title={`Up to ${estimate.prompt_tokens_max} prompt and ${estimate.completion_tokens_max} completion tokens`}
      >
        Costs at most {estimate.credits_max} credits
        {formatUsd(estimate.cost_usd_max) ? ` (${formatUsd(estimate.cost_usd_max)})` : ""}
        {estimate.credits_max > estimate.balance ? ` — more than your ${estimate.balance} credits` : ""}
      </p>
    )}
    </>
  );
}
