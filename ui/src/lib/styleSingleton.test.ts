import { describe, expect, it } from "vitest";
import { stylesheetSingleton } from "./styleSingleton";

const sheets = () => document.head.querySelectorAll("style").length + (document.adoptedStyleSheets?.length ?? 0);
const noStyleElements = () => document.head.querySelectorAll("style").length === 0;

describe("stylesheetSingleton (Radix's scroll lock without a <style> element)", () => {
  it("adds the first user's styles once and removes them with the last user", () => {
    const before = sheets();
    const sheet = stylesheetSingleton();
    sheet.add("body { overflow: hidden }");
    sheet.add("body { overflow: hidden }");
    expect(sheets()).toBe(before + 1);
    sheet.remove();
    expect(sheets()).toBe(before + 1);
    sheet.remove();
    expect(sheets()).toBe(before);
  });

  it("uses a constructed stylesheet where the browser has them (the CSP allows it)", () => {
    const sheet = stylesheetSingleton();
    sheet.add("body { overflow: hidden }");
    try {
      if ("adoptedStyleSheets" in document && typeof CSSStyleSheet.prototype.replaceSync === "function") {
        expect(noStyleElements()).toBe(true);
        expect([...document.adoptedStyleSheets].some((s) => s.cssRules[0]?.cssText.includes("overflow: hidden"))).toBe(true);
      } else {
        expect(noStyleElements()).toBe(false); // jsdom without them: the fallback
      }
    } finally {
      sheet.remove();
    }
  });
});
