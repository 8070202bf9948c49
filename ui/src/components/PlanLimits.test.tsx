import { describe, expect, it, vi, afterEach } from "vitest";
import { useState } from "react";
import { act, render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { PlanLimits } from "./PlanLimits";
import { Composer } from "./Composer";
import { tokens } from "../lib/api";
import type { Plan } from "../lib/types";

const plan: Plan = {
  id: "p1", name: "Pro", description: "for teams", monthly_credits: 5000, daily_token_limit: 1000, monthly_token_limit: null,
  is_default: false, created_at: "2026-01-01T00:00:00Z", updated_at: "2026-01-01T00:00:00Z",
};

describe("PlanLimits", () => {
  it("shows the plan, a bar for a limit and none for unlimited", () => {
    render(<PlanLimits plan={plan} limits={{ daily_token_limit: 1000, monthly_token_limit: null }} today={850} month={4000} />);
    expect(screen.getByTestId("plan-name")).toHaveTextContent("Plan Pro: 5,000 credits granted each month");
    const bar = screen.getByRole("progressbar", { name: "Tokens today (UTC)" });
    expect(bar).toHaveAttribute("aria-valuenow", "85");
    expect(screen.getByTestId("limit-daily-text")).toHaveTextContent("850 / 1,000");
    expect(screen.getByTestId("limit-monthly-text")).toHaveTextContent("4,000 / unlimited");
    expect(screen.getAllByRole("progressbar")).toHaveLength(1);
  });

  it("caps a bar at 100% when the usage passed the limit", () => {
    render(<PlanLimits limits={{ daily_token_limit: 10, monthly_token_limit: 10 }} today={25} month={5} />);
    const [daily, monthly] = screen.getAllByRole("progressbar");
    expect(daily).toHaveAttribute("aria-valuenow", "100");
    expect(monthly).toHaveAttribute("aria-valuenow", "50");
  });
});

describe("the composer's estimate", () => {
  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllGlobals();
  });

  it("asks once typing pauses, for what is typed now, and shows credits, dollars and a shortfall", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    tokens.set({ access_token: "a", refresh_token: "r" });
    const bodies: string[] = [];
    vi.stubGlobal(
      "fetch",
      vi.fn(async (url: string, init: RequestInit) => {
        expect(url).toBe("/api/v1/chats/c1/estimate");
        const { content } = JSON.parse(String(init.body));
        bodies.push(content);
        return new Response(
          JSON.stringify({ prompt_tokens_max: 20, completion_tokens_max: 512, credits_max: content.length * 10, cost_usd_max: 0.0042, balance: 25 }),
          { status: 200, headers: { "Content-Type": "application/json" } },
        );
      }),
    );
    function Typed() {
      const [v, setV] = useState("");
      return <Composer value={v} onChange={setV} onSend={() => {}} onStop={() => {}} phase="idle" chatId="c1" />;
    }
    render(<Typed />);
    const user = userEvent.setup({ advanceTimers: vi.advanceTimersByTime });
    await user.type(screen.getByTestId("composer"), "hi");
    expect(bodies).toEqual([]); // still typing: nothing asked yet
    await act(async () => {
      await vi.advanceTimersByTimeAsync(450);
    });
    expect(bodies).toEqual(["hi"]); // one request, for the whole text
    expect(await screen.findByTestId("cost-estimate")).toHaveTextContent("Costs at most 20 credits ($0.0042)");
    await user.type(screen.getByTestId("composer"), "!!");
    expect(screen.queryByTestId("cost-estimate")).toBeNull(); // the old figure is not shown for new text
    await act(async () => {
      await vi.advanceTimersByTimeAsync(450);
    });
    expect(bodies).toEqual(["hi", "hi!!"]);
    expect(await screen.findByTestId("cost-estimate")).toHaveTextContent("40 credits ($0.0042) — more than your 25 credits");
  });
});
