import { describe, expect, it } from "vitest";
import { SseParser, eventToAction, initialConversation, streamReducer, type ConversationState, type SseEvent } from "./stream";
import type { Message } from "./types";

function msg(over: Partial<Message>): Message {
  return {
    id: "m",
    chat_id: "c1",
    seq: 1,
    role: "assistant",
    content: "",
    status: "streaming",
    error: null,
    model_version: null,
    prompt_tokens: null,
    completion_tokens: null,
    latency_ms: null,
    created_at: "2026-01-01T00:00:00",
    updated_at: "2026-01-01T00:00:00",
    ...over,
  };
}

const user = msg({ id: "u1", role: "user", seq: 1, content: "Hi", status: "complete" });
const assistant = msg({ id: "a1", seq: 2 });

const STREAM =
  `event: start\ndata: ${JSON.stringify({ user_message: user, assistant_message: assistant })}\n\n` +
  `event: delta\ndata: {"content": "Héllo "}\n\n` +
  `: a comment line\n` +
  `event: delta\r\ndata: {"content": "wörld 🌳"}\r\n\r\n` +
  `event: delta\rdata: {"content": "!"}\r\r` +
  `event: done\ndata: ${JSON.stringify(msg({ id: "a1", seq: 2, content: "Héllo wörld 🌳!", status: "complete", model_version: "orchard-chat/3", completion_tokens: 4 }))}\n\n`;

function parseAll(chunks: Uint8Array[]): SseEvent[] {
  const parser = new SseParser();
  const events: SseEvent[] = [];
  for (const c of chunks) events.push(...parser.feed(c));
  events.push(...parser.end());
  return events;
}

describe("SseParser", () => {
  const bytes = new TextEncoder().encode(STREAM);
  const whole = parseAll([bytes]);

  it("parses events, data and comments", () => {
    expect(whole.map((e) => e.event)).toEqual(["start", "delta", "delta", "delta", "done"]);
    expect(JSON.parse(whole[1].data)).toEqual({ content: "Héllo " });
    expect(JSON.parse(whole[2].data)).toEqual({ content: "wörld 🌳" });
  });

  it("gives the same events for a split at every byte boundary", () => {
    for (let i = 1; i < bytes.length; i++) {
      expect(parseAll([bytes.slice(0, i), bytes.slice(i)])).toEqual(whole);
    }
  });

  it("gives the same events fed one byte at a time and in random pieces", () => {
    expect(parseAll(Array.from(bytes, (b) => Uint8Array.of(b)))).toEqual(whole);
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let round = 0; round < 50; round++) {
      const chunks: Uint8Array[] = [];
      for (let at = 0; at < bytes.length; ) {
        const n = 1 + Math.floor(rand() * 9);
        chunks.push(bytes.slice(at, at + n));
        at += n;
      }
      expect(parseAll(chunks)).toEqual(whole);
    }
  });

  it("joins multi-line data and drops an unterminated event", () => {
    const events = parseAll([new TextEncoder().encode("data: a\ndata: b\n\nevent: delta\ndata: cut")]);
    expect(events).toEqual([{ event: "message", data: "a\nb" }]);
  });
});

function run(events: SseEvent[], state: ConversationState = initialConversation) {
  return events.reduce((s, e) => {
    const action = eventToAction(e, "send");
    return action ? streamReducer(s, action) : s;
  }, streamReducer(state, { type: "send" }));
}

describe("streamReducer", () => {
  const events = parseAll([new TextEncoder().encode(STREAM)]);

  it("start → delta → done", () => {
    let s = streamReducer(initialConversation, { type: "send" });
    expect(s.phase).toBe("sending");
    s = streamReducer(s, eventToAction(events[0], "send")!);
    expect(s.phase).toBe("streaming");
    expect(s.streamingId).toBe("a1");
    expect(s.messages.map((m) => [m.role, m.status])).toEqual([
      ["user", "complete"],
      ["assistant", "streaming"],
    ]);
    s = streamReducer(s, eventToAction(events[1], "send")!);
    s = streamReducer(s, eventToAction(events[2], "send")!);
    expect(s.messages[1].content).toBe("Héllo wörld 🌳");
    expect(s.liveTokens).toBe(2);
    s = [events[3], events[4]].reduce((st, e) => streamReducer(st, eventToAction(e, "send")!), s);
    expect(s.phase).toBe("idle");
    expect(s.streamingId).toBeNull();
    expect(s.messages[1]).toMatchObject({ status: "complete", content: "Héllo wörld 🌳!", model_version: "orchard-chat/3", completion_tokens: 4 });
  });

  it("failed keeps the text received", () => {
    const failed: SseEvent = {
      event: "failed",
      data: JSON.stringify(msg({ id: "a1", content: "", status: "failed", error: "model crashed" })),
    };
    const s = run([...events.slice(0, 3), failed]);
    expect(s.messages[1]).toMatchObject({ status: "failed", content: "Héllo wörld 🌳", error: "model crashed" });
    expect(s.phase).toBe("idle");
    expect(s.error).toContain("model crashed");
  });

  it("stop turns the streaming answer partial and keeps its text", () => {
    let s = run(events.slice(0, 2));
    s = streamReducer(s, { type: "stopped" });
    expect(s.messages[1]).toMatchObject({ status: "partial", content: "Héllo " });
    expect(s.phase).toBe("idle");
    // the server's saved message after POST .../stop, possibly a piece ahead
    let t = run(events.slice(0, 2));
    t = streamReducer(t, { type: "stopped", message: msg({ id: "a1", content: "Héllo wö", status: "partial" }) });
    expect(t.messages[1]).toMatchObject({ status: "partial", content: "Héllo wö" });
  });

  it("a stop after done leaves the answer complete", () => {
    let s = run(events);
    s = streamReducer(s, { type: "stopped" });
    expect(s.messages[1].status).toBe("complete");
  });

  it("regenerate replaces the old answer; edit replaces the user message and what follows", () => {
    const done = run(events);
    const newAnswer = msg({ id: "a2", seq: 3 });
    const regen = streamReducer(done, { type: "start", mode: "regenerate", user_message: user, assistant_message: newAnswer, replaceFrom: "a1" });
    expect(regen.messages.map((m) => m.id)).toEqual(["u1", "a2"]);
    const newUser = msg({ id: "u2", role: "user", content: "Hi again", status: "complete" });
    const edit = streamReducer(done, { type: "start", mode: "edit", user_message: newUser, assistant_message: newAnswer, replaceFrom: "u1" });
    expect(edit.messages.map((m) => m.id)).toEqual(["u2", "a2"]);
  });

  it("deltas without a start change nothing", () => {
    const s = streamReducer(initialConversation, { type: "delta", content: "x" });
    expect(s).toBe(initialConversation);
  });

  it("a citations event gives the streaming answer its sources before the text", () => {
    const source = { n: 1, chunk_id: "k1", file_id: "f1", knowledge_base_id: "b1", source: "report.pdf", page: 2, heading: "", snippet: "Revenue grew", text: "Revenue grew by 12 percent." };
    let s = run(events.slice(0, 1));
    const action = eventToAction({ event: "citations", data: JSON.stringify({ citations: [source] }) }, "send");
    expect(action).toEqual({ type: "citations", citations: [source] });
    s = streamReducer(s, action!);
    expect(s.messages[1].citations).toEqual([source]);
    expect(eventToAction({ event: "citations", data: "{}" }, "send")).toBeNull();
  });
});
