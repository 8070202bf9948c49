import { afterEach, describe, expect, it, vi } from "vitest";
import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter, Route, Routes } from "react-router";
import ChatPage from "./ChatPage";
import { tokens } from "../lib/api";
import { useConversation } from "../store/conversation";
import type { Chat, Message } from "../lib/types";

const chat: Chat = {
  id: "c1", title: "Test chat", folder_id: null, pinned: false, model_alias: "champion", temperature: 0.7,
  max_tokens: 512, system_prompt: "", tone: "neutral", created_at: "2026-01-01T00:00:00Z", updated_at: "2026-01-01T00:00:00Z",
};
const base: Message = {
  id: "x", chat_id: "c1", seq: 1, role: "user", content: "", status: "complete", error: null, model_version: null,
  prompt_tokens: null, completion_tokens: null, latency_ms: null, created_at: "2026-01-01T00:00:00Z", updated_at: "2026-01-01T00:00:00Z",
};

const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });

function sse(events: [string, unknown][]) {
  const bytes = new TextEncoder().encode(events.map(([e, d]) => `event: ${e}\ndata: ${JSON.stringify(d)}\n\n`).join(""));
  return new Response(
    new ReadableStream({
      start(controller) {
        // arbitrary chunk boundaries
        for (let i = 0; i < bytes.length; i += 7) controller.enqueue(bytes.slice(i, i + 7));
        controller.close();
      },
    }),
    { status: 200, headers: { "Content-Type": "text/event-stream" } },
  );
}

function mockApi(onSend: () => Response, stored: Message[] = []) {
  const calls: string[] = [];
  vi.stubGlobal(
    "fetch",
    vi.fn(async (url: string, init: RequestInit = {}) => {
      const method = init.method ?? "GET";
      calls.push(`${method} ${url}`);
      if (url === "/api/v1/chats/c1/messages" && method === "POST") return onSend();
      if (url === "/api/v1/chats/c1/messages") return json(200, stored);
      if (url.endsWith("/feedback") && method === "DELETE") return new Response(null, { status: 204 });
      if (url === "/api/v1/chats/c1") return json(200, chat);
      if (url.startsWith("/api/v1/chats")) return json(200, [chat]);
      if (url === "/api/v1/folders") return json(200, []);
      if (url === "/api/v1/credits") return json(200, { balance: 990, entries: [] });
      return json(404, { detail: "Not Found", code: "not_found" });
    }),
  );
  return calls;
}

function renderChat() {
  tokens.set({ access_token: "a", refresh_token: "r" });
  return render(
    <MemoryRouter initialEntries={["/c/c1"]}>
      <Routes>
        <Route path="/c/:chatId" element={<ChatPage />} />
      </Routes>
    </MemoryRouter>,
  );
}

afterEach(() => {
  vi.unstubAllGlobals();
  useConversation.setState({ byChat: {}, drafts: {}, feedback: {}, loading: {} });
});

describe("ChatPage", () => {
  it("keeps the typed text and says how long to wait on a 429", async () => {
    mockApi(() => json(429, { detail: "rate limit exceeded: retry in 7 s", code: "rate_limited" }, { "Retry-After": "7" }));
    renderChat();
    const composer = screen.getByTestId("composer");
    await userEvent.type(composer, "Please keep me{Enter}");
    expect(await screen.findByTestId("error-banner")).toHaveTextContent("wait 7 s");
    expect(composer).toHaveValue("Please keep me");
    expect(screen.queryAllByTestId("message")).toHaveLength(0);
  });

  it("explains a token limit with its wait, keeps the text, and shows what each answer cost", async () => {
    const answer: Message = { ...base, id: "a1", seq: 2, role: "assistant", content: "Old", completion_tokens: 12, credits: 30, cost_usd: 0.003 };
    mockApi(
      () =>
        json(
          429,
          { detail: "the daily token limit of 100 tokens would be passed: 90 used, and this request may use up to 520", code: "token_limit" },
          { "Retry-After": "7260" },
        ),
      [{ ...base, id: "u1", content: "Q" }, answer],
    );
    renderChat();
    expect(await screen.findByTestId("message-cost")).toHaveTextContent("30 credits ($0.003)");
    const composer = screen.getByTestId("composer");
    await userEvent.type(composer, "Over the limit{Enter}");
    expect(await screen.findByTestId("error-banner")).toHaveTextContent(
      "Token limit reached: the daily token limit of 100 tokens would be passed: 90 used, and this request may use up to 520. You can send again in 2 h 1 min.",
    );
    expect(composer).toHaveValue("Over the limit");
  });

  it("streams an answer into the message list and clears the composer on start", async () => {
    const user: Message = { ...base, id: "u1", content: "Hi **there**" };
    const assistant: Message = { ...base, id: "a1", seq: 2, role: "assistant", status: "streaming" };
    mockApi(() =>
      sse([
        ["start", { user_message: user, assistant_message: assistant }],
        ["delta", { content: "Hello " }],
        ["delta", { content: "<img src=x onerror=alert(1)>" }],
        ["done", { ...assistant, status: "complete", content: "Hello <img src=x onerror=alert(1)>", model_version: "orchard-chat/3", completion_tokens: 2, prompt_tokens: 9 }],
      ]),
    );
    const { container } = renderChat();
    const composer = screen.getByTestId("composer");
    await userEvent.type(composer, "Hi **there**");
    await userEvent.click(screen.getByTestId("send"));
    await waitFor(() => expect(screen.getAllByTestId("message")).toHaveLength(2));
    const [u, a] = screen.getAllByTestId("message");
    expect(u).toHaveAttribute("data-role", "user");
    await waitFor(() => expect(a).toHaveAttribute("data-status", "complete"));
    expect(a).toHaveAttribute("data-role", "assistant");
    expect(within(a).getByTestId("message-model")).toHaveTextContent("orchard-chat v3");
    expect(within(a).getByTestId("token-count")).toHaveTextContent("2 tokens");
    expect(within(a).getByTestId("message-content")).toHaveTextContent("Hello <img src=x onerror=alert(1)>");
    expect(within(a).getByTestId("regenerate")).toBeEnabled();
    expect(within(u).getByTestId("edit")).toBeInTheDocument();
    expect(container.querySelector("img")).toBeNull();
    expect(composer).toHaveValue("");
    expect(screen.queryByTestId("stop")).toBeNull();
  });

  it("shows the thumbs the server remembers after a reload, pressed", async () => {
    const rated: Message = { ...base, id: "a1", seq: 2, role: "assistant", content: "Yes", feedback: { rating: "up", comment: "" } };
    const unrated: Message = { ...base, id: "a2", seq: 4, role: "assistant", content: "No", feedback: null };
    // a stale rating this tab set for a2, since cleared elsewhere: the server wins
    useConversation.setState({ feedback: { a2: { message_id: "a2", rating: "down", comment: "" } } });
    const calls = mockApi(() => json(500, {}), [{ ...base, id: "u1" }, rated, { ...base, id: "u2", seq: 3 }, unrated]);
    renderChat();
    await waitFor(() => expect(screen.getAllByTestId("message")).toHaveLength(4));
    const [, a1, , a2] = screen.getAllByTestId("message");
    expect(within(a1).getByTestId("thumbs-up")).toHaveAttribute("aria-pressed", "true");
    expect(within(a1).getByTestId("thumbs-down")).toHaveAttribute("aria-pressed", "false");
    expect(within(a2).getByTestId("thumbs-up")).toHaveAttribute("aria-pressed", "false");
    expect(within(a2).getByTestId("thumbs-down")).toHaveAttribute("aria-pressed", "false");
    // pressing the pressed thumb clears it on the server
    await userEvent.click(within(a1).getByTestId("thumbs-up"));
    await waitFor(() => expect(within(a1).getByTestId("thumbs-up")).toHaveAttribute("aria-pressed", "false"));
    expect(calls).toContain("DELETE /api/v1/chats/c1/messages/a1/feedback");
  });
});
