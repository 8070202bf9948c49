// Server-sent events over fetch (EventSource cannot POST) and the pure state
// transitions of a chat's messages while an answer streams. No React, no network:
// everything here is unit-tested in stream.test.ts.

import type { Citation, Message } from "./types";

// -- SSE parsing ------------------------------------------------------------------------
export interface SseEvent {
  event: string;
  data: string;
  id?: string;
}

/** An incremental parser of the text/event-stream format (WHATWG HTML §9.2): feed it
 * byte chunks split anywhere (inside a line, a CRLF pair or a UTF-8 character) and it
 * returns the events completed so far. */
export class SseParser {
  private decoder = new TextDecoder("utf-8");
  private buffer = "";
  private started = false;
  private eventType = "";
  private data: string[] = [];
  private hasData = false;
  private lastId: string | undefined;

  feed(chunk: Uint8Array | string): SseEvent[] {
    const text = typeof chunk === "string" ? chunk : this.decoder.decode(chunk, { stream: true });
    return this.push(text, false);
  }

  /** The stream ended: flush. An event without its closing blank line is dropped, as the
   * spec says. */
  end(): SseEvent[] {
    return this.push(this.decoder.decode(), true);
  }

  private push(text: string, final: boolean): SseEvent[] {
    this.buffer += text;
    if (!this.started && this.buffer.length > 0) {
      if (this.buffer.charCodeAt(0) === 0xfeff) this.buffer = this.buffer.slice(1);
      this.started = this.buffer.length > 0;
    }
    const events: SseEvent[] = [];
    let start = 0;
    for (;;) {
      let i = start;
      while (i < this.buffer.length && this.buffer[i] !== "\n" && this.buffer[i] !== "\r") i++;
      if (i >= this.buffer.length) break;
      let end = i + 1;
      if (this.buffer[i] === "\r") {
        if (i + 1 >= this.buffer.length && !final) break; // a "\n" may follow in the next chunk
        if (this.buffer[i + 1] === "\n") end = i + 2;
      }
      const event = this.line(this.buffer.slice(start, i));
      if (event) events.push(event);
      start = end;
    }
    this.buffer = this.buffer.slice(start);
    if (final) this.buffer = "";
    return events;
  }

  private line(line: string): SseEvent | null {
    if (line === "") {
      if (!this.hasData) {
        this.eventType = "";
        return null;
      }
      const event: SseEvent = { event: this.eventType || "message", data: this.data.join("\n") };
      if (this.lastId !== undefined) event.id = this.lastId;
      this.eventType = "";
      this.data = [];
      this.hasData = false;
      return event;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.eventType = value;
    else if (field === "data") {
      this.data.push(value);
      this.hasData = true;
    } else if (field === "id" && !value.includes("\0")) this.lastId = value;
    return null;
  }
}

/** Read a fetch Response body as SSE events. */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent[]> {
  const parser = new SseParser();
  const reader = body.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const events = parser.feed(value);
      if (events.length) yield events;
    }
    const rest = parser.end();
    if (rest.length) yield rest;
  } finally {
    reader.releaseLock();
  }
}

// -- message state ----------------------------------------------------------------------
export type TurnMode = "send" | "regenerate" | "edit";

export interface ConversationState {
  messages: Message[];
  /** The assistant message streaming now. */
  streamingId: string | null;
  /** Pieces of the streaming answer received (serving sends about a token a piece). */
  liveTokens: number;
  /** sending: the request is out, no `start` yet; streaming: between start and the end. */
  phase: "idle" | "sending" | "streaming";
  error: string | null;
}

export const initialConversation: ConversationState = {
  messages: [],
  streamingId: null,
  liveTokens: 0,
  phase: "idle",
  error: null,
};

export type StreamAction =
  | { type: "load"; messages: Message[] }
  | { type: "send" }
  | {
      type: "start";
      mode: TurnMode;
      user_message: Message | null;
      assistant_message: Message;
      /** Regenerate: the old answer; edit: the edited user message. It and every later
       * message leave the list. */
      replaceFrom?: string | null;
    }
  | { type: "delta"; content: string }
  | { type: "citations"; citations: Citation[] }
  | { type: "done"; message: Message }
  | { type: "failed"; message: Message }
  | { type: "stopped"; message?: Message | null }
  | { type: "ended"; reason: string }
  | { type: "error"; error: string }
  | { type: "dismiss" };

function replaceById(messages: Message[], message: Message): Message[] {
  const i = messages.findIndex((m) => m.id === message.id);
  if (i === -1) return [...messages, message];
  const next = messages.slice();
  next[i] = message;
  return next;
}

function longer(a: string, b: string): string {
  return b.length > a.length ? b : a;
}

export function streamReducer(state: ConversationState, action: StreamAction): ConversationState {
  switch (action.type) {
    case "load":
      return { ...state, messages: action.messages };
    case "send":
      return { ...state, phase: "sending", error: null };
    case "start": {
      let messages = state.messages;
      if (action.replaceFrom) {
        const at = messages.findIndex((m) => m.id === action.replaceFrom);
        if (at !== -1) messages = messages.slice(0, at);
      }
      const user = action.user_message;
      if (user) {
        const known = messages.some((m) => m.id === user.id);
        const last = messages[messages.length - 1];
        if (known) messages = replaceById(messages, user);
        else if (action.mode === "regenerate" && last?.role === "user")
          messages = [...messages.slice(0, -1), user];
        else messages = [...messages, user];
      }
      const assistant: Message = { ...action.assistant_message, status: "streaming" };
      return {
        ...state,
        messages: replaceById(messages, assistant),
        streamingId: assistant.id,
        liveTokens: 0,
        phase: "streaming",
        error: null,
      };
    }
    case "delta": {
      if (!state.streamingId) return state;
      const id = state.streamingId;
      return {
        ...state,
        liveTokens: state.liveTokens + 1,
        messages: state.messages.map((m) =>
          m.id === id ? { ...m, content: m.content + action.content } : m,
        ),
      };
    }
    case "citations": {
      if (!state.streamingId) return state;
      const id = state.streamingId;
      return {
        ...state,
        messages: state.messages.map((m) => (m.id === id ? { ...m, citations: action.citations } : m)),
      };
    }
    case "done": {
      const local = state.messages.find((m) => m.id === action.message.id);
      const message: Message = {
        ...action.message,
        // the saved text is authoritative; it can only lag if the last save was missed
        content: action.message.content || local?.content || "",
      };
      return {
        ...state,
        messages: replaceById(state.messages, message),
        streamingId: null,
        phase: "idle",
      };
    }
    case "failed": {
      const local = state.messages.find((m) => m.id === action.message.id);
      const message: Message = {
        ...action.message,
        status: "failed",
        content: longer(action.message.content ?? "", local?.content ?? ""),
      };
      return {
        ...state,
        messages: replaceById(state.messages, message),
        streamingId: null,
        phase: "idle",
        error: message.error ? `The answer failed: ${message.error}` : "The answer failed.",
      };
    }
    case "stopped": {
      const id = action.message?.id ?? state.streamingId;
      if (!id) return { ...state, phase: "idle", streamingId: null };
      const local = state.messages.find((m) => m.id === id);
      if (!local) return { ...state, phase: "idle", streamingId: null };
      const server = action.message ?? null;
      // a `done` that already arrived says how it ended; a stop only marks a live answer
      const status =
        local.status === "streaming" ? "partial" : server && server.status !== "streaming" ? server.status : local.status;
      const message: Message = {
        ...local,
        ...(server ?? {}),
        status,
        content: longer(server?.content ?? "", local.content),
      };
      return {
        ...state,
        messages: replaceById(state.messages, message),
        streamingId: null,
        phase: "idle",
      };
    }
    case "ended": {
      // the stream closed without done/failed: keep what arrived
      const id = state.streamingId;
      return {
        ...state,
        messages: id
          ? state.messages.map((m) =>
              m.id === id && m.status === "streaming" ? { ...m, status: "failed", error: action.reason } : m,
            )
          : state.messages,
        streamingId: null,
        phase: "idle",
        error: id ? action.reason : state.error,
      };
    }
    case "error":
      return { ...state, phase: "idle", error: action.error };
    case "dismiss":
      return { ...state, error: null };
  }
}

/** The payloads of a turn's events (platform_api/routes/messages.py): the messages are the
 * schema's MessagePublic; the SSE body itself has no schema in the OpenAPI document. */
export interface TurnEvents {
  start: { user_message?: Message | null; assistant_message: Message };
  delta: { content: string };
  citations: { citations: Citation[] };
  done: Message;
  failed: Message;
}

/** An SSE event of POST /chats/{id}/messages as a reducer action (null: not ours). */
export function eventToAction(event: SseEvent, mode: TurnMode, replaceFrom?: string | null): StreamAction | null {
  let data: unknown;
  try {
    data = JSON.parse(event.data);
  } catch {
    return null;
  }
  if (data === null || typeof data !== "object") return null;
  switch (event.event) {
    case "start": {
      const d = data as TurnEvents["start"];
      return {
        type: "start",
        mode,
        user_message: d.user_message ?? null,
        assistant_message: d.assistant_message,
        replaceFrom: replaceFrom ?? null,
      };
    }
    case "delta": {
      const d = data as Partial<TurnEvents["delta"]>;
      return typeof d.content === "string" ? { type: "delta", content: d.content } : null;
    }
    case "citations": {
      const d = data as Partial<TurnEvents["citations"]>;
      return Array.isArray(d.citations) ? { type: "citations", citations: d.citations } : null;
    }
    case "done":
      return { type: "done", message: data as TurnEvents["done"] };
    case "failed":
      return { type: "failed", message: data as TurnEvents["failed"] };
    default:
      return null;
  }
}
