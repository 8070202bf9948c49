import { afterEach, describe, expect, it, vi } from "vitest";
import { render, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { ChatAttachments } from "./ChatAttachments";
import { tokens } from "../lib/api";

const json = (status: number, body?: unknown) =>
  new Response(body === undefined ? null : JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
const T = "2026-12-07T10:00:00Z";
const site = { slug: "crawled-site", title: "the crawled site", embedding_model: "m", embedding_dimension: 384, documents: 360, chunks: 1331, published_at: T };

afterEach(() => vi.unstubAllGlobals());

describe("the composer's knowledge picker", () => {
  it("offers the shared bases beside the user's own and sends the ones picked", async () => {
    let state = { knowledge_bases: [], files: [], shared_knowledge_bases: [] as (typeof site)[] };
    const puts: unknown[] = [];
    tokens.set({ access_token: "a", refresh_token: "r" });
    vi.stubGlobal(
      "fetch",
      vi.fn(async (url: string, init: RequestInit = {}) => {
        const method = init.method ?? "GET";
        if (url === "/api/v1/chats/c1/knowledge" && method === "GET") return json(200, state);
        if (url === "/api/v1/chats/c1/knowledge" && method === "PUT") {
          const body = JSON.parse(String(init.body));
          puts.push(body);
          state = { ...state, shared_knowledge_bases: body.shared_knowledge_bases.includes("crawled-site") ? [site] : [] };
          return json(200, state);
        }
        if (url === "/api/v1/knowledge") return json(200, []);
        if (url === "/api/v1/shared-knowledge") return json(200, [site]);
        return json(404, { detail: "Not Found", code: "not_found" });
      }),
    );
    const user = userEvent.setup();
    render(
      <ChatAttachments chatId="c1" createChat={async () => "c1"} openChat={() => {}}>
        <textarea />
      </ChatAttachments>,
    );
    await user.click(screen.getByTestId("attach-knowledge"));
    const choice = await screen.findByTestId("shared-base");
    expect(choice.closest("label")).toHaveTextContent("the crawled site (360 pages)");
    await user.click(choice);
    await user.click(screen.getByTestId("attach-knowledge-save"));
    await waitFor(() => expect(puts).toEqual([{ knowledge_base_ids: [], shared_knowledge_bases: ["crawled-site"] }]));
    expect(await screen.findByTestId("chat-shared-base")).toHaveTextContent("the crawled site");
  });
});
