import { afterEach, describe, expect, it, vi } from "vitest";
import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import PlansPage from "./PlansPage";
import { SplitCard } from "./SplitCard";
import { UsersPage } from "./UsersPage";
import AccessPage from "./AccessPage";
import { tokens } from "../../lib/api";
import type { Plan, User } from "../../lib/types";

const T = "2026-01-02T03:04:05Z";
const json = (status: number, body?: unknown) =>
  status === 204 ? new Response(null, { status }) : new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
const plan = (id: string, name: string, extra: Partial<Plan> = {}): Plan => ({
  id, name, description: "", monthly_credits: 100, daily_token_limit: null, monthly_token_limit: null, is_default: false,
  created_at: T, updated_at: T, ...extra,
});

type Handler = (method: string, url: string, body: any) => Response | undefined;
function mockApi(handler: Handler) {
  const calls: { method: string; url: string; body?: any }[] = [];
  tokens.set({ access_token: "a", refresh_token: "r" });
  vi.stubGlobal(
    "fetch",
    vi.fn(async (url: string, init: RequestInit = {}) => {
      const method = init.method ?? "GET";
      const body = init.body ? JSON.parse(String(init.body)) : undefined;
      calls.push({ method, url, body });
      return handler(method, url, body) ?? json(404, { detail: "Not Found", code: "not_found" });
    }),
  );
  return calls;
}
afterEach(() => vi.unstubAllGlobals());

describe("Admin → Plans", () => {
  it("creates a plan (empty limits sent as null), shows a 409 on the name, sets the default, deletes after confirming", async () => {
    let plans = [plan("p1", "Free", { is_default: true, daily_token_limit: 1000 })];
    const calls = mockApi((method, url, body) => {
      if (url === "/api/v1/admin/plans" && method === "GET") return json(200, plans);
      if (url === "/api/v1/admin/plans" && method === "POST") {
        if (plans.some((p) => p.name === body.name))
          return json(409, { detail: `a plan named '${body.name}' exists: choose another name`, code: "plan_name_taken" });
        plans = [...plans, plan("p2", body.name, body)];
        return json(201, plans.at(-1));
      }
      if (url === "/api/v1/admin/plans/p2" && method === "PATCH") {
        plans = plans.map((p) => ({ ...p, is_default: p.id === "p2" }));
        return json(200, plans[1]);
      }
      if (url === "/api/v1/admin/plans/p2" && method === "DELETE") {
        plans = plans.filter((p) => p.id !== "p2");
        return json(204);
      }
    });
    const user = userEvent.setup();
    render(<PlansPage />);
    const free = await screen.findByText("Free");
    expect(within(free.closest("tr")!).getByText("1,000")).toBeInTheDocument();
    expect(within(free.closest("tr")!).getAllByText("unlimited")).toHaveLength(1);

    await user.click(screen.getByTestId("plan-new"));
    await user.click(screen.getByTestId("plan-save"));
    expect(screen.getByText("Give the plan a name.")).toBeInTheDocument();
    expect(calls.filter((c) => c.method === "POST")).toHaveLength(0);

    await user.type(screen.getByTestId("plan-name"), "Free");
    await user.click(screen.getByTestId("plan-save"));
    expect(await screen.findByText(/a plan named 'Free' exists/)).toBeInTheDocument();

    await user.clear(screen.getByTestId("plan-name"));
    await user.type(screen.getByTestId("plan-name"), "Pro");
    await user.clear(screen.getByTestId("plan-monthly_credits"));
    await user.type(screen.getByTestId("plan-monthly_credits"), "5000");
    await user.type(screen.getByTestId("plan-monthly_token_limit"), "90000");
    await user.click(screen.getByTestId("plan-save"));
    await waitFor(() => expect(screen.getAllByTestId("plan-row")).toHaveLength(2));
    expect(calls.filter((c) => c.method === "POST").at(-1)!.body).toEqual({
      name: "Pro", description: "", monthly_credits: 5000, daily_token_limit: null, monthly_token_limit: 90000, is_default: false,
    });

    const pro = screen.getAllByTestId("plan-row")[1];
    await user.click(within(pro).getByTestId("plan-make-default"));
    await waitFor(() => expect(within(screen.getAllByTestId("plan-row")[1]).getByTestId("plan-default")).toBeInTheDocument());
    expect(calls.find((c) => c.method === "PATCH")!.body).toEqual({ is_default: true });

    await user.click(within(screen.getAllByTestId("plan-row")[1]).getByTestId("plan-delete"));
    expect(calls.some((c) => c.method === "DELETE")).toBe(false); // asks first
    await user.click(screen.getByTestId("plan-delete-confirm"));
    await waitFor(() => expect(screen.getAllByTestId("plan-row")).toHaveLength(1));
  });
});

describe("Admin → Models: the A/B split", () => {
  it("saves a percent, shows the 409 no_challenger plainly and the per-side results", async () => {
    let percent = 0;
    const calls = mockApi((method, url, body) => {
      if (url === "/api/v1/admin/models/split/results")
        return json(200, {
          split: { model_name: "orchard-chat", challenger_percent: percent, updated_at: null, updated_by: null },
          since: null,
          variants: [
            { variant: "champion", messages: 12, thumbs_up: 5, thumbs_down: 1, mean_completion_tokens: 33.5, mean_latency_ms: 120.4 },
            { variant: "challenger", messages: 0, thumbs_up: 0, thumbs_down: 0, mean_completion_tokens: null, mean_latency_ms: null },
          ],
        });
      if (url === "/api/v1/admin/models/split" && method === "PUT") {
        if (body.challenger_percent === 70)
          return json(409, { detail: "orchard-chat has no challenger alias in the registry", code: "no_challenger" });
        percent = body.challenger_percent;
        return json(200, { model_name: "orchard-chat", challenger_percent: percent, updated_at: T, updated_by: "a1" });
      }
    });
    const user = userEvent.setup();
    render(<SplitCard />);
    const champion = await screen.findByText("champion");
    expect(champion.closest("tr")).toHaveTextContent(/champion\s*12\s*5\s*1\s*33\.5\s*120\.4 ms/);
    expect(screen.getByText("challenger").closest("tr")).toHaveTextContent("—");
    expect(screen.getByTestId("split-save")).toBeDisabled(); // nothing changed

    const box = screen.getByTestId("split-percent");
    await user.clear(box);
    await user.type(box, "101");
    expect(screen.getByTestId("split-error")).toHaveTextContent("0 to 100");
    expect(screen.getByTestId("split-save")).toBeDisabled();

    await user.clear(box);
    await user.type(box, "70");
    expect(screen.getByTestId("split-slider")).toHaveValue("70");
    await user.click(screen.getByTestId("split-save"));
    expect(await screen.findByTestId("split-conflict")).toHaveTextContent("No challenger to split to. orchard-chat has no challenger alias");

    await user.clear(box);
    await user.type(box, "25");
    await user.click(screen.getByTestId("split-save"));
    await waitFor(() => expect(screen.getByTestId("split-current")).toHaveTextContent("Now 25% to the challenger"));
    expect(calls.filter((c) => c.method === "PUT").map((c) => c.body)).toEqual([{ challenger_percent: 70 }, { challenger_percent: 25 }]);
    expect(screen.queryByTestId("split-conflict")).toBeNull();
  });
});

describe("Admin → Users: search, plan, limits", () => {
  it("searches on the server, sets a plan, overrides limits (empty: the plan's) and resets them", async () => {
    let ann: User = {
      id: "u1", email: "ann@example.org", display_name: "Ann", role: "user", status: "active", totp_enabled: false, created_at: T,
      deleted_at: null, plan_id: null, daily_token_limit: null, monthly_token_limit: null, limits_reset_at: null,
    };
    const calls = mockApi((method, url, body) => {
      if (url.startsWith("/api/v1/admin/users?")) return json(200, url.includes("q=zed") ? [] : [ann]);
      if (url === "/api/v1/admin/plans") return json(200, [plan("p1", "Free", { is_default: true }), plan("p2", "Pro")]);
      if (url === "/api/v1/admin/users/u1" && method === "PATCH") return json(200, (ann = { ...ann, ...body }));
      if (url === "/api/v1/admin/users/u1/limits/reset") return json(200, (ann = { ...ann, limits_reset_at: T }));
    });
    const user = userEvent.setup();
    render(<UsersPage />);
    const row = await screen.findByTestId("user-row");
    expect(within(row).getByTestId("user-plan")).toHaveDisplayValue("default (Free)");
    expect(within(row).getByTestId("user-limits")).toHaveTextContent("plan's");

    await user.type(screen.getByTestId("user-search"), "zed");
    await waitFor(() => expect(screen.queryByTestId("user-row")).toBeNull());
    const searches = calls.filter((c) => c.url.startsWith("/api/v1/admin/users?")).map((c) => c.url);
    expect(searches.at(-1)).toBe("/api/v1/admin/users?limit=500&q=zed");
    expect(searches.length).toBeLessThanOrEqual(3); // debounced: not one request per key typed
    await user.clear(screen.getByTestId("user-search"));
    await user.selectOptions(screen.getByTestId("user-filter-role"), "user");
    await waitFor(() => expect(calls.at(-1)!.url).toBe("/api/v1/admin/users?limit=500&role=user"));

    const again = await screen.findByTestId("user-row");
    await user.selectOptions(within(again).getByTestId("user-plan"), "p2");
    await waitFor(() => expect(calls.some((c) => c.method === "PATCH" && c.body.plan_id === "p2")).toBe(true));

    await user.click(within(again).getByTestId("user-limits-edit"));
    await user.type(screen.getByTestId("limit-daily-input"), "abc");
    await user.click(screen.getByTestId("limits-submit"));
    expect(screen.getByText("A whole number of 0 or more, or empty.")).toBeInTheDocument();
    await user.clear(screen.getByTestId("limit-daily-input"));
    await user.type(screen.getByTestId("limit-daily-input"), "5000");
    await user.click(screen.getByTestId("limits-submit"));
    await waitFor(() => expect(screen.getByTestId("user-limits")).toHaveTextContent("5,000 / day · unlimited / month"));
    expect(calls.filter((c) => c.method === "PATCH").at(-1)!.body).toEqual({ daily_token_limit: 5000, monthly_token_limit: null });

    await user.click(screen.getByTestId("user-limits-reset"));
    await waitFor(() => expect(screen.getByTestId("user-limits")).toHaveTextContent("reset"));
  });
});

describe("Admin → Access", () => {
  it("adds a rule for a user, deletes one, and writes a feature flag with roles and users", async () => {
    let rules = [{ id: 1, role: "user", user_id: null, model: "champion", created_at: T, created_by: "a1" }];
    const calls = mockApi((method, url, body) => {
      if (url === "/api/v1/admin/model-access" && method === "GET") return json(200, rules);
      if (url === "/api/v1/admin/knowledge-access" && method === "GET") return json(200, []);
      if (url === "/api/v1/admin/model-access" && method === "POST") {
        rules = [...rules, { id: 2, role: null, user_id: body.user_id, model: body.model, created_at: T, created_by: "a1" } as never];
        return json(201, rules.at(-1));
      }
      if (url === "/api/v1/admin/model-access/1" && method === "DELETE") {
        rules = rules.filter((r) => r.id !== 1);
        return json(204);
      }
      if (url === "/api/v1/admin/feature-flags")
        return json(200, [{ key: "shares", description: "Share links", enabled: true, roles: [], users: [], stored: false, updated_at: null, updated_by: null }]);
      if (url === "/api/v1/admin/feature-flags/shares" && method === "PUT") return json(200, { key: "shares", ...body, stored: true });
    });
    const user = userEvent.setup();
    render(<AccessPage />);
    expect(await screen.findByText("role user")).toBeInTheDocument();
    await user.selectOptions(screen.getByTestId("rule-subject"), "user");
    await user.type(screen.getByTestId("rule-user"), "u9");
    await user.type(screen.getByTestId("rule-model"), "orchard-chat/3");
    await user.click(screen.getByTestId("rule-add"));
    await waitFor(() => expect(screen.getAllByTestId("rule-row")).toHaveLength(2));
    expect(calls.find((c) => c.method === "POST")!.body).toEqual({ model: "orchard-chat/3", user_id: "u9" });
    await user.click(screen.getAllByTestId("rule-delete")[0]);
    await waitFor(() => expect(screen.getAllByTestId("rule-row")).toHaveLength(1));

    const flag = await screen.findByText("shares");
    expect(flag.closest("tr")).toHaveTextContent("built-in default");
    await user.click(within(flag.closest("tr")!).getByTestId("flag-edit"));
    await user.click(screen.getByTestId("flag-enabled"));
    await user.click(screen.getByTestId("flag-role-admin"));
    await user.type(screen.getByTestId("flag-users"), "u1, u2\nu1");
    await user.click(screen.getByTestId("flag-save"));
    await waitFor(() => expect(calls.some((c) => c.method === "PUT")).toBe(true));
    expect(calls.find((c) => c.method === "PUT")!.body).toEqual({ description: "Share links", enabled: false, roles: ["admin"], users: ["u1", "u2"] });

    await user.click(screen.getByTestId("flag-new"));
    await user.type(screen.getByTestId("flag-key"), "Bad Key");
    await user.click(screen.getByTestId("flag-save"));
    expect(screen.getByText(/Lower-case letters, digits/)).toBeInTheDocument();
  });

  it("restricts a role to the crawled site, shows the API's refusal of an unknown base, and revokes", async () => {
    let rules: object[] = [];
    const calls = mockApi((method, url, body) => {
      if (url === "/api/v1/admin/model-access" && method === "GET") return json(200, []);
      if (url === "/api/v1/admin/feature-flags") return json(200, []);
      if (url === "/api/v1/admin/knowledge-access" && method === "GET") return json(200, rules);
      if (url === "/api/v1/admin/knowledge-access" && method === "POST") {
        if (body.knowledge_base !== "crawled-site")
          return json(422, { detail: `knowledge_base '${body.knowledge_base}' is not a published shared knowledge base: use * or one of crawled-site`, code: "invalid_request" });
        rules = [{ id: 7, role: body.role, user_id: null, knowledge_base: body.knowledge_base, created_at: T, created_by: "a1" }];
        return json(201, rules[0]);
      }
      if (url === "/api/v1/admin/knowledge-access/7" && method === "DELETE") {
        rules = [];
        return json(204);
      }
    });
    const user = userEvent.setup();
    render(<AccessPage />);
    expect(await screen.findByTestId("krules-empty")).toHaveTextContent("everyone may use every shared knowledge base");
    await user.type(screen.getByTestId("krule-target"), "nope");
    await user.click(screen.getByTestId("krule-add"));
    expect(await screen.findByText(/not a published shared knowledge base: use \* or one of crawled-site/)).toBeInTheDocument();
    await user.clear(screen.getByTestId("krule-target"));
    await user.type(screen.getByTestId("krule-target"), "crawled-site");
    await user.click(screen.getByTestId("krule-add"));
    const row = await screen.findByTestId("krule-row");
    expect(row).toHaveTextContent("role user");
    expect(row).toHaveTextContent("crawled-site");
    expect(calls.filter((c) => c.method === "POST").at(-1)!.body).toEqual({ knowledge_base: "crawled-site", role: "user" });
    expect(screen.getByTestId("rules-empty")).toBeInTheDocument(); // the model rules are apart
    await user.click(screen.getByTestId("krule-delete"));
    expect(await screen.findByTestId("krules-empty")).toBeInTheDocument();
  });
});
