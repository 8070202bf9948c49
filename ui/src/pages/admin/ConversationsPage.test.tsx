import { afterEach, describe, expect, it, vi } from "vitest";
import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter, Route, Routes } from "react-router";
import ConversationsPage from "./ConversationsPage";
import { tokens } from "../../lib/api";
import { exportQuery } from "../../lib/conversations";
import type { ChatFlag, ConversationDetail, ConversationSummary, Message } from "../../lib/types";

const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });

const T = "2026-01-02T03:04:05Z";
const ANN = { id: "u1", email: "ann@example.org" };
const OPS = { id: "a1", email: "ops@example.org" };
const summary: ConversationSummary = {
  id: "c1", title: "Apples", user: ANN, model_alias: "champion", message_count: 2, updated_at: T, open_flags: 1,
  snippet: "…about **apples** and…",
};
const msg = (id: string, seq: number, role: "user" | "assistant", content: string, superseded_at: string | null = null): Message => ({
  id, chat_id: "c1", seq, role, content, status: "complete", error: null, model_version: null, prompt_tokens: null,
  completion_tokens: null, latency_ms: null, created_at: T, updated_at: T, superseded_at,
});
const chatFlag: ChatFlag = {
  id: "f1", chat_id: "c1", message_id: null, reason: "check tone", flagged_by: OPS, created_at: T, resolved_at: null, resolved_by: null,
};

/** The admin monitoring API over an in-memory chat; returns the requests made. */
function mockApi() {
  const calls: { method: string; url: string; body?: unknown }[] = [];
  const detail: ConversationDetail = {
    chat: { id: "c1", title: "Apples", folder_id: null, pinned: false, model_alias: "champion", temperature: 0.7, max_tokens: 512,
      system_prompt: "", tone: "neutral", created_at: T, updated_at: T },
    user: ANN,
    messages: [msg("m1", 1, "user", "Tell me <b>about</b> apples"), msg("m2", 2, "assistant", "Old answer", T), msg("m3", 3, "assistant", "Apples are fruit.")],
    flags: [chatFlag],
  };
  let n = 1;
  vi.stubGlobal(
    "fetch",
    vi.fn(async (url: string, init: RequestInit = {}) => {
      const method = init.method ?? "GET";
      const body = init.body ? JSON.parse(String(init.body)) : undefined;
      calls.push({ method, url, body });
      if (url.startsWith("/api/v1/admin/conversations/export"))
        return new Response('{"chat":{}}\n', { status: 200, headers: { "Content-Disposition": 'attachment; filename="x.jsonl"' } });
      if (url.startsWith("/api/v1/admin/conversations?")) return json(200, url.includes("q=pears") ? [] : [summary]);
      if (url === "/api/v1/admin/conversations/c1") return json(200, detail);
      if (url === "/api/v1/admin/conversations/c1/flags" && method === "POST") {
        if (!body.reason) return json(422, { detail: "reason: required", code: "validation_error" });
        return json(201, { ...chatFlag, id: `f${++n}`, message_id: body.message_id ?? null, reason: body.reason });
      }
      const resolve = /^\/api\/v1\/admin\/conversation-flags\/(\w+)\/resolve$/.exec(url);
      if (resolve && method === "POST")
        return json(200, { ...chatFlag, id: resolve[1], message_id: resolve[1] === "f1" ? null : "m3", reason: "x", resolved_at: T, resolved_by: OPS });
      return json(404, { detail: "Not Found", code: "not_found" });
    }),
  );
  return calls;
}

function renderAt(path: string) {
  tokens.set({ access_token: "a", refresh_token: "r" });
  return render(
    <MemoryRouter initialEntries={[path]}>
      <Routes>
        <Route path="/admin/conversations/*" element={<ConversationsPage />} />
      </Routes>
    </MemoryRouter>,
  );
}

afterEach(() => vi.unstubAllGlobals());

describe("exportQuery", () => {
  it("sends only the filters the export takes", () => {
    expect(exportQuery({ q: " apples ", flagged: "open" }, "json")).toEqual({ format: "json", limit: 1000, q: "apples", flagged: "open" });
    expect(exportQuery({ q: "", flagged: "resolved" }, "jsonl")).toMatchObject({ format: "jsonl", limit: 1000, q: undefined, flagged: "any" });
    expect(exportQuery({ q: "", flagged: "all" }, "jsonl")).toMatchObject({ q: undefined, flagged: undefined });
  });
});

describe("ConversationsPage", () => {
  it("lists conversations, searches, filters by flags and exports what is shown", async () => {
    const calls = mockApi();
    vi.stubGlobal("URL", Object.assign(URL, { createObjectURL: vi.fn(() => "blob:x"), revokeObjectURL: vi.fn() }));
    renderAt("/admin/conversations");
    const row = await screen.findByTestId("conversation-row");
    expect(row).toHaveTextContent("ann@example.org");
    expect(within(row).getByTestId("open-flags")).toHaveTextContent("1 open");
    expect(calls.at(-1)!.url).toBe("/api/v1/admin/conversations?limit=50&offset=0");

    await userEvent.click(screen.getByTestId("flag-tab-open"));
    await waitFor(() => expect(calls.at(-1)!.url).toBe("/api/v1/admin/conversations?limit=50&offset=0&flagged=open"));
    expect(screen.getByTestId("flag-tab-open")).toHaveAttribute("aria-selected", "true");

    await userEvent.type(screen.getByTestId("conversation-search"), "pears{Enter}");
    expect(await screen.findByTestId("conversations-empty")).toHaveTextContent("No conversation matches “pears”.");
    expect(calls.at(-1)!.url).toBe("/api/v1/admin/conversations?limit=50&offset=0&q=pears&flagged=open");

    await userEvent.click(screen.getByTestId("conversation-export"));
    await waitFor(() => expect(calls.at(-1)!.url).toBe("/api/v1/admin/conversations/export?format=jsonl&limit=1000&q=pears&flagged=open"));
  });

  it("opens a conversation from the list, with superseded messages marked and its flags", async () => {
    mockApi();
    renderAt("/admin/conversations");
    await userEvent.click(await screen.findByRole("link", { name: "Apples" }));
    expect(await screen.findByTestId("conversation-title")).toHaveTextContent("Apples");
    const [m1, m2, m3] = screen.getAllByTestId("conversation-message");
    expect(m1).toHaveTextContent("Tell me <b>about</b> apples"); // as text, not HTML
    expect(m2).toHaveAttribute("data-superseded", "true");
    expect(within(m2).getByTestId("superseded")).toBeInTheDocument();
    expect(m3).not.toHaveAttribute("data-superseded");
    expect(screen.getByTestId("flag")).toHaveTextContent("check tone");
    expect(screen.getByTestId("flag")).toHaveTextContent("whole conversation · ops@example.org");
  });

  it("flags one message with a reason, then unflags it; resolves the chat's flag", async () => {
    const calls = mockApi();
    renderAt("/admin/conversations/c1");
    const m3 = (await screen.findAllByTestId("conversation-message"))[2];
    await userEvent.click(within(m3).getByTestId("message-flag"));
    await userEvent.click(screen.getByTestId("flag-submit")); // no reason: refused here
    expect(screen.getByText("Say why it needs review.")).toBeInTheDocument();
    await userEvent.type(screen.getByTestId("flag-reason"), "  wrong fact ");
    await userEvent.click(screen.getByTestId("flag-submit"));
    await waitFor(() => expect(within(m3).getByTestId("message-flagged")).toBeInTheDocument());
    expect(calls.find((c) => c.method === "POST" && c.url.endsWith("/flags"))!.body).toEqual({ reason: "wrong fact", message_id: "m3" });
    expect(screen.getAllByTestId("flag")).toHaveLength(2);

    await userEvent.click(within(m3).getByTestId("message-unflag"));
    await waitFor(() => expect(within(m3).queryByTestId("message-flagged")).toBeNull());
    expect(calls.some((c) => c.url === "/api/v1/admin/conversation-flags/f2/resolve")).toBe(true);

    await userEvent.click(screen.getByTestId("chat-unflag"));
    await waitFor(() => expect(screen.queryByTestId("chat-unflag")).toBeNull());
    expect(screen.getAllByTestId("flag-resolved")).toHaveLength(2);
    expect(calls.some((c) => c.url === "/api/v1/admin/conversation-flags/f1/resolve")).toBe(true);
  });

  it("says so when the conversation does not exist", async () => {
    mockApi();
    renderAt("/admin/conversations/nope");
    expect(await screen.findByTestId("error-banner")).toBeInTheDocument();
  });
});
