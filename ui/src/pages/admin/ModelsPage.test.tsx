import { afterEach, describe, expect, it, vi } from "vitest";
import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { ModelsPage } from "./ModelsPage";
import { formatInterval, sig3 } from "./ModelCard";

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

const side = (up: number, rated: number, answers: number) => ({
  answers,
  rated,
  thumbs_up_rate: { value: up / rated, low: up / rated - 0.08, high: up / rated + 0.06, n: rated },
  regeneration_rate: { value: 0.05, low: 0.02, high: 0.11, n: answers },
  abandonment_rate: { value: 0.01, low: 0.0, high: 0.05, n: answers },
  error_rate: { value: 0, low: 0, high: 0.04, n: answers },
  latency_ms: { value: 812.345, low: 790.1, high: 834.6, n: answers },
  credits_per_answer: { value: 5.25, low: 5.01, high: 5.49, n: answers },
});
const review = {
  verdict: "promote",
  reason: "challenger better on thumbs_up_rate, worse on nothing",
  test: "mSPRT (normal mixture), always valid",
  alpha: 0.05,
  tau: 0.1,
  sides: { champion: side(300, 600, 900), challenger: side(60, 70, 100) },
  tests: {},
};
const version = (n: string, aliases: string[], score: string, extra = {}) => ({
  version: n,
  aliases,
  created_at: "2026-12-07T10:00:00Z",
  status: "READY",
  run_id: `run${n}`,
  metrics: { "lm_eval/docs_qa/exact": score, "lm_eval/docs_qa/examples": "40" },
  lineage: { "orchard.lineage.mix": "/home/someone/.orchard/data/mix/corpus-3f2a" },
  description: "",
  ...extra,
});
const card = {
  version: "2",
  aliases: ["challenger"],
  model_step: "dpo",
  tokenizer: "bpe-77aa",
  data: { mix: "documents 12.3k, tokens 2.5M" },
  runs: [
    {
      step: "mix",
      manifest: "corpus-3f2a",
      mlflow: { label: "run 732e35b7", url: "http://mlflow.example/#/experiments/1/runs/732e35b7aa" },
      airflow: { label: "orchard_data runs", url: "http://airflow.example/dags/orchard_data/runs" },
    },
  ],
  metrics: [{ name: "docs_qa/exact", value: "0.505", champion: "0.412" }],
  decontamination: { sft: "2 of 800 removed" },
  feedback_datasets: ["feedback-v3 (412 pairs)"],
  review,
  markdown: "# Model card: version 2\n",
  artifact: "runs:/run2/model_card/model_card.md",
};
const split = {
  model_name: "orchard-chat",
  challenger_percent: 0,
  updated_at: "2026-12-07T11:00:00Z",
  updated_by: null,
  guardrail: {
    at: "2026-12-07T11:00:00Z",
    metric: "error_rate",
    rate: 1,
    low: 0.61,
    bound: 0.2,
    count: 6,
    previous_percent: 10,
    version: "2",
  },
};

function mockApi() {
  vi.stubGlobal(
    "fetch",
    vi.fn(async (url: string) => {
      if (url === "/api/v1/admin/models")
        return json(200, {
          name: "orchard-chat",
          aliases: { champion: "1", challenger: "2" },
          champion_history: [],
          versions: [version("2", ["challenger"], "0.50498765", { review }), version("1", ["champion"], "0.41234567")],
        });
      if (url === "/api/v1/admin/models/2/card") return json(200, card);
      if (url.startsWith("/api/v1/admin/models/split/results")) return json(200, { split, since: null, variants: [] });
      return json(404, { detail: "Not Found", code: "not_found" });
    }),
  );
}

afterEach(() => vi.unstubAllGlobals());

describe("formatting", () => {
  it("gives 3 significant figures and intervals", () => {
    expect(sig3("0.50498765")).toBe("0.505");
    expect(sig3(1234.5678)).toBe("1230");
    expect(sig3(null)).toBe("—");
    expect(sig3("n/a")).toBe("n/a");
    expect(formatInterval({ value: 0.857, low: 0.757, high: 0.921, n: 70 }, true)).toBe("85.7 % [75.7, 92.1]");
  });
});

describe("ModelsPage", () => {
  it("shows metrics against the champion, the verdict, the guardrail alert and the model card", async () => {
    mockApi();
    render(<ModelsPage />);
    const rows = await screen.findAllByTestId("model-row");
    const challenger = rows.find((r) => r.dataset.version === "2")!;
    const metric = within(challenger).getByTestId("model-metric");
    expect(metric).toHaveTextContent("docs_qa/exact0.5050.412");
    expect(within(challenger).queryByText(/examples/)).toBeNull();
    expect(within(challenger).getByTestId("verdict")).toHaveTextContent("promote");
    expect(screen.queryByText(/\/home\/someone/)).toBeNull(); // lineage is never a local path

    expect(await screen.findByTestId("guardrail-alert")).toHaveTextContent(
      "Guardrail: the challenger (v2) was cut from 10% to 0%. Its error rate was 100% over 6",
    );

    await userEvent.click(within(challenger).getByText("Model card"));
    const shown = await screen.findByTestId("model-card");
    expect(within(shown).getByRole("link", { name: "run 732e35b7" })).toHaveAttribute(
      "href",
      "http://mlflow.example/#/experiments/1/runs/732e35b7aa",
    );
    expect(within(shown).getByRole("link", { name: "orchard_data runs" })).toHaveAttribute(
      "href",
      "http://airflow.example/dags/orchard_data/runs",
    );
    expect(within(shown).getByTestId("card-data")).toHaveTextContent("mix: documents 12.3k, tokens 2.5M");
    expect(within(shown).getByTestId("card-feedback")).toHaveTextContent("feedback-v3 (412 pairs)");
    const up = within(shown)
      .getAllByTestId("ab-row")
      .find((r) => r.dataset.metric === "thumbs_up_rate")!;
    expect(up).toHaveTextContent("50 % [42, 56]");
    expect(up).toHaveTextContent("85.7 % [77.7, 91.7]");
    expect(within(shown).getByTestId("card-artifact")).toHaveTextContent("runs:/run2/model_card/model_card.md");
  });
});
