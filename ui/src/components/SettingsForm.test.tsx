import { describe, expect, it, vi } from "vitest";
import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { SettingsForm } from "./SettingsForm";
import { ApiError } from "../lib/api";
import type { ChatSettings } from "../lib/types";

const initial: ChatSettings = { model_alias: "champion", temperature: 0.7, max_tokens: 512, system_prompt: "", tone: "neutral" };

async function setValue(label: string, value: string) {
  const input = screen.getByLabelText(label);
  await userEvent.clear(input);
  if (value) await userEvent.type(input, value);
}

describe("SettingsForm", () => {
  it.each(["2.5", "-0.1", "abc"])("refuses temperature %s with a message", async (value) => {
    const onSubmit = vi.fn();
    render(<SettingsForm initial={initial} onSubmit={onSubmit} />);
    await setValue("Temperature", value);
    await userEvent.click(screen.getByRole("button", { name: "Save settings" }));
    expect(onSubmit).not.toHaveBeenCalled();
    expect(screen.getByRole("alert")).toHaveTextContent(/Temperature must be/);
    expect(screen.getByLabelText("Temperature")).toHaveAttribute("aria-invalid", "true");
  });

  it("refuses max tokens outside 1–4096", async () => {
    const onSubmit = vi.fn();
    render(<SettingsForm initial={initial} onSubmit={onSubmit} />);
    await setValue("Max tokens", "5000");
    await userEvent.click(screen.getByRole("button", { name: "Save settings" }));
    expect(onSubmit).not.toHaveBeenCalled();
    expect(screen.getByRole("alert")).toHaveTextContent("Max tokens must be between 1 and 4096.");
  });

  it("sends only the changed fields as the PATCH body", async () => {
    const onSubmit = vi.fn().mockResolvedValue(undefined);
    render(<SettingsForm initial={initial} onSubmit={onSubmit} />);
    await setValue("Temperature", "1.25");
    await setValue("Max tokens", "1024");
    await userEvent.selectOptions(screen.getByLabelText("Model"), "challenger");
    await userEvent.click(screen.getByLabelText("formal"));
    await userEvent.type(screen.getByLabelText("System prompt"), "Be brief.");
    await userEvent.click(screen.getByRole("button", { name: "Save settings" }));
    expect(onSubmit).toHaveBeenCalledTimes(1);
    expect(onSubmit.mock.calls[0][0]).toEqual({
      model_alias: "challenger",
      temperature: 1.25,
      max_tokens: 1024,
      tone: "formal",
      system_prompt: "Be brief.",
    });
    expect(await screen.findByText("Saved.")).toBeInTheDocument();
  });

  it("accepts the bounds 0 and 2", async () => {
    const onSubmit = vi.fn().mockResolvedValue(undefined);
    render(<SettingsForm initial={initial} onSubmit={onSubmit} />);
    await setValue("Temperature", "2");
    await userEvent.click(screen.getByRole("button", { name: "Save settings" }));
    expect(onSubmit.mock.calls[0][0]).toEqual({ temperature: 2 });
  });

  it("shows the API's 422 field errors", async () => {
    const onSubmit = vi.fn().mockRejectedValue(
      new ApiError(422, "invalid_request", "request is not valid", [{ field: "system_prompt", message: "too long for the server" }]),
    );
    render(<SettingsForm initial={initial} onSubmit={onSubmit} />);
    await userEvent.type(screen.getByLabelText("System prompt"), "x");
    await userEvent.click(screen.getByRole("button", { name: "Save settings" }));
    expect(await screen.findByText("too long for the server")).toBeInTheDocument();
  });
});
