"""The stack's OTLP receiver: the real OpenTelemetry SDK exports to it, Prometheus' parser
reads what it serves."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from prometheus_client.parser import text_string_to_metric_families

from orchard.stack.otlp import MetricStore, make_handler

DELTA = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(MetricStore()))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def process(url: str, exponential: bool = False) -> MeterProvider:
    """One exporting process, as each Airflow process is."""
    exporter = OTLPMetricExporter(
        endpoint=f"{url}/v1/metrics", preferred_temporality=DELTA, timeout=5
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    views = [View(instrument_type=Histogram, aggregation=ExponentialBucketHistogramAggregation())]
    return MeterProvider(metric_readers=[reader], views=views if exponential else ())


def samples(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_deltas_of_several_processes_add_up_and_attributes_become_labels(receiver):
    scheduler, runner = process(receiver), process(receiver, exponential=True)
    for provider, finished in ((scheduler, 2), (runner, 3)):
        counter = provider.get_meter("airflow").create_counter("airflow.ti.finish")
        counter.add(finished, {"dag_id": "orchard_smoke", "state": "failed"})
        provider.force_flush()
    counter.add(1, {"dag_id": "orchard_smoke", "state": "failed"})  # the runner again
    runner.force_flush()
    gauge = scheduler.get_meter("airflow").create_gauge("airflow.executor.open_slots")
    gauge.set(4)
    scheduler.get_meter("airflow").create_histogram("airflow.dag.duration").record(30.0)
    scheduler.force_flush()
    runner.get_meter("airflow").create_histogram("airflow.task.duration", unit="ms").record(250)
    runner.force_flush()

    got = samples(receiver)
    key = (("dag_id", "orchard_smoke"), ("state", "failed"))
    assert got[("airflow_ti_finish_total", key)] == 6
    assert got[("airflow_executor_open_slots", ())] == 4
    assert got[("airflow_dag_duration_count", ())] == 1
    assert got[("airflow_dag_duration_bucket", (("le", "+Inf"),))] == 1
    assert got[("airflow_task_duration_sum", ())] == 250  # exponential: sum and count
    assert got[("airflow_task_duration_count", ())] == 1
    for provider in (scheduler, runner):
        provider.shutdown()


def test_a_body_that_is_not_otlp_is_a_400_and_health_answers(receiver):
    bad = httpx.post(f"{receiver}/v1/metrics", content=b"\xff\xfe not protobuf")
    assert bad.status_code == 400 and "not an OTLP metrics request" in bad.text
    assert httpx.get(f"{receiver}/healthz").text == "ok\n"
    assert httpx.get(f"{receiver}/nope").status_code == 404
