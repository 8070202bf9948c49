"""Training metrics for Prometheus, exported through Ray's metrics pipeline.

A training worker is a Ray actor: `ray.util.metrics` hands its values to the node's
metrics agent (`--metrics-export-port`), the endpoint Prometheus already scrapes for Ray
and serving, so the workers of any node of a cluster are covered and nothing is pushed.
Ray prefixes each name with `ray_` and counters end in `_total`:

- `ray_orchard_train_steps_total{run,step_name}`: optimizer steps done;
- `ray_orchard_train_last_step_timestamp_seconds`: when the last step finished (the
  "training stalled" alert: no step for N minutes while the run is alive);
- `ray_orchard_train_loss`, `ray_orchard_train_tokens_per_second`, `ray_orchard_train_lr`,
  `ray_orchard_train_grad_norm`, `ray_orchard_train_val_loss`, and `ray_orchard_train_mfu`
  where the peak FLOPs are known (a GPU).

A worker that exits takes its series with it after Ray's export interval, so a finished
run stops looking like a stalled one. Rank 0 alone reports (data-parallel ranks agree).
"""

from __future__ import annotations

import math
import time

GAUGES = {
    "loss": "Training loss at the last logged step.",
    "tokens_per_s": "Training throughput over the last logging window, tokens/s.",
    "lr": "Learning rate at the last logged step.",
    "grad_norm": "Gradient norm at the last logged step.",
    "val_loss": "Validation loss at the last evaluation.",
    "mfu": "Model FLOPs utilisation over the last logging window (GPU).",
}
# Prometheus names of the gauges whose point key differs.
NAMES = {"tokens_per_s": "tokens_per_second"}


class TrainMetrics:
    """One run's metrics; a no-op outside a Ray worker (unit tests, local mode)."""

    def __init__(self, run: str, step_name: str) -> None:
        import ray

        self._enabled = ray.is_initialized()
        if not self._enabled:
            return
        from ray.util.metrics import Counter, Gauge

        keys = ("run", "step_name")
        self._tags = {"run": run, "step_name": step_name}
        self._steps = Counter(
            "orchard_train_steps", description="Optimizer steps done.", tag_keys=keys
        )
        self._last_step = Gauge(
            "orchard_train_last_step_timestamp_seconds",
            description="Unix time the last optimizer step finished.",
            tag_keys=keys,
        )
        self._gauges = {
            key: Gauge(f"orchard_train_{NAMES.get(key, key)}", description=text, tag_keys=keys)
            for key, text in GAUGES.items()
        }

    def step(self, count: int = 1) -> None:
        if not self._enabled:
            return
        self._steps.inc(count, tags=self._tags)
        self._last_step.set(time.time(), tags=self._tags)

    def point(self, point: dict[str, float]) -> None:
        """The logged values of a step (loss NaN included: the alert wants to see it)."""
        if not self._enabled:
            return
        for key, gauge in self._gauges.items():
            if key in point and not math.isinf(point[key]):
                gauge.set(float(point[key]), tags=self._tags)
