// Each chat's messages and its streaming answer. The network loop lives here, outside
// React, so navigating from "/" to "/c/:id" mid-turn loses nothing; the state changes
// themselves are the pure streamReducer (lib/stream.ts).
import { create } from "zustand";
import { ApiError, client, describeError, unwrap } from "../lib/api";
import {
  eventToAction,
  initialConversation,
  readSse,
  streamReducer,
  type ConversationState,
  type StreamAction,
  type TurnMode,
} from "../lib/stream";
import type { Feedback, Message } from "../lib/types";
import { useChats } from "./chats";
import { useSession } from "./session";

/** The draft of the chat not created yet ("/"). */
export const NEW_CHAT = "new";

interface ConversationStore {
  byChat: Record<string, ConversationState>;
  drafts: Record<string, string>;
  feedback: Record<string, Feedback>;
  loading: Record<string, boolean>;
  setDraft: (chatId: string, text: string) => void;
  moveDraft: (from: string, to: string) => void;
  dispatch: (chatId: string, actions: StreamAction | StreamAction[]) => void;
  loadMessages: (chatId: string) => Promise<void>;
  send: (chatId: string, content: string) => Promise<boolean>;
  regenerate: (chatId: string, messageId: string) => Promise<boolean>;
  edit: (chatId: string, messageId: string, content: string) => Promise<boolean>;
  stop: (chatId: string) => Promise<void>;
  setFeedback: (chatId: string, messageId: string, rating: "up" | "down", comment: string) => Promise<void>;
  clearFeedback: (chatId: string, messageId: string) => Promise<void>;
}

const controllers = new Map<string, AbortController>();
/** A turn's answer is read as a stream of server-sent events. */
const SSE = { parseAs: "stream", headers: { Accept: "text/event-stream" } } as const;
const turnSeq = new Map<string, number>();

export const selectConversation = (chatId: string) => (s: ConversationStore) =>
  s.byChat[chatId] ?? initialConversation;

export const useConversation = create<ConversationStore>((set, get) => {
  const state = (chatId: string) => get().byChat[chatId] ?? initialConversation;

  /** `start` opens the turn's SSE answer (send, regenerate or edit) with `signal`. */
  async function runTurn(
    chatId: string,
    mode: TurnMode,
    start: (signal: AbortSignal) => Promise<{ data?: ReadableStream<Uint8Array> | null }>,
    replaceFrom: string | null,
  ): Promise<boolean> {
    if (state(chatId).phase !== "idle") return false;
    turnSeq.set(chatId, (turnSeq.get(chatId) ?? 0) + 1);
    const controller = new AbortController();
    controllers.set(chatId, controller);
    get().dispatch(chatId, { type: "send" });
    let started = false;
    try {
      const { data: body } = await start(controller.signal);
      if (!body) throw new Error("The answer had no body.");
      for await (const events of readSse(body)) {
        const actions = events
          .map((e) => eventToAction(e, mode, replaceFrom))
          .filter((a): a is StreamAction => a !== null);
        if (!started && actions.some((a) => a.type === "start")) {
          started = true;
          get().setDraft(chatId, "");
        }
        get().dispatch(chatId, actions);
      }
      if (state(chatId).streamingId) {
        get().dispatch(chatId, { type: "ended", reason: "The connection closed before the answer finished." });
        void get().loadMessages(chatId);
      }
    } catch (error) {
      const aborted = controller.signal.aborted;
      if (aborted) {
        get().dispatch(chatId, { type: "stopped" });
        if (!started) void get().loadMessages(chatId);
      } else if (!started) {
        get().dispatch(chatId, { type: "error", error: describeTurnError(error, mode) });
        // a 502 serving_failed saved the user message and the failed answer
        if (error instanceof ApiError && error.status === 502) void get().loadMessages(chatId);
      } else {
        get().dispatch(chatId, { type: "ended", reason: describeError(error) });
        void get().loadMessages(chatId);
      }
    } finally {
      if (controllers.get(chatId) === controller) controllers.delete(chatId);
      void useSession.getState().loadCredits();
      void useChats.getState().load().catch(() => undefined);
    }
    return started;
  }

  return {
    byChat: {},
    drafts: {},
    feedback: {},
    loading: {},
    setDraft(chatId, text) {
      set({ drafts: { ...get().drafts, [chatId]: text } });
    },
    moveDraft(from, to) {
      const drafts = { ...get().drafts, [to]: get().drafts[from] ?? "" };
      delete drafts[from];
      set({ drafts });
    },
    dispatch(chatId, actions) {
      const list = Array.isArray(actions) ? actions : [actions];
      if (!list.length) return;
      let next = state(chatId);
      for (const action of list) next = streamReducer(next, action);
      set({ byChat: { ...get().byChat, [chatId]: next } });
    },
    async loadMessages(chatId) {
      const seq = turnSeq.get(chatId) ?? 0;
      set({ loading: { ...get().loading, [chatId]: true } });
      try {
        const messages = await unwrap(
          client.GET("/api/v1/chats/{chat_id}/messages", { params: { path: { chat_id: chatId } } }),
        );
        if ((turnSeq.get(chatId) ?? 0) !== seq || state(chatId).phase !== "idle") return;
        get().dispatch(chatId, { type: "load", messages });
        set({ feedback: feedbackFrom(get().feedback, messages) });
      } catch (error) {
        get().dispatch(chatId, { type: "error", error: describeError(error) });
      } finally {
        set({ loading: { ...get().loading, [chatId]: false } });
      }
    },
    send(chatId, content) {
      const turn = (signal: AbortSignal) =>
        client.POST("/api/v1/chats/{chat_id}/messages", {
          params: { path: { chat_id: chatId } },
          body: { content },
          ...SSE,
          signal,
        });
      return runTurn(chatId, "send", turn, null);
    },
    regenerate(chatId, messageId) {
      const turn = (signal: AbortSignal) =>
        client.POST("/api/v1/chats/{chat_id}/messages/{message_id}/regenerate", {
          params: { path: { chat_id: chatId, message_id: messageId } },
          ...SSE,
          signal,
        });
      return runTurn(chatId, "regenerate", turn, messageId);
    },
    edit(chatId, messageId, content) {
      const turn = (signal: AbortSignal) =>
        client.POST("/api/v1/chats/{chat_id}/messages/{message_id}/edit", {
          params: { path: { chat_id: chatId, message_id: messageId } },
          body: { content },
          ...SSE,
          signal,
        });
      return runTurn(chatId, "edit", turn, messageId);
    },
    async stop(chatId) {
      const controller = controllers.get(chatId);
      const id = state(chatId).streamingId;
      let saved: Message | null = null;
      if (id) {
        try {
          saved = await unwrap(
            client.POST("/api/v1/chats/{chat_id}/messages/{message_id}/stop", {
              params: { path: { chat_id: chatId, message_id: id } },
            }),
          );
        } catch {
          /* not streaming any more, or already gone: aborting saves what arrived */
        }
      }
      controller?.abort();
      get().dispatch(chatId, { type: "stopped", message: saved });
    },
    async setFeedback(chatId, messageId, rating, comment) {
      const feedback = await unwrap(
        client.PUT("/api/v1/chats/{chat_id}/messages/{message_id}/feedback", {
          params: { path: { chat_id: chatId, message_id: messageId } },
          body: { rating, comment },
        }),
      );
      set({ feedback: { ...get().feedback, [messageId]: feedback } });
    },
    async clearFeedback(chatId, messageId) {
      await client.DELETE("/api/v1/chats/{chat_id}/messages/{message_id}/feedback", {
        params: { path: { chat_id: chatId, message_id: messageId } },
      });
      const feedback = { ...get().feedback };
      delete feedback[messageId];
      set({ feedback });
    },
  };
});

/** The thumbs state the server remembers, merged over what this tab knows: a message
 * whose `feedback` is null has none (rated and cleared elsewhere); one without the field
 * (an older server) keeps what this tab set. */
export function feedbackFrom(known: Record<string, Feedback>, messages: Message[]): Record<string, Feedback> {
  const next = { ...known };
  for (const m of messages) {
    if (m.feedback === undefined) continue;
    if (m.feedback === null) delete next[m.id];
    else next[m.id] = { message_id: m.id, rating: m.feedback.rating, comment: m.feedback.comment ?? "" };
  }
  return next;
}

function describeTurnError(error: unknown, mode: TurnMode): string {
  if (error instanceof ApiError && error.status === 404 && mode !== "send") {
    const what = mode === "regenerate" ? "Regenerate" : "Edit and resend";
    // an unknown route answers Starlette's plain "Not Found"; a missing message names itself
    return error.detail === "Not Found"
      ? `${what} is not available on this server yet (404).`
      : `${what} failed: ${error.detail}.`;
  }
  return describeError(error);
}
