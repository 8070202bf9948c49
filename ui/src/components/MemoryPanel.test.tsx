import { afterEach, describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import { MemoryPanel } from "./MemoryPanel";

const json = (body: unknown, status = 200) => new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
const memory = (id: string, content: string, extra: Record<string, unknown> = {}) => ({
  id,
  content,
  enabled: true,
  source: "rules",
  message_id: "m1",
  embedding_model: "sentence-transformers/all-MiniLM-L6-v2",
  embedding_dimension: 384,
  created_at: "2026-12-07T10:00:00Z",
  updated_at: "2026-12-07T10:00:00Z",
  ...extra,
});

/** A small memory API in memory; returns the requests it got (method, path, body). */
function mockApi(initial: ReturnType<typeof memory>[]) {
  let items = [...initial];
  const calls: [string, string, unknown][] = [];
  vi.stubGlobal(
    "fetch",
    vi.fn(async (input: string | Request, init?: RequestInit) => {
      const request = input instanceof Request ? input : new Request(new URL(input, "http://x"), init);
      const path = new URL(request.url, "http://x").pathname;
      const text = await request.text();
      const body = text ? JSON.parse(text) : undefined;
      calls.push([request.method, path, body]);
      const id = path.split("/").pop() ?? "";
      if (path === "/api/v1/memories" && request.method === "GET") return json(items);
      if (path === "/api/v1/memories" && request.method === "POST") {
        if (items.some((m) => m.content === body.content)) return json({ detail: "you already have this memory", code: "memory_exists" }, 409);
        const created = memory(`n${items.length}`, body.content, { source: "user", message_id: null });
        items = [created, ...items];
        return json(created, 201);
      }
      if (path === "/api/v1/memories" && request.method === "DELETE") {
        items = [];
        return new Response(null, { status: 204 });
      }
      if (request.method === "PATCH") {
        items = items.map((m) => (m.id === id ? { ...m, ...body } : m));
        return json(items.find((m) => m.id === id));
      }
      if (request.method === "DELETE") {
        items = items.filter((m) => m.id !== id);
        return new Response(null, { status: 204 });
      }
      return json({ detail: "not found" }, 404);
    }),
  );
  return calls;
}

afterEach(() => vi.unstubAllGlobals());

describe("the memory page", () => {
  it("lists memories and adds one, refusing an empty one and showing a duplicate's error", async () => {
    const calls = mockApi([memory("a", "I prefer short answers.")]);
    render(<MemoryPanel />);
    const [row] = await screen.findAllByTestId("memory-row");
    expect(within(row).getByTestId("memory-content")).toHaveTextContent("I prefer short answers.");
    expect(row).toHaveTextContent("from a chat");

    fireEvent.click(screen.getByTestId("memory-add"));
    expect(await screen.findByText("Write what the assistant should remember.")).toBeInTheDocument();
    expect(calls.filter(([method]) => method === "POST")).toEqual([]);

    fireEvent.change(screen.getByTestId("memory-new"), { target: { value: "  I live in Lyon. " } });
    fireEvent.click(screen.getByTestId("memory-add"));
    await waitFor(() => expect(screen.getAllByTestId("memory-row")).toHaveLength(2));
    expect(calls).toContainEqual(["POST", "/api/v1/memories", { content: "I live in Lyon." }]);
    expect(screen.getAllByTestId("memory-row")[0]).toHaveTextContent("added by you");

    fireEvent.change(screen.getByTestId("memory-new"), { target: { value: "I live in Lyon." } });
    fireEvent.click(screen.getByTestId("memory-add"));
    expect(await screen.findByText(/already have this memory/)).toBeInTheDocument();
  });

  it("switches a memory off, edits one and deletes them", async () => {
    const calls = mockApi([memory("a", "I prefer short answers."), memory("b", "My project uses Python 3.11.")]);
    vi.stubGlobal("confirm", () => true);
    render(<MemoryPanel />);
    const rows = await screen.findAllByTestId("memory-row");

    fireEvent.click(within(rows[0]).getByTestId("memory-enabled"));
    await waitFor(() => expect(calls).toContainEqual(["PATCH", "/api/v1/memories/a", { enabled: false }]));
    await waitFor(() => expect(within(screen.getAllByTestId("memory-row")[0]).getByTestId("memory-enabled")).not.toBeChecked());

    fireEvent.click(within(screen.getAllByTestId("memory-row")[1]).getByTestId("memory-edit-open"));
    fireEvent.change(screen.getByTestId("memory-edit"), { target: { value: "My project uses Python 3.12." } });
    fireEvent.click(screen.getByTestId("memory-save"));
    await waitFor(() => expect(screen.getAllByTestId("memory-row")[1]).toHaveTextContent("Python 3.12."));
    expect(calls).toContainEqual(["PATCH", "/api/v1/memories/b", { content: "My project uses Python 3.12." }]);

    fireEvent.click(within(screen.getAllByTestId("memory-row")[0]).getByTestId("memory-delete"));
    await waitFor(() => expect(screen.getAllByTestId("memory-row")).toHaveLength(1));
    fireEvent.click(screen.getByTestId("memory-forget-all"));
    expect(await screen.findByTestId("memory-empty")).toBeInTheDocument();
    expect(calls).toContainEqual(["DELETE", "/api/v1/memories", undefined]);
  });
});
