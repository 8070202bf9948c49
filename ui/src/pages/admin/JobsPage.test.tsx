import { afterEach, describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { TriggerForm } from "./JobsPage";

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

/** fetch answering POST /api/v1/admin/jobs with `answer`; returns the bodies sent. */
function mockTrigger(answer: () => Response) {
  const sent: unknown[] = [];
  vi.stubGlobal(
    "fetch",
    vi.fn(async (url: string, init: RequestInit = {}) => {
      if (url === "/api/v1/admin/jobs" && init.method === "POST") {
        sent.push(JSON.parse(String(init.body)));
        return answer();
      }
      return json(404, { detail: "Not Found", code: "not_found" });
    }),
  );
  return sent;
}

function typeConf(text: string) {
  fireEvent.change(screen.getByLabelText("Conf (JSON)"), { target: { value: text } });
}

afterEach(() => vi.unstubAllGlobals());

describe("TriggerForm", () => {
  it("refuses a conf that is not a JSON object without calling the API", async () => {
    const sent = mockTrigger(() => json(201, {}));
    render(<TriggerForm onTriggered={vi.fn()} />);
    typeConf('["sft"]');
    await userEvent.click(screen.getByTestId("job-trigger"));
    expect(screen.getByRole("alert")).toHaveTextContent("Conf must be a JSON object");
    expect(screen.getByLabelText("Conf (JSON)")).toHaveAttribute("aria-invalid", "true");
    typeConf("{oops");
    await userEvent.click(screen.getByTestId("job-trigger"));
    expect(screen.getByRole("alert")).toHaveTextContent("Conf is not valid JSON");
    expect(sent).toEqual([]);
  });

  it("sends the DAG and the parsed conf", async () => {
    const run = { dag_id: "orchard_build", run_id: "manual__1", state: "queued", dag_paused: false };
    const sent = mockTrigger(() => json(201, run));
    const onTriggered = vi.fn();
    render(<TriggerForm onTriggered={onTriggered} />);
    await userEvent.selectOptions(screen.getByLabelText("DAG"), "orchard_build");
    typeConf('{"data": {"max_pages": 5}}');
    await userEvent.click(screen.getByTestId("job-trigger"));
    await waitFor(() => expect(onTriggered).toHaveBeenCalledWith(run));
    expect(sent).toEqual([{ dag: "orchard_build", conf: { data: { max_pages: 5 } } }]);
  });

  it("shows Airflow's refusal of a Param on the conf field", async () => {
    const detail = "Airflow refused the conf: Invalid input for param sft_steps: 0 is less than the minimum of 1";
    mockTrigger(() => json(422, { detail, code: "conf_refused" }));
    render(<TriggerForm onTriggered={vi.fn()} />);
    typeConf('{"sft_steps": 0}');
    await userEvent.click(screen.getByTestId("job-trigger"));
    expect(await screen.findByRole("alert")).toHaveTextContent("sft_steps: 0 is less than the minimum");
    expect(screen.getByLabelText("Conf (JSON)")).toHaveAttribute("aria-invalid", "true");
  });
});
