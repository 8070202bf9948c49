import { afterEach, describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import { ApiKeysPage } from "./ApiKeysPage";
import { useSession } from "../../store/session";

const json = (body: unknown, status = 200) => new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
const key = (name: string, scopes: string[]) => ({
  id: `id-${name}`,
  name,
  prefix: "orch_abcdefg",
  scopes,
  created_at: "2026-12-01T10:00:00Z",
  last_used_at: null,
  revoked_at: null,
});

/** The API-key endpoints; returns the bodies POSTed to /api-keys. */
function mockApi(listed: unknown[]) {
  const posted: unknown[] = [];
  vi.stubGlobal(
    "fetch",
    vi.fn(async (url: string, init?: RequestInit) => {
      if (url === "/api/v1/api-keys" && init?.method === "POST") {
        const body = JSON.parse(String(init.body));
        posted.push(body);
        return json({ ...key(body.name, body.scopes), key: "orch_secret" }, 201);
      }
      if (url === "/api/v1/api-keys") return json(listed);
      return new Response("{}", { status: 404 });
    }),
  );
  return posted;
}

afterEach(() => {
  vi.unstubAllGlobals();
  useSession.setState({ user: null });
});

describe("API key scopes", () => {
  it("lists each key with its scopes", async () => {
    mockApi([key("sdk", ["inference"]), key("reader", ["chats:read", "usage:read"])]);
    render(<ApiKeysPage />);
    const rows = await screen.findAllByTestId("api-key-row");
    expect(within(rows[0]).getByTestId("api-key-scopes")).toHaveTextContent("inference");
    const second = within(rows[1]).getByTestId("api-key-scopes");
    expect(second).toHaveTextContent("chats:read");
    expect(second).toHaveTextContent("usage:read");
    expect(second).not.toHaveTextContent("inference");
  });

  it("creates a key for the gateway only unless more scopes are ticked", async () => {
    const posted = mockApi([]);
    render(<ApiKeysPage />);
    expect(screen.getByTestId("api-key-scope-inference")).toBeChecked();
    expect(screen.getByTestId("api-key-scope-chats:write")).not.toBeChecked();
    fireEvent.change(screen.getByTestId("api-key-name"), { target: { value: "sdk" } });
    fireEvent.click(screen.getByTestId("api-key-create"));
    await waitFor(() => expect(posted).toEqual([{ name: "sdk", scopes: ["inference"] }]));
    expect(await screen.findByTestId("api-key-created-scopes")).toHaveTextContent("Scopes: inference");

    fireEvent.change(screen.getByTestId("api-key-name"), { target: { value: "reader" } });
    fireEvent.click(screen.getByTestId("api-key-scope-inference"));
    fireEvent.click(screen.getByTestId("api-key-scope-chats:read"));
    fireEvent.click(screen.getByTestId("api-key-create"));
    await waitFor(() => expect(posted[1]).toEqual({ name: "reader", scopes: ["chats:read"] }));
  });

  it("asks for a scope before sending a key with none", async () => {
    const posted = mockApi([]);
    render(<ApiKeysPage />);
    fireEvent.change(screen.getByTestId("api-key-name"), { target: { value: "nothing" } });
    fireEvent.click(screen.getByTestId("api-key-scope-inference"));
    fireEvent.click(screen.getByTestId("api-key-create"));
    expect(await screen.findByRole("alert")).toHaveTextContent("Choose at least one scope.");
    expect(posted).toEqual([]);
  });

  it("offers the feedback:export scope to administrators only", () => {
    mockApi([]);
    const me = { id: "u1", email: "a@example.org", display_name: "", status: "active" as const, totp_enabled: false, created_at: "2026-01-01T00:00:00Z" };
    useSession.setState({ user: { ...me, role: "user" }, status: "ready" });
    const { unmount } = render(<ApiKeysPage />);
    expect(screen.queryByTestId("api-key-scope-feedback:export")).toBeNull();
    unmount();
    useSession.setState({ user: { ...me, role: "admin" }, status: "ready" });
    render(<ApiKeysPage />);
    expect(screen.getByTestId("api-key-scope-feedback:export")).not.toBeChecked();
  });
});
