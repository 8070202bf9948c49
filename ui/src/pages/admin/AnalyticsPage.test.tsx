import { afterEach, describe, expect, it, vi } from "vitest";
import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import AnalyticsPage from "./AnalyticsPage";
import type { UsageAnalytics } from "../../lib/types";

const row = (key: string, n: number, extra = {}) => ({
  key, requests: n, prompt_tokens: 10 * n, completion_tokens: 5 * n, credits: 15 * n, users: 1, email: null, ...extra,
});

function analytics(by: UsageAnalytics["by"]): UsageAnalytics {
  const rows = by === "user" ? [row("u1", 3, { email: "alice@example.org" }), row("u2", 1, { email: "bob@example.org" })] : [row("2026-01-02", 4)];
  return {
    by, days: 30, since: "2026-01-01", rows, total: row("total", 4, { users: 2 }),
    active_users: [{ day: "2026-01-02", users: 2 }],
    popular_models: [{ model: "champion", requests: 4, users: 2, tokens: 60 }],
  };
}

afterEach(() => vi.unstubAllGlobals());

describe("AnalyticsPage", () => {
  it("shows the totals, the charts and the breakdown by user", async () => {
    const urls: string[] = [];
    vi.stubGlobal(
      "fetch",
      vi.fn(async (url: string) => {
        urls.push(url);
        const by = new URL(url, "http://x").searchParams.get("by") as UsageAnalytics["by"];
        return new Response(JSON.stringify(analytics(by)), { status: 200, headers: { "Content-Type": "application/json" } });
      }),
    );
    render(<AnalyticsPage />);
    expect(await screen.findByText("60 credits")).toBeInTheDocument();
    expect(screen.getByTestId("analytics-chart")).toBeInTheDocument();
    expect(screen.getAllByTestId("analytics-row")).toHaveLength(1);

    await userEvent.selectOptions(screen.getByLabelText("Group by"), "user");
    const rows = await screen.findAllByTestId("analytics-row");
    expect(rows.map((r) => within(r).getAllByRole("cell")[0].textContent)).toEqual(["alice@example.org", "bob@example.org"]);
    expect(urls).toContain("/api/v1/admin/analytics?by=user&days=30");
  });
});
