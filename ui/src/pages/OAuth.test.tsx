import { StrictMode } from "react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { render, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter, Route, Routes } from "react-router";
import { LoginPage } from "./AuthPages";
import OAuthCallbackPage from "./OAuthCallbackPage";
import { tokens } from "../lib/api";
import { useSession } from "../store/session";

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
const PAIR = { access_token: "acc", refresh_token: "ref", token_type: "bearer", expires_in: 900 };
const ME = { id: "u1", email: "ann@example.org", role: "user", status: "active", totp_enabled: true };

/** fetch with the OAuth routes; `exchange` answers each POST of /auth/oauth/exchange. */
function mockApi(exchange: (body: Record<string, string>) => Response, providers: unknown = []) {
  const sent: Record<string, string>[] = [];
  vi.stubGlobal(
    "fetch",
    vi.fn(async (url: string, init: RequestInit = {}) => {
      if (url === "/api/v1/auth/oauth/providers") return json(200, providers);
      if (url === "/api/v1/auth/oauth/exchange" && init.method === "POST") {
        const body = JSON.parse(String(init.body));
        sent.push(body);
        return exchange(body);
      }
      if (url === "/api/v1/users/me") return json(200, ME);
      if (url === "/api/v1/credits") return json(200, { balance: 5, entries: [] });
      return json(404, { detail: "Not Found", code: "not_found" });
    }),
  );
  return sent;
}

function at(path: string) {
  window.history.replaceState(null, "", path);
  // StrictMode runs effects twice, as in development: the code must still go out once
  return render(
    <StrictMode>
      <MemoryRouter initialEntries={[path.split("#")[0]]}>
        <Routes>
          <Route path="/login" element={<LoginPage />} />
          <Route path="/oauth/callback" element={<OAuthCallbackPage />} />
          <Route path="/" element={<p>home page</p>} />
        </Routes>
      </MemoryRouter>
    </StrictMode>,
  );
}

beforeEach(() => useSession.setState({ user: null, status: "anonymous" }));
afterEach(() => {
  vi.unstubAllGlobals();
  window.history.replaceState(null, "", "/");
});

describe("OAuth sign-in", () => {
  it("shows a button per provider that navigates to its login route, and none without providers", async () => {
    mockApi(() => json(500, {}), [
      { name: "google", label: "Google" },
      { name: "corp-sso", label: "Corp SSO" },
    ]);
    at("/login");
    expect(await screen.findByTestId("oauth-google")).toHaveAttribute("href", "/api/v1/auth/oauth/google/login");
    expect(screen.getByTestId("oauth-corp-sso")).toHaveTextContent("Continue with Corp SSO");
  });

  it("shows no buttons when the server has no providers", async () => {
    mockApi(() => json(500, {}), []);
    at("/login");
    await waitFor(() => expect(fetch).toHaveBeenCalledWith("/api/v1/auth/oauth/providers", expect.anything()));
    expect(screen.queryByTestId("oauth-providers")).toBeNull();
  });

  it("explains an oauth_error on the login page and drops it from the address", async () => {
    mockApi(() => json(500, {}));
    at("/login#oauth_error=email_unverified");
    expect(screen.getByTestId("error-banner")).toHaveTextContent("the provider has not verified the address");
    expect(window.location.hash).toBe("");
  });

  it("names an unknown oauth_error instead of hiding it", () => {
    mockApi(() => json(500, {}));
    at("/login#oauth_error=weird_thing");
    expect(screen.getByTestId("error-banner")).toHaveTextContent("(weird_thing)");
  });

  it("exchanges the code once, signs in and goes home", async () => {
    const sent = mockApi(() => json(200, PAIR));
    at("/oauth/callback#code=one-time-123");
    expect(await screen.findByText("home page")).toBeInTheDocument();
    expect(sent).toEqual([{ code: "one-time-123" }]);
    expect(tokens.access).toBe("acc");
    expect(useSession.getState().user?.email).toBe("ann@example.org");
    expect(window.location.hash).toBe(""); // the code does not stay in the history
  });

  it("asks for the TOTP code when the account has 2FA on, then resends the same code with it", async () => {
    const sent = mockApi((body) =>
      body.totp_code === "123456"
        ? json(200, PAIR)
        : json(401, { detail: "send totp_code as well", code: "totp_required" }),
    );
    at("/oauth/callback#code=c-2fa");
    const input = await screen.findByTestId("totp-code");
    await userEvent.click(screen.getByTestId("oauth-totp-submit"));
    expect(screen.getByTestId("error-banner")).toHaveTextContent("6 digits");
    await userEvent.type(input, "123456");
    await userEvent.click(screen.getByTestId("oauth-totp-submit"));
    expect(await screen.findByText("home page")).toBeInTheDocument();
    expect(sent).toEqual([{ code: "c-2fa" }, { code: "c-2fa", totp_code: "123456" }]);
  });

  it("says to start again when the code is spent or expired", async () => {
    mockApi(() => json(401, { detail: "not valid", code: "invalid_oauth_code" }));
    at("/oauth/callback#code=stale");
    expect(await screen.findByTestId("error-banner")).toHaveTextContent("expired or was already used");
    expect(tokens.access).toBeNull();
  });

  it("says what is wrong without a code", () => {
    const sent = mockApi(() => json(200, PAIR));
    at("/oauth/callback");
    expect(screen.getByTestId("error-banner")).toHaveTextContent("needs a sign-in code");
    expect(sent).toEqual([]);
  });
});
