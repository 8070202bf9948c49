import { afterEach, describe, expect, it, vi } from "vitest";
import { render, screen } from "@testing-library/react";
import HealthPage from "./HealthPage";

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

const links = {
  grafana: "https://grafana.example.org/dashboards/f/orchard",
  prometheus: "http://127.0.0.1:9190",
  airflow: "https://airflow.example.org",
  mlflow: "http://127.0.0.1:5000",
  ray: "http://127.0.0.1:8265",
};

function answer(body: unknown) {
  vi.stubGlobal(
    "fetch",
    vi.fn(async (url: string) => (url === "/api/v1/admin/health" ? json(200, body) : json(404, { detail: "Not Found" }))),
  );
}

afterEach(() => vi.unstubAllGlobals());

describe("HealthPage", () => {
  it("shows serving's health, the targets, the firing alerts and links out", async () => {
    answer({
      available: true,
      detail: null,
      serving: { requests_per_second: 1.5, error_ratio: 0.02, ttft_p95_seconds: 0.125, queue_depth: 3 },
      targets: [
        { job: "api", up: true },
        { job: "ray", up: false },
      ],
      firing_alerts: ["OrchardTargetDown"],
      links,
    });
    render(<HealthPage />);
    expect(await screen.findByTestId("health-ttft")).toHaveTextContent("125 ms");
    expect(screen.getByTestId("health-errors")).toHaveTextContent("2.0%");
    expect(screen.getByTestId("health-queue")).toHaveTextContent("3");
    expect(screen.getByText("ray: down")).toBeInTheDocument();
    expect(screen.getByTestId("health-alerts")).toHaveTextContent("Firing: OrchardTargetDown");
    expect(screen.getByRole("link", { name: "Grafana" })).toHaveAttribute("href", links.grafana);
    expect(screen.getByRole("link", { name: "Airflow" })).toHaveAttribute("href", links.airflow);
  });

  it("says why Prometheus is unavailable and still links out", async () => {
    const detail = "Prometheus at http://127.0.0.1:9190 did not answer: connection refused";
    answer({
      available: false,
      detail,
      serving: { requests_per_second: null, error_ratio: null, ttft_p95_seconds: null, queue_depth: null },
      targets: [],
      firing_alerts: [],
      links: { ...links, grafana: null },
    });
    render(<HealthPage />);
    expect(await screen.findByTestId("health-unavailable")).toHaveTextContent(detail);
    expect(screen.getByTestId("health-ttft")).toHaveTextContent("—");
    expect(screen.queryByRole("link", { name: "Grafana" })).toBeNull();
    expect(screen.getByRole("link", { name: "MLflow" })).toHaveAttribute("href", links.mlflow);
  });
});
