"""Orchard's Grafana dashboards, as code: each is a function returning Grafana's dashboard
JSON model; `orchard grafana write` writes them to `infra/grafana/dashboards/*.json`
(committed; a test checks they are up to date) and `orchard grafana push` provisions them.

Every query reads a metric a service of the stack really exports (docs/observability.md),
through one Prometheus datasource, uid `orchard-prometheus`, that the push provisions too.
A test runs a workload on the local stack and asks the local Prometheus every panel's
queries: each must return data. Panels that only nodes with GPUs can fill say so in their
description (`GPU_ONLY`); that test requires them only where a GPU is present.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

DATASOURCE_UID = "orchard-prometheus"
DATASOURCE = {"type": "prometheus", "uid": DATASOURCE_UID}
GPU_ONLY = "GPU nodes only"
DASHBOARDS_DIR = Path(__file__).resolve().parents[1] / "infra" / "grafana" / "dashboards"
SCHEMA_VERSION = 39


def timeseries(
    title: str, *queries: tuple[str, str], unit: str = "short", description: str = ""
) -> dict[str, Any]:
    """A time series panel; each query is (PromQL, legend)."""
    return _panel("timeseries", title, queries, unit, description)


def stat(title: str, query: str, unit: str = "short", description: str = "") -> dict[str, Any]:
    return _panel("stat", title, ((query, ""),), unit, description)


def _panel(kind, title, queries, unit, description) -> dict[str, Any]:
    panel: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
            }
            for i, (expr, legend) in enumerate(queries)
        ],
    }
    if kind == "stat":
        panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "graphMode": "area"}
    else:
        panel["options"] = {"legend": {"displayMode": "list", "placement": "bottom"}}
    return panel


def quantile(q: float, buckets: str, by: str = "", window: str = "5m") -> str:
    """The q-quantile of a Prometheus histogram's `_bucket` series, summed by `le` (+ `by`)."""
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({buckets}[{window}])))"


def grown(counter: str, window: str, by: str = "dag_id") -> str:
    """How much a counter grew over `window`, counting a series born inside the window from
    zero (`increase()` cannot see a series' first value: a first failure would be lost)."""
    return f"sum by ({by}) ({counter}) - sum by ({by}) ({counter} offset {window} or {counter} * 0)"


def dashboard(uid: str, title: str, description: str, panels: list[dict]) -> dict[str, Any]:
    """Lays the panels out: stats four to a row, time series two to a row."""
    x = y = row_height = 0
    laid_out = []
    for number, panel in enumerate(panels, start=1):
        width, height = (6, 4) if panel["type"] == "stat" else (12, 8)
        if x + width > 24:
            x, y, row_height = 0, y + row_height, 0
        laid_out.append(
            {"id": number, "gridPos": {"h": height, "w": width, "x": x, "y": y}, **panel}
        )
        x, row_height = x + width, max(row_height, height)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["orchard"],
        "timezone": "utc",
        "editable": True,
        "schemaVersion": SCHEMA_VERSION,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": laid_out,
    }


def training() -> dict[str, Any]:
    train = "ray_orchard_train"
    return dashboard(
        "orchard-training",
        "Orchard · Training",
        "Pretraining and post-training runs, from their Ray workers (orchard/train_metrics.py).",
        [
            stat("Runs reporting", f"count(count by (run) ({train}_steps_total))"),
            stat("Steps done", f"sum({train}_steps_total)"),
            stat(
                "Since the last step",
                f"min(time() - {train}_last_step_timestamp_seconds)",
                unit="s",
                description="The OrchardTrainingStalled alert fires past 10 minutes.",
            ),
            stat("Latest loss", f"min({train}_loss)"),
            timeseries(
                "Loss",
                (f"{train}_loss", "{{run}} train"),
                (f"{train}_val_loss", "{{run}} validation"),
            ),
            timeseries("Throughput", (f"{train}_tokens_per_second", "{{run}}"), unit="tokens/s"),
            timeseries(
                "Steps per minute",
                (f"sum by (run) (rate({train}_steps_total[1m])) * 60", "{{run}}"),
            ),
            timeseries("Learning rate", (f"{train}_lr", "{{run}}")),
            timeseries("Gradient norm", (f"{train}_grad_norm", "{{run}}")),
            timeseries(
                "Model FLOPs utilisation",
                (f"{train}_mfu", "{{run}}"),
                unit="percentunit",
                description=f"{GPU_ONLY}: MFU needs the device's peak FLOPs.",
            ),
        ],
    )


def serving() -> dict[str, Any]:
    serve = "ray_orchard_serve"
    rate = "[1m]"
    return dashboard(
        "orchard-serving",
        "Orchard · Serving",
        "The OpenAI-compatible API on Ray Serve, per model version (serving/metrics.py).",
        [
            stat("Requests/s", f"sum(rate({serve}_requests_total{rate}))", unit="reqps"),
            stat(
                "Error ratio (5m)",
                f'(sum(rate({serve}_requests_total{{status=~"5.."}}[5m])) or vector(0))'
                f" / sum(rate({serve}_requests_total[5m]))",
                unit="percentunit",
            ),
            stat(
                "TTFT p95 (5m)",
                quantile(0.95, f"{serve}_time_to_first_token_seconds_bucket"),
                unit="s",
            ),
            stat("Healthy replicas", "sum(ray_serve_deployment_replica_healthy)"),
            timeseries(
                "Requests by status",
                (f"sum by (status) (rate({serve}_requests_total{rate}))", "{{status}}"),
                unit="reqps",
            ),
            timeseries(
                "Errors by code",
                (f"sum by (code) (increase({serve}_errors_total[5m]))", "{{code}}"),
                description="Answers with an OpenAI error, by its code, per 5 minutes.",
            ),
            timeseries(
                "Time to first token",
                *(
                    (
                        quantile(q, f"{serve}_time_to_first_token_seconds_bucket"),
                        f"p{int(q * 100)}",
                    )
                    for q in (0.5, 0.95)
                ),
                unit="s",
            ),
            timeseries(
                "Inter-token latency p95",
                (
                    quantile(
                        0.95, f"{serve}_inter_token_latency_seconds_bucket", by="model_version"
                    ),
                    "version {{model_version}}",
                ),
                unit="s",
            ),
            timeseries(
                "Generated tokens/s",
                (
                    f"sum by (model_version) (rate({serve}_generated_tokens_total{rate}))",
                    "version {{model_version}}",
                ),
                unit="tokens/s",
            ),
            timeseries(
                "Queue and batch",
                (f"sum by (model_version) ({serve}_queue_depth)", "queued {{model_version}}"),
                (f"sum by (model_version) ({serve}_batch_size)", "batch {{model_version}}"),
                description="The OrchardServingQueueDeep alert fires above 8 queued for 5 minutes.",
            ),
            timeseries(
                "Finished sequences by reason",
                (f"sum by (reason) (increase({serve}_finished_sequences_total[5m]))", "{{reason}}"),
            ),
        ],
    )


def platform() -> dict[str, Any]:
    # Every API replica reports the same database totals: `max`, never `sum`.
    p = "orchard_platform"
    return dashboard(
        "orchard-platform",
        "Orchard · Platform and business",
        "Users, tokens, credits and feedback (read from the platform database at scrape "
        "time) and the platform API's requests.",
        [
            stat("Active users (1h)", f'max({p}_active_users{{window="1h"}})'),
            stat("Active users (24h)", f'max({p}_active_users{{window="24h"}})'),
            stat("Accounts", f"sum(max by (status) ({p}_users))"),
            stat("Credits held", f"max({p}_credit_balance)"),
            timeseries(
                "Tokens per hour",
                (
                    f"sum by (kind) (max by (source, kind) (increase({p}_tokens_total[1h])))",
                    "{{kind}}",
                ),
            ),
            timeseries(
                "Model requests per hour by outcome",
                (
                    f"sum by (status) "
                    f"(max by (source, status) (increase({p}_model_requests_total[1h])))",
                    "{{status}}",
                ),
            ),
            timeseries(
                "Credits moved per hour",
                (f"max by (kind) (increase({p}_credits_total[1h]))", "{{kind}}"),
                description="A turn reserves its dearest answer (debit) and refunds the rest.",
            ),
            timeseries(
                "Feedback",
                (f"max by (rating) ({p}_feedback)", "{{rating}}"),
                description="Answers rated up and down (all time).",
            ),
            timeseries(
                "Ledger mismatches",
                (f"max({p}_credit_ledger_mismatches)", "accounts"),
                description="Balances that disagree with the ledger: always 0 (an alert pages).",
            ),
            timeseries(
                "API requests by status",
                ("sum by (status) (rate(orchard_api_requests_total[1m]))", "{{status}}"),
                unit="reqps",
            ),
            timeseries(
                "API latency p95 by route",
                (
                    quantile(0.95, "orchard_api_request_seconds_bucket", by="route"),
                    "{{route}}",
                ),
                unit="s",
            ),
            timeseries(
                "API requests in flight", ("sum(orchard_api_requests_in_flight)", "in flight")
            ),
        ],
    )


def pipeline() -> dict[str, Any]:
    return dashboard(
        "orchard-pipeline",
        "Orchard · Data pipeline",
        "Airflow's DAG runs and tasks (its OpenTelemetry metrics) and the Ray jobs they run.",
        [
            stat(
                "DAG runs failed (24h)",
                f"sum({grown('airflow_dagrun_duration_failed_count', '24h')})",
            ),
            stat(
                "DAG runs succeeded (24h)",
                f"sum({grown('airflow_dagrun_duration_success_count', '24h')})",
            ),
            stat(
                "Scheduler heartbeats/min", "sum(rate(airflow_scheduler_heartbeat_total[5m])) * 60"
            ),
            stat("Ray tasks running", 'sum(ray_tasks{State="RUNNING"}) or vector(0)'),
            timeseries(
                "DAG run duration by outcome (mean over 1 h)",
                *(
                    (
                        f"({grown(f'airflow_dagrun_duration_{outcome}_sum', '1h')})"
                        f" / ({grown(f'airflow_dagrun_duration_{outcome}_count', '1h')})",
                        f"{{{{dag_id}}}} {outcome}",
                    )
                    for outcome in ("success", "failed")
                ),
                unit="ms",
            ),
            timeseries(
                "Task instances finished by state",
                (grown("airflow_ti_finish_total", "1h", by="state"), "{{state}}"),
            ),
            timeseries(
                "DAG runs failed in the last 6 hours",
                (grown("airflow_dagrun_duration_failed_count", "6h"), "{{dag_id}}"),
                description="The OrchardDagFailingRepeatedly alert fires at 2.",
            ),
            timeseries(
                "Ray tasks by state",
                ("sum by (State) (ray_tasks)", "{{State}}"),
            ),
            timeseries(
                "Executor slots",
                ("max(airflow_executor_open_slots)", "open"),
                ("max(airflow_executor_running_tasks)", "running"),
            ),
        ],
    )


def cluster() -> dict[str, Any]:
    return dashboard(
        "orchard-cluster",
        "Orchard · Cluster",
        "Ray nodes (CPU, memory, disk, GPUs), the object store, and every scrape target.",
        [
            stat("Ray nodes", "sum(ray_cluster_active_nodes)"),
            stat("Targets down", "count(up == 0) or vector(0)"),
            stat("CPU (avg)", "avg(ray_node_cpu_utilization)", unit="percent"),
            stat(
                "Memory used",
                "sum(ray_node_mem_used) / sum(ray_node_mem_total)",
                unit="percentunit",
            ),
            timeseries(
                "CPU by node",
                ("avg by (instance) (ray_node_cpu_utilization)", "{{instance}}"),
                unit="percent",
            ),
            timeseries(
                "Memory by node",
                ("sum by (instance) (ray_node_mem_used)", "{{instance}} used"),
                ("sum by (instance) (ray_node_mem_total)", "{{instance}} total"),
                unit="bytes",
            ),
            timeseries(
                "Disk used by node",
                ("max by (instance) (ray_node_disk_usage)", "{{instance}}"),
                unit="bytes",
            ),
            timeseries(
                "Object store memory",
                ("sum by (Location) (ray_object_store_memory)", "{{Location}}"),
                unit="bytes",
            ),
            timeseries("Actors by state", ("sum by (State) (ray_actors)", "{{State}}")),
            timeseries(
                "Scrape duration by job",
                ("max by (job) (scrape_duration_seconds)", "{{job}}"),
                unit="s",
            ),
            timeseries(
                "GPU utilisation",
                (
                    "avg by (instance, GpuIndex) (ray_node_gpus_utilization)",
                    "{{instance}} GPU {{GpuIndex}}",
                ),
                unit="percent",
                description=f"{GPU_ONLY}.",
            ),
            timeseries(
                "GPU memory used",
                ("sum by (instance) (ray_node_gram_used)", "{{instance}}"),
                unit="decmbytes",
                description=f"{GPU_ONLY}.",
            ),
        ],
    )


DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "training": training,
    "pipeline": pipeline,
    "serving": serving,
    "platform": platform,
    "cluster": cluster,
}


def render(dashboard_json: dict[str, Any]) -> str:
    return json.dumps(dashboard_json, indent=2, ensure_ascii=False) + "\n"


def write(directory: Path = DASHBOARDS_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in DASHBOARDS.items():
        path = directory / f"{name}.json"
        path.write_text(render(build()))
        written.append(path)
    return written


def load(directory: Path = DASHBOARDS_DIR) -> dict[str, dict[str, Any]]:
    """The committed dashboards, by file stem."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))}


def queries(dashboard_json: dict[str, Any]) -> Iterator[tuple[dict, str]]:
    """(panel, PromQL) for every query of every panel."""
    for panel in dashboard_json["panels"]:
        for target in panel.get("targets", []):
            yield panel, target["expr"]
