import { afterEach, describe, expect, it, vi } from "vitest";
import { render, screen, within } from "@testing-library/react";
import { MemoryRouter } from "react-router";
import { CreditsPage } from "./CreditsPage";
import UsagePage from "./UsagePage";

const json = (body: unknown) => new Response(JSON.stringify(body), { status: 200, headers: { "Content-Type": "application/json" } });
const row = (key: string, credits: number) => ({ key, requests: 1, prompt_tokens: 10, completion_tokens: credits, credits, cost_usd: credits * 0.002 });

function mockApi() {
  vi.stubGlobal(
    "fetch",
    vi.fn(async (url: string) => {
      if (url === "/api/v1/credits")
        return json({ balance: 2500, balance_usd: 5, credit_price_usd: 0.002, entries: [], plan: null, limits: null });
      if (url.startsWith("/api/v1/usage?by=model"))
        return json({ by: "model", since: "2025-01-01", rows: [row("champion", 300)], total: row("total", 300), credit_price_usd: 0.002 });
      if (url.startsWith("/api/v1/usage"))
        return json({ by: "day", since: "2025-01-01", rows: [], total: row("total", 300), credit_price_usd: 0.002 });
      return new Response("{}", { status: 404 });
    }),
  );
}

afterEach(() => vi.unstubAllGlobals());

describe("dollars next to credits", () => {
  it("shows the balance's worth and the credit price", async () => {
    mockApi();
    render(<MemoryRouter><CreditsPage /></MemoryRouter>);
    expect(await screen.findByTestId("credit-balance-usd")).toHaveTextContent("(≈ $5.00)");
    expect(screen.getByTestId("credit-price")).toHaveTextContent("One credit costs $0.002.");
  });

  it("prices the usage total and each model's row", async () => {
    mockApi();
    render(<MemoryRouter><UsagePage /></MemoryRouter>);
    expect(await screen.findByTestId("usage-cost")).toHaveTextContent("(≈ $0.60)");
    const table = (await screen.findByText("champion")).closest("table")!;
    expect(within(table).getByText("Cost")).toBeInTheDocument();
    expect(within(table).getByText("$0.60")).toBeInTheDocument();
  });
});
