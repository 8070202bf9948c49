import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { Sources } from "./Sources";

const citations = [
  { n: 1, chunk_id: "k1", file_id: "f1", knowledge_base_id: "b1", source: "report.pdf", page: 2, heading: "Revenue", snippet: "Revenue grew by 12 percent…", text: "Revenue grew by 12 percent in May thanks to cider sales." },
  { n: 2, chunk_id: "k2", file_id: "f2", knowledge_base_id: "b1", source: "notes.md", page: null, heading: "", snippet: "Drip irrigation", text: "Drip irrigation saves water." },
];

describe("Sources", () => {
  it("lists the numbered sources and opens a passage on click", async () => {
    render(<Sources citations={citations} />);
    const items = screen.getAllByTestId("source");
    expect(items.map((i) => i.textContent)).toEqual([
      "[1]report.pdf, p. 2Revenue grew by 12 percent…",
      "[2]notes.mdDrip irrigation",
    ]);
    expect(screen.queryByTestId("source-passage")).toBeNull();
    await userEvent.click(items[0]);
    expect(screen.getByTestId("source-passage").textContent).toBe("Revenue grew by 12 percent in May thanks to cider sales.");
    expect(screen.getByRole("dialog")).toHaveAccessibleName("[1] report.pdf, page 2");
  });

  it("shows nothing for an answer without sources", () => {
    const { container } = render(<Sources citations={[]} />);
    expect(container).toBeEmptyDOMElement();
  });
});
