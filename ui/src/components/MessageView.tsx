import { useState } from "react";
import { Check, Copy, Pencil, RefreshCw, ThumbsDown, ThumbsUp } from "lucide-react";
import { FEEDBACK_COMMENT_MAX } from "../api/limits";
import { describeError } from "../lib/api";
import { copyText } from "../lib/clipboard";
import { cn } from "../lib/cn";
import { formatUsd } from "../lib/billing";
import { formatModelVersion } from "../lib/format";
import type { Message } from "../lib/types";
import { useConversation } from "../store/conversation";
import { toast } from "../store/toasts";
import { LazyMarkdown as Markdown } from "./LazyMarkdown";
import { Sources } from "./Sources";
import { Button } from "./ui/button";
import { Textarea } from "./ui/input";

const iconButton =
  "inline-flex items-center gap-1 rounded px-1.5 py-1 text-xs text-muted-foreground hover:bg-accent hover:text-foreground " +
  "focus-visible:outline-2 focus-visible:outline-ring disabled:opacity-40 aria-pressed:text-primary";

export interface MessageViewProps {
  chatId: string;
  message: Message;
  /** Fallback when the answer does not name its version yet (streaming). */
  modelAlias: string;
  liveTokens: number | null;
  canRegenerate: boolean;
  canEdit: boolean;
  busy: boolean;
}

function FeedbackControls({ chatId, message }: { chatId: string; message: Message }) {
  const feedback = useConversation((s) => s.feedback[message.id]);
  const setFeedback = useConversation((s) => s.setFeedback);
  const clearFeedback = useConversation((s) => s.clearFeedback);
  const [commenting, setCommenting] = useState(false);
  const [comment, setComment] = useState("");
  const disabled = message.status === "streaming";

  async function rate(rating: "up" | "down") {
    try {
      if (feedback?.rating === rating) {
        await clearFeedback(chatId, message.id);
        setCommenting(false);
      } else {
        await setFeedback(chatId, message.id, rating, feedback?.comment ?? "");
        setComment(feedback?.comment ?? "");
        setCommenting(true);
      }
    } catch (e) {
      toast(`Feedback not saved: ${describeError(e)}`, "error");
    }
  }

  return (
    <>
      <button
        type="button"
        className={iconButton}
        data-testid="thumbs-up"
        aria-label="Good answer"
        aria-pressed={feedback?.rating === "up"}
        disabled={disabled}
        onClick={() => rate("up")}
      >
        <ThumbsUp className={cn("size-3.5", feedback?.rating === "up" && "fill-current")} aria-hidden />
      </button>
      <button
        type="button"
        className={iconButton}
        data-testid="thumbs-down"
        aria-label="Bad answer"
        aria-pressed={feedback?.rating === "down"}
        disabled={disabled}
        onClick={() => rate("down")}
      >
        <ThumbsDown className={cn("size-3.5", feedback?.rating === "down" && "fill-current")} aria-hidden />
      </button>
      {commenting && feedback && (
        <form
          className="mt-2 flex w-full flex-col gap-2 sm:flex-row"
          onSubmit={async (e) => {
            e.preventDefault();
            try {
              await setFeedback(chatId, message.id, feedback.rating, comment.trim());
              setCommenting(false);
              toast("Thanks for the feedback.", "success");
            } catch (err) {
              toast(`Feedback not saved: ${describeError(err)}`, "error");
            }
          }}
        >
          <label className="sr-only" htmlFor={`comment-${message.id}`}>
            Comment (optional)
          </label>
          <input
            id={`comment-${message.id}`}
            data-testid="feedback-comment"
            maxLength={FEEDBACK_COMMENT_MAX}
            value={comment}
            placeholder="Add a comment (optional)"
            onChange={(e) => setComment(e.target.value)}
            className="h-8 flex-1 rounded-md border border-input bg-background px-2 text-sm"
          />
          <div className="flex gap-2">
            <Button size="sm" type="submit" data-testid="feedback-submit">
              Send
            </Button>
            <Button size="sm" variant="ghost" onClick={() => setCommenting(false)}>
              Skip
            </Button>
          </div>
        </form>
      )}
    </>
  );
}

export function MessageView({ chatId, message, modelAlias, liveTokens, canRegenerate, canEdit, busy }: MessageViewProps) {
  const regenerate = useConversation((s) => s.regenerate);
  const edit = useConversation((s) => s.edit);
  const [copied, setCopied] = useState(false);
  const [editing, setEditing] = useState(false);
  const [draft, setDraft] = useState(message.content);
  const isUser = message.role === "user";
  const streaming = message.status === "streaming";

  const tokens =
    streaming || message.completion_tokens == null ? liveTokens : message.completion_tokens;

  async function copy() {
    if (await copyText(message.content)) {
      setCopied(true);
      setTimeout(() => setCopied(false), 1500);
    }
  }

  return (
    <article
      data-testid="message"
      data-role={message.role}
      data-status={message.status}
      data-message-id={message.id}
      aria-label={isUser ? "You" : "Assistant"}
      className={cn("flex w-full", isUser ? "justify-end" : "justify-start")}
    >
      <div
        className={cn(
          "min-w-0 rounded-2xl px-4 py-3",
          isUser ? "max-w-[85%] bg-primary/10" : "w-full max-w-full",
          message.status === "failed" && "border border-destructive/40",
        )}
      >
        {editing ? (
          <form
            onSubmit={async (e) => {
              e.preventDefault();
              const text = draft.trim();
              if (!text) return;
              if (await edit(chatId, message.id, draft)) setEditing(false);
            }}
            className="space-y-2"
          >
            <label className="sr-only" htmlFor={`edit-${message.id}`}>
              Edit message
            </label>
            <Textarea
              id={`edit-${message.id}`}
              data-testid="edit-input"
              autoFocus
              rows={3}
              value={draft}
              onChange={(e) => setDraft(e.target.value)}
              onKeyDown={(e) => e.key === "Escape" && setEditing(false)}
              className="min-w-[min(60vw,28rem)]"
            />
            <div className="flex justify-end gap-2">
              <Button size="sm" variant="ghost" onClick={() => setEditing(false)}>
                Cancel
              </Button>
              <Button size="sm" type="submit" data-testid="edit-submit" disabled={busy || !draft.trim()}>
                Save and send
              </Button>
            </div>
          </form>
        ) : (
          <div data-testid="message-content" className="text-[0.95rem] leading-relaxed">
            {message.content ? (
              <Markdown text={message.content} />
            ) : streaming ? (
              <span className="inline-flex gap-1 text-muted-foreground" aria-label="Writing">
                <span className="animate-pulse">●</span>
                <span className="animate-pulse [animation-delay:150ms]">●</span>
                <span className="animate-pulse [animation-delay:300ms]">●</span>
              </span>
            ) : null}
          </div>
        )}
        {!isUser && !editing && <Sources citations={message.citations ?? []} />}
        {message.status === "failed" && message.error && (
          <p className="mt-2 text-sm text-destructive" data-testid="message-error">
            The answer failed: {message.error}
          </p>
        )}
        {message.status === "partial" && !isUser && (
          <p className="mt-2 text-xs text-muted-foreground">Stopped: the answer is incomplete.</p>
        )}
        {!editing && (
          <div className="mt-2 flex flex-wrap items-center gap-1 text-xs text-muted-foreground">
            {!isUser && (
              <>
                <span data-testid="message-model" className="mr-1 font-mono" title="Model version that answered">
                  {formatModelVersion(message.model_version) ?? modelAlias}
                </span>
                <span data-testid="token-count" className="mr-1" title={message.prompt_tokens != null ? `${message.prompt_tokens} prompt tokens` : undefined} aria-live={streaming ? "polite" : undefined}>
                  {tokens ?? 0} tokens
                </span>
                {!streaming && message.credits != null && (
                  <span data-testid="message-cost" className="mr-1" title="What this answer cost">
                    · {message.credits} credits{formatUsd(message.cost_usd) ? ` (${formatUsd(message.cost_usd)})` : ""}
                  </span>
                )}
              </>
            )}
            <button type="button" className={iconButton} data-testid="copy" aria-label={copied ? "Copied" : "Copy message"} onClick={copy}>
              {copied ? <Check className="size-3.5" aria-hidden /> : <Copy className="size-3.5" aria-hidden />}
            </button>
            {isUser && canEdit && (
              <button
                type="button"
                className={iconButton}
                data-testid="edit"
                aria-label="Edit and resend"
                disabled={busy}
                onClick={() => {
                  setDraft(message.content);
                  setEditing(true);
                }}
              >
                <Pencil className="size-3.5" aria-hidden />
              </button>
            )}
            {!isUser && canRegenerate && (
              <button
                type="button"
                className={iconButton}
                data-testid="regenerate"
                aria-label="Regenerate answer"
                disabled={busy}
                onClick={() => regenerate(chatId, message.id)}
              >
                <RefreshCw className="size-3.5" aria-hidden />
              </button>
            )}
            {!isUser && <FeedbackControls chatId={chatId} message={message} />}
          </div>
        )}
      </div>
    </article>
  );
}
