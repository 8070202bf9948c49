import { describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { Markdown } from "./Markdown";

describe("Markdown", () => {
  it("renders raw HTML as inert text", () => {
    const text = 'Look: <img src=x onerror=alert(1)> and <script>alert(1)</script> end';
    const { container } = render(<Markdown text={text} />);
    expect(container.querySelector("img")).toBeNull();
    expect(container.querySelector("script")).toBeNull();
    expect(container.textContent).toContain("<img src=x onerror=alert(1)>");
    expect(container.textContent).toContain("<script>alert(1)</script>");
  });

  it("renders a block of raw HTML as text too", () => {
    const { container } = render(<Markdown text={'<div onclick="x()"><img src=x onerror=alert(1)></div>\n\nafter'} />);
    expect(container.querySelector("img")).toBeNull();
    expect(container.querySelector("[onclick]")).toBeNull();
    expect(container.textContent).toContain("onerror=alert(1)");
  });

  it("drops javascript: links and opens links safely", () => {
    const { container } = render(<Markdown text={"[a](https://example.org) [b](javascript:alert(1))"} />);
    const links = container.querySelectorAll("a");
    expect(links[0].getAttribute("href")).toBe("https://example.org");
    expect(links[0].getAttribute("rel")).toBe("noopener noreferrer");
    for (const a of links) expect(a.getAttribute("href") ?? "").not.toMatch(/^javascript:/i);
  });

  it("highlights a code block and copies its text", async () => {
    const writeText = vi.fn().mockResolvedValue(undefined);
    Object.defineProperty(navigator, "clipboard", { value: { writeText }, configurable: true });
    const code = "def f(x):\n    return 'hi'  # note";
    const { container } = render(<Markdown text={"```python\n" + code + "\n```"} />);
    const el = container.querySelector("pre code")!;
    expect(el.classList).toContain("hljs");
    expect(el.querySelector(".hljs-keyword")?.textContent).toBe("def");
    expect(el.querySelector(".hljs-string")?.textContent).toBe("'hi'");
    expect(el.querySelector(".hljs-comment")?.textContent).toBe("# note");
    fireEvent.click(screen.getByRole("button", { name: "Copy code" }));
    await waitFor(() => expect(writeText).toHaveBeenCalledWith(code));
    expect(await screen.findByRole("button", { name: "Code copied" })).toBeInTheDocument();
  });

  it("renders GFM tables", () => {
    const { container } = render(<Markdown text={"| a | b |\n|---|---|\n| 1 | 2 |"} />);
    expect(container.querySelectorAll("td")).toHaveLength(2);
  });
});
