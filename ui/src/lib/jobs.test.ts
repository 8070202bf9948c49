import { describe, expect, it } from "vitest";
import { JOB_CONF_MAX, validateConf } from "./jobs";

describe("validateConf", () => {
  it("takes a JSON object, and blank as {}", () => {
    expect(validateConf('{"stages": ["sft"], "sft_steps": 3}')).toEqual({ ok: true, conf: { stages: ["sft"], sft_steps: 3 } });
    expect(validateConf("  \n")).toEqual({ ok: true, conf: {} });
    expect(validateConf("{}")).toEqual({ ok: true, conf: {} });
  });

  it("refuses text that is not JSON, saying so", () => {
    const checked = validateConf('{"sft_steps": 3,}');
    expect(checked.ok).toBe(false);
    if (!checked.ok) expect(checked.error).toMatch(/^Conf is not valid JSON/);
  });

  it.each(["[1, 2]", "null", "3", '"{}"', "true"])("refuses %s: not an object", (text) => {
    expect(validateConf(text)).toEqual({ ok: false, error: 'Conf must be a JSON object, like {"sft_steps": 150}.' });
  });

  it("refuses a conf longer than the API takes", () => {
    const big = JSON.stringify({ data: { seeds: ["x".repeat(JOB_CONF_MAX)] } });
    expect(validateConf(big)).toEqual({ ok: false, error: `Conf is at most ${JOB_CONF_MAX} characters of JSON.` });
  });
});
