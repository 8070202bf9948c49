"""An OTLP/HTTP metrics receiver that Prometheus scrapes: Airflow's metrics in the local stack.

Airflow 3 exports its metrics over OpenTelemetry (`[metrics] otel_on`) or StatsD. Debian
ships neither an OpenTelemetry Collector nor the StatsD exporter, and Prometheus 2.42
has no OTLP receiver, so the local stack runs this one: `POST /v1/metrics` takes OTLP's
protobuf (`ExportMetricsServiceRequest`, gzip or not), `GET /metrics` serves what it
accumulated in Prometheus' text format, `GET /healthz` answers "ok". In production,
point Airflow at an OpenTelemetry Collector with a Prometheus exporter instead.

Airflow runs several processes (scheduler, API server, DAG processor, triggerer, a task
runner per task) that all export the same metric names. So the stack asks them for
*delta* temporality (`OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta`) and this
receiver adds the deltas up: counters and histograms are the sums over every process.
Gauges (and up-down counters, cumulative by the OpenTelemetry spec) keep the last value
received.

Names: OpenTelemetry's `airflow.dagrun.duration.failed` becomes
`airflow_dagrun_duration_failed`; a monotonic sum gets `_total`; an explicit-bucket
histogram gets `_bucket`/`_sum`/`_count`, an exponential one (Airflow's timers) `_sum` and
`_count` (a summary without quantiles). Attributes become labels.

    python -m orchard.stack.otlp --host 127.0.0.1 --port 9191
"""

from __future__ import annotations

import argparse
import gzip
import math
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric

DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
MAX_BODY = 16 * 1024 * 1024
Labels = tuple[tuple[str, str], ...]


def prometheus_name(name: str) -> str:
    cleaned = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
    return f"_{cleaned}" if cleaned[:1].isdigit() else cleaned


def _value(any_value) -> str:
    kind = any_value.WhichOneof("value")
    return str(getattr(any_value, kind)) if kind else ""


def _labels(attributes) -> Labels:
    return tuple(sorted((prometheus_name(a.key), _value(a.value)) for a in attributes))


def _number(point) -> float:
    return point.as_double if point.WhichOneof("value") == "as_double" else float(point.as_int)


@dataclass
class Histogram:
    bounds: tuple[float, ...] = ()
    buckets: list[float] = field(default_factory=list)  # per bucket, not cumulative
    total: float = 0.0
    count: float = 0.0


@dataclass
class Family:
    kind: str  # counter, gauge, histogram, summary
    help: str
    series: dict[Labels, float | Histogram] = field(default_factory=dict)


class MetricStore:
    """What the receiver has accumulated, by Prometheus name; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, Family] = {}

    def add(self, request: ExportMetricsServiceRequest) -> None:
        with self._lock:
            for resource in request.resource_metrics:
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        self._add_metric(metric)

    def _family(self, name: str, kind: str, help_text: str) -> Family:
        family = self._families.get(name)
        if family is None or family.kind != kind:  # a name changing kind: the new one wins
            family = self._families[name] = Family(kind, help_text)
        return family

    def _add_metric(self, metric: Metric) -> None:
        base = prometheus_name(metric.name)
        data = metric.WhichOneof("data")
        if data == "sum":
            monotonic = metric.sum.is_monotonic
            name = f"{base}_total" if monotonic else base
            family = self._family(name, "counter" if monotonic else "gauge", metric.description)
            for point in metric.sum.data_points:
                key = _labels(point.attributes)
                value = _number(point)
                if metric.sum.aggregation_temporality == DELTA:
                    value += family.series.get(key, 0.0)
                family.series[key] = value
        elif data == "gauge":
            family = self._family(base, "gauge", metric.description)
            for point in metric.gauge.data_points:
                family.series[_labels(point.attributes)] = _number(point)
        elif data == "histogram":
            family = self._family(base, "histogram", metric.description)
            delta = metric.histogram.aggregation_temporality == DELTA
            for point in metric.histogram.data_points:
                key = _labels(point.attributes)
                old = family.series.get(key)
                bounds = tuple(point.explicit_bounds)
                if not delta or not isinstance(old, Histogram) or old.bounds != bounds:
                    old = family.series[key] = Histogram(bounds, [0.0] * (len(bounds) + 1))
                for index, count in enumerate(point.bucket_counts):
                    old.buckets[index] += count
                old.total += point.sum
                old.count += point.count
        elif data == "exponential_histogram":
            family = self._family(base, "summary", metric.description)
            delta = metric.exponential_histogram.aggregation_temporality == DELTA
            for point in metric.exponential_histogram.data_points:
                key = _labels(point.attributes)
                old = family.series.get(key)
                if not delta or not isinstance(old, Histogram):
                    old = family.series[key] = Histogram()
                old.total += point.sum
                old.count += point.count

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, family in sorted(self._families.items()):
                help_text = family.help.replace("\\", r"\\").replace("\n", r"\n")
                # A counter's HELP/TYPE name has no `_total` in the text format.
                typed = name.removesuffix("_total") if family.kind == "counter" else name
                lines.append(f"# HELP {typed} {help_text or name}")
                lines.append(f"# TYPE {typed} {family.kind}")
                for labels, value in sorted(family.series.items()):
                    if isinstance(value, Histogram):
                        lines.extend(_histogram_lines(name, labels, value, family.kind))
                    else:
                        lines.append(f"{name}{_render_labels(labels)} {_float(value)}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _render_labels(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    pairs = [*labels, extra] if extra else list(labels)
    if not pairs:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in pairs) + "}"


def _float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _histogram_lines(name: str, labels: Labels, value: Histogram, kind: str) -> list[str]:
    lines = []
    if kind == "histogram":
        running = 0.0
        for bound, count in zip((*value.bounds, math.inf), value.buckets, strict=True):
            running += count
            le = "+Inf" if math.isinf(bound) else _float(bound)
            lines.append(f"{name}_bucket{_render_labels(labels, ('le', le))} {_float(running)}")
    lines.append(f"{name}_sum{_render_labels(labels)} {_float(value.total)}")
    lines.append(f"{name}_count{_render_labels(labels)} {_float(value.count)}")
    return lines


def make_handler(store: MetricStore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args) -> None:  # quiet: one line per export
            pass

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/metrics":
                body = store.render().encode()
                self._reply(200, body, "text/plain; version=0.0.4; charset=utf-8")
            elif self.path == "/healthz":
                self._reply(200, b"ok\n", "text/plain")
            else:
                self._reply(404, b"not found\n", "text/plain")

        def do_POST(self) -> None:
            if self.path != "/v1/metrics":
                self._reply(404, b"not found\n", "text/plain")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._reply(413, b"too large\n", "text/plain")
                return
            body = self.rfile.read(length)
            try:
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
            except (OSError, EOFError, DecodeError) as error:
                self._reply(400, f"not an OTLP metrics request: {error}\n".encode(), "text/plain")
                return
            store.add(request)
            response = ExportMetricsServiceResponse().SerializeToString()
            self._reply(200, response, "application/x-protobuf")

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(MetricStore()))
    print(f"OTLP metrics receiver on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
