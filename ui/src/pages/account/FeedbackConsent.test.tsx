import { afterEach, beforeEach, expect, it, vi } from "vitest";
import { render, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter } from "react-router";
import { DataPage } from "./DataPage";
import { tokens } from "../../lib/api";
import type { Me } from "../../lib/types";
import { useSession } from "../../store/session";

const ME: Me = {
  id: "u1",
  email: "ada@example.org",
  display_name: "Ada",
  role: "user",
  status: "active",
  totp_enabled: false,
  created_at: "2025-01-01T00:00:00Z",
  deleted_at: null,
  oauth_providers: [],
  feedback_for_training: true,
};
const json = (status: number, body: unknown) => new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

beforeEach(() => tokens.set({ access_token: "acc", refresh_token: "ref" }));
afterEach(() => {
  vi.unstubAllGlobals();
  tokens.clear();
});

it("turns 'use my feedback to improve the model' off with one click, and on again", async () => {
  const sent: unknown[] = [];
  vi.stubGlobal(
    "fetch",
    vi.fn(async (url: string, init: RequestInit = {}) => {
      if (url === "/api/v1/users/me/feedback-consent" && init.method === "PUT") {
        const body = JSON.parse(String(init.body));
        sent.push(body);
        return json(200, { ...ME, ...body });
      }
      return json(404, { detail: "Not Found", code: "not_found" });
    }),
  );
  useSession.setState({ user: ME, status: "ready" });
  render(
    <MemoryRouter>
      <DataPage />
    </MemoryRouter>,
  );
  const toggle = screen.getByRole("switch", { name: /Use my feedback to improve the model/ });
  expect(toggle).toBeChecked(); // on by default
  await userEvent.click(toggle);
  await waitFor(() => expect(toggle).not.toBeChecked());
  expect(sent).toEqual([{ feedback_for_training: false }]);
  expect(useSession.getState().user).toMatchObject({ feedback_for_training: false });
  await userEvent.click(toggle);
  await waitFor(() => expect(toggle).toBeChecked());
  expect(sent).toEqual([{ feedback_for_training: false }, { feedback_for_training: true }]);
});
