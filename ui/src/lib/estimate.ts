// The composer's cost estimate: POST /chats/{id}/estimate with the text being typed,
// debounced (one request once typing pauses, the previous one aborted), for the chat's
// own history, system prompt and max_tokens. The API computes it (the price per credit
// is not published elsewhere), so the UI asks rather than guessing.
import { useEffect, useState } from "react";
import { client, unwrap } from "./api";
import type { CostEstimate } from "./types";

export const ESTIMATE_DEBOUNCE_MS = 400;

export function useCostEstimate(chatId: string | null, text: string, delay = ESTIMATE_DEBOUNCE_MS): CostEstimate | null {
  const [estimate, setEstimate] = useState<{ key: string; value: CostEstimate } | null>(null);
  const content = text.trim() ? text : "";
  const key = `${chatId}\u0000${content}`;
  useEffect(() => {
    if (!chatId || !content) return;
    const controller = new AbortController();
    const timer = setTimeout(() => {
      unwrap(
        client.POST("/api/v1/chats/{chat_id}/estimate", {
          params: { path: { chat_id: chatId } },
          body: { content },
          signal: controller.signal,
        }),
      )
        .then((value) => setEstimate({ key, value }))
        .catch(() => undefined); // an estimate is a hint: a failure shows none
    }, delay);
    return () => {
      clearTimeout(timer);
      controller.abort();
    };
  }, [chatId, content, key, delay]);
  // only the estimate of what is typed now: stale figures never show
  return estimate && estimate.key === key ? estimate.value : null;
}
