import { describe, expect, it } from "vitest";
import { formatUsd, formatWait, parseLimit, usageFraction } from "./billing";
import { validatePlan, emptyPlan } from "./plans";
import { ApiError, describeError } from "./api";
import { modelChoices } from "./settings";

describe("billing figures", () => {
  it("reads a limit field: empty is null, digits a number, anything else an error", () => {
    expect(parseLimit("")).toEqual({ ok: true, value: null });
    expect(parseLimit(" 10_000 ")).toEqual({ ok: true, value: 10000 });
    expect(parseLimit("0")).toEqual({ ok: true, value: 0 });
    expect(parseLimit("-1").ok).toBe(false);
    expect(parseLimit("1.5").ok).toBe(false);
    expect(parseLimit("11", 10)).toEqual({ ok: false, error: "At most 10." });
  });

  it("formats dollars, waits and bar fractions", () => {
    expect(formatUsd(null)).toBeNull();
    expect(formatUsd(0)).toBe("$0");
    expect(formatUsd(1.234)).toBe("$1.23");
    expect(formatUsd(0.000123)).toBe("$0.00012");
    expect(formatWait(45)).toBe("45 s");
    expect(formatWait(3700)).toBe("1 h 1 min");
    expect(formatWait(200000)).toBe("2 d 7 h");
    expect(usageFraction(50, null)).toBeNull();
    expect(usageFraction(50, 200)).toBe(0.25);
    expect(usageFraction(500, 200)).toBe(1);
    expect(usageFraction(0, 0)).toBe(1);
  });

  it("validates a plan: a name, whole credits, empty limits are unlimited (null)", () => {
    expect(validatePlan(emptyPlan)).toEqual({ ok: false, errors: { name: "Give the plan a name." } });
    const bad = validatePlan({ ...emptyPlan, name: "Pro", monthly_credits: "", daily_token_limit: "x" });
    expect(bad.ok || Object.keys(bad.errors).sort()).toEqual(["daily_token_limit", "monthly_credits"]);
    expect(validatePlan({ ...emptyPlan, name: " Pro ", monthly_credits: "500", monthly_token_limit: "9000" })).toEqual({
      ok: true,
      body: { name: "Pro", description: "", monthly_credits: 500, daily_token_limit: null, monthly_token_limit: 9000, is_default: false },
    });
  });

  it("explains a token limit with its wait and a shortfall of credits", () => {
    const limit = new ApiError(429, "token_limit", "the daily token limit of 100 tokens would be passed", [], 3700);
    expect(describeError(limit)).toBe(
      "Token limit reached: the daily token limit of 100 tokens would be passed. You can send again in 1 h 1 min.",
    );
    expect(describeError(new ApiError(402, "insufficient_credits", "may cost up to 9 credits"))).toMatch(/Not enough credits.*up to 9/);
  });

  it("offers the allowed models, keeping a chat's current one that is no longer allowed", () => {
    expect(modelChoices(["champion"], "champion")).toEqual(["champion"]);
    expect(modelChoices(["champion"], "challenger")).toEqual(["challenger", "champion"]);
  });
});
