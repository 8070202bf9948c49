import type { ReactNode } from "react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { render, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter } from "react-router";
import { DataPage } from "./DataPage";
import { ProfilePage } from "./ProfilePage";
import { SecurityPage } from "./SecurityPage";
import { tokens } from "../../lib/api";
import type { Me } from "../../lib/types";
import { useSession } from "../../store/session";

const json = (status: number, body: unknown) =>
  new Response(status === 204 ? null : JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
const BASE: Me = {
  id: "u1",
  email: "ada@example.org",
  display_name: "Ada",
  role: "user",
  status: "active",
  totp_enabled: false,
  created_at: "2025-01-01T00:00:00Z",
  deleted_at: null,
  oauth_providers: [],
};
const OAUTH_ONLY: Me = { ...BASE, has_password: false, oauth_providers: ["corp"] };
const REAUTH = {
  code: "reauth_required",
  detail: "this account has no password, so this needs a recent sign-in: sign in again with Corp SSO and retry within 10 minutes",
};

/** fetch: `answer` for the action's route, the providers list and /users/me (`me`). */
function mockApi(route: string, answer: () => Response, me: () => Me = () => OAUTH_ONLY) {
  const sent: unknown[] = [];
  vi.stubGlobal(
    "fetch",
    vi.fn(async (url: string, init: RequestInit = {}) => {
      if (url === "/api/v1/auth/oauth/providers") return json(200, [{ name: "corp", label: "Corp SSO" }, { name: "github", label: "GitHub" }]);
      if (url === `/api/v1${route}` && init.method && init.method !== "GET") {
        sent.push(JSON.parse(String(init.body)));
        return answer();
      }
      if (url === "/api/v1/users/me") return json(200, me());
      if (url === "/api/v1/credits") return json(200, { balance: 0, entries: [] });
      if (url === "/api/v1/access") return json(200, {});
      return json(404, { detail: "Not Found", code: "not_found" });
    }),
  );
  return sent;
}

function show(page: ReactNode, user: Me) {
  useSession.setState({ user, status: "ready" });
  return render(<MemoryRouter initialEntries={["/account"]}>{page}</MemoryRouter>);
}

beforeEach(() => tokens.set({ access_token: "acc", refresh_token: "ref" }));
afterEach(() => {
  vi.unstubAllGlobals();
  tokens.clear();
  sessionStorage.clear();
});

describe("an account without a password", () => {
  it("deletes without a password and, when the sign-in is old, offers to sign in again", async () => {
    const sent = mockApi("/users/me", () => json(403, REAUTH));
    show(<DataPage />, OAUTH_ONLY);
    expect(screen.queryByTestId("delete-password")).toBeNull();
    await userEvent.type(screen.getByTestId("delete-confirm"), "DELETE");
    await userEvent.click(screen.getByTestId("delete-account"));
    expect(await screen.findByTestId("reauth-required")).toHaveTextContent("sign in again with Corp SSO");
    expect(sent).toEqual([{}]);
    const button = await screen.findByTestId("reauth-corp");
    expect(button).toHaveAttribute("href", "/api/v1/auth/oauth/corp/login");
    expect(screen.queryByTestId("reauth-github")).toBeNull(); // not linked
    button.addEventListener("click", (e) => e.preventDefault()); // jsdom cannot navigate
    await userEvent.click(button);
    expect(sessionStorage.getItem("orchard.oauth.return")).toBe("/account");
  });

  it("asks for the password after all when the server says the account has one", async () => {
    let me = OAUTH_ONLY;
    const sent = mockApi(
      "/auth/totp/disable",
      () => json(403, { code: "password_required", detail: "confirm with your password: send password" }),
      () => me,
    );
    show(<SecurityPage />, { ...OAUTH_ONLY, totp_enabled: true });
    expect(screen.queryByLabelText("Password")).toBeNull();
    me = { ...OAUTH_ONLY, totp_enabled: true, has_password: true }; // set in another tab
    await userEvent.type(screen.getByLabelText("Code from the app"), "123456");
    await userEvent.click(screen.getByRole("button", { name: "Turn off" }));
    expect(sent).toEqual([{ code: "123456" }]);
    expect(await screen.findByText("This account has a password: enter it to confirm.")).toBeInTheDocument();
    expect(screen.getByLabelText("Password")).toBeInTheDocument();
  });

  it("sets a first password without a current one, then changes it like any other", async () => {
    let me = OAUTH_ONLY;
    const sent = mockApi("/users/me/password", () => json(204, null), () => me);
    show(<ProfilePage />, OAUTH_ONLY);
    expect(screen.getByRole("heading", { name: "Set a password" })).toBeInTheDocument();
    expect(screen.queryByLabelText("Current password")).toBeNull();
    await userEvent.type(screen.getByLabelText("New password"), "a first long password");
    me = { ...OAUTH_ONLY, has_password: true };
    await userEvent.click(screen.getByRole("button", { name: "Set password" }));
    expect(sent).toEqual([{ new_password: "a first long password" }]);
    await waitFor(() => expect(screen.getByRole("heading", { name: "Change password" })).toBeInTheDocument());
    expect(screen.getByLabelText("Current password")).toBeInTheDocument();
    expect(useSession.getState().user?.oauth_providers).toEqual(["corp"]);
  });
});

describe("an account with a password", () => {
  it("still sends the password to delete and shows a wrong one as an error", async () => {
    const sent = mockApi("/users/me", () => json(403, { code: "invalid_credentials", detail: "the password is wrong" }));
    show(<DataPage />, { ...BASE, has_password: true });
    await userEvent.type(screen.getByTestId("delete-password"), "my password!");
    await userEvent.type(screen.getByTestId("delete-confirm"), "DELETE");
    await userEvent.click(screen.getByTestId("delete-account"));
    expect(await screen.findByText(/the password is wrong/)).toBeInTheDocument();
    expect(sent).toEqual([{ password: "my password!" }]);
    expect(screen.queryByTestId("reauth-required")).toBeNull();
  });
});
