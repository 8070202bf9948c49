import { describe, expect, it } from "vitest";
import { useRef, useState } from "react";
import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { useFocusTrap } from "./focusTrap";

function Drawer() {
  const [open, setOpen] = useState(false);
  const ref = useRef<HTMLDivElement>(null);
  useFocusTrap(ref, open, () => setOpen(false));
  return (
    <>
      <button onClick={() => setOpen(true)}>Open menu</button>
      <button>Page button</button>
      <div ref={ref} data-testid="drawer" inert={!open || undefined}>
        <a href="/one">One</a>
        <button disabled>Disabled</button>
        <button>Two</button>
        <button onClick={() => setOpen(false)}>Close</button>
      </div>
      <span data-testid="state">{open ? "open" : "closed"}</span>
    </>
  );
}

describe("useFocusTrap", () => {
  it("keeps Tab inside while open, closes on Escape and gives focus back to the opener", async () => {
    const user = userEvent.setup();
    render(<Drawer />);
    const opener = screen.getByText("Open menu");
    await user.click(opener);
    expect(screen.getByText("One")).toHaveFocus();
    await user.tab();
    expect(screen.getByText("Two")).toHaveFocus(); // the disabled button is skipped
    await user.tab();
    expect(screen.getByText("Close")).toHaveFocus();
    await user.tab(); // wraps instead of leaving for the page
    expect(screen.getByText("One")).toHaveFocus();
    await user.tab({ shift: true });
    expect(screen.getByText("Close")).toHaveFocus();
    await user.keyboard("{Escape}");
    expect(screen.getByTestId("state")).toHaveTextContent("closed");
    expect(opener).toHaveFocus();
  });

  it("does nothing while closed: Tab moves through the page and Escape is ignored", async () => {
    const user = userEvent.setup();
    render(<Drawer />);
    screen.getByText("Open menu").focus();
    await user.tab();
    expect(screen.getByText("Page button")).toHaveFocus();
    await user.keyboard("{Escape}");
    expect(screen.getByTestId("state")).toHaveTextContent("closed");
  });

  it("gives focus back to the opener when closed from inside", async () => {
    const user = userEvent.setup();
    render(<Drawer />);
    await user.click(screen.getByText("Open menu"));
    await user.click(screen.getByText("Close"));
    expect(screen.getByText("Open menu")).toHaveFocus();
  });
});
