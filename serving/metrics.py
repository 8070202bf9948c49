"""Prometheus metrics of serving, per model version, through Ray's metrics pipeline.

`ray.serve.metrics` adds the application, deployment and replica as labels and exports
from every node's metrics agent (`--metrics-export-port`; the local head's is
`ORCHARD_RAY_INTERNAL_PORT_BASE + 2`), the endpoint Prometheus already scrapes for Ray and
Serve's own metrics, so replicas on any node of a cluster are covered. Ray prefixes each
name with `ray_` (and counters end in `_total`), e.g. `ray_orchard_serve_requests_total`.
"""

from __future__ import annotations

import time
from functools import cache

from ray.serve.metrics import Counter, Gauge, Histogram

LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256]


@cache
def _metrics() -> dict[str, Counter | Gauge | Histogram]:
    version = ("model_version",)
    return {
        "requests": Counter(
            "orchard_serve_requests",
            description="OpenAI API requests answered, by route, model version and status.",
            tag_keys=("route", "model_version", "status"),
        ),
        "errors": Counter(
            "orchard_serve_errors",
            description="Requests answered with an error, by route and OpenAI error code.",
            tag_keys=("route", "code"),
        ),
        "ttft": Histogram(
            "orchard_serve_time_to_first_token_seconds",
            description="From a request entering the engine's queue to its first token.",
            boundaries=LATENCY_BUCKETS,
            tag_keys=version,
        ),
        "itl": Histogram(
            "orchard_serve_inter_token_latency_seconds",
            description="Time between consecutive tokens of one sequence.",
            boundaries=LATENCY_BUCKETS,
            tag_keys=version,
        ),
        "tokens": Counter(
            "orchard_serve_generated_tokens",
            description="Tokens generated (rate() of it is tokens/s).",
            tag_keys=version,
        ),
        "tokens_per_second": Gauge(
            "orchard_serve_tokens_per_second",
            description="Tokens generated per second by this replica over the last seconds.",
            tag_keys=version,
        ),
        "queue": Gauge(
            "orchard_serve_queue_depth",
            description="Requests waiting for a batch slot.",
            tag_keys=version,
        ),
        "batch": Gauge(
            "orchard_serve_batch_size",
            description="Sequences in the running batch.",
            tag_keys=version,
        ),
        "batch_hist": Histogram(
            "orchard_serve_batch_size_per_step",
            description="Batch size of each decoding step.",
            boundaries=BATCH_BUCKETS,
            tag_keys=version,
        ),
        "finished": Counter(
            "orchard_serve_finished_sequences",
            description="Sequences finished, by reason (stop, length, cancelled).",
            tag_keys=("model_version", "reason"),
        ),
    }


def count_request(route: str, version: str | None, status: int, code: str | None) -> None:
    metrics = _metrics()
    metrics["requests"].inc(
        tags={"route": route, "model_version": version or "none", "status": str(status)}
    )
    if code:
        metrics["errors"].inc(tags={"route": route, "code": code})


class VersionMetrics:
    """The engine's Observer for one model version; gauges update at most twice a second."""

    def __init__(self, version: str) -> None:
        self._m = _metrics()
        self._tags = {"model_version": version}
        self._window_start = time.monotonic()
        self._window_tokens = 0
        self._last_gauges = 0.0
        self._queue = self._batch = 0
        self._busy = False

    def queue_depth(self, waiting: int) -> None:
        self._queue = waiting
        self._maybe_set_gauges()

    def batch_size(self, running: int) -> None:
        self._batch = running
        if running:
            self._m["batch_hist"].observe(running, tags=self._tags)
        self._maybe_set_gauges()

    def first_token(self, seconds: float) -> None:
        self._m["ttft"].observe(seconds, tags=self._tags)

    def inter_token(self, seconds: float) -> None:
        self._m["itl"].observe(seconds, tags=self._tags)

    def tokens(self, count: int) -> None:
        self._m["tokens"].inc(count, tags=self._tags)
        self._window_tokens += count

    def finished(self, reason: str) -> None:
        self._m["finished"].inc(tags={**self._tags, "reason": reason})

    def _maybe_set_gauges(self) -> None:
        now = time.monotonic()
        busy = bool(self._batch or self._queue)
        if busy and not self._busy:  # a busy period starts: rate over it alone
            self._window_start = now
        self._busy = busy
        if busy and now - self._last_gauges < 0.5:
            return
        self._last_gauges = now
        self._m["queue"].set(self._queue, tags=self._tags)
        self._m["batch"].set(self._batch, tags=self._tags)
        elapsed = now - self._window_start
        if not busy:
            self._m["tokens_per_second"].set(0.0, tags=self._tags)
            self._window_start, self._window_tokens = now, 0
        elif elapsed >= 2.0:
            self._m["tokens_per_second"].set(self._window_tokens / elapsed, tags=self._tags)
            self._window_start, self._window_tokens = now, 0
