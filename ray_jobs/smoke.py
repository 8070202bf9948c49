"""The smoke step: prove the Ray cluster computes and MLflow records, end to end.

Runs as a Ray job (`python -m ray_jobs.smoke --message ...`), submitted by the
`orchard_smoke` DAG. It fans a small computation out over Ray tasks, checks the answer,
and logs one MLflow run carrying the message and the Airflow run that asked for it.
"""

from __future__ import annotations

import argparse
import sys
import time

from pydantic import BaseModel, Field

from orchard.errors import OrchardError
from orchard.settings import Settings, load_settings

EXPERIMENT = "orchard-smoke"


class SmokeConfig(BaseModel):
    message: str = Field(min_length=1, max_length=200)
    fail: bool = False
    tasks: int = Field(8, ge=1, le=64)
    airflow_run_id: str | None = None


def run(config: SmokeConfig, settings: Settings) -> dict:
    import mlflow
    import ray

    if config.fail:
        raise OrchardError("smoke job asked to fail (Param fail=true): nothing was logged")
    started = time.monotonic()
    ray.init(log_to_driver=False)

    @ray.remote
    def square(x: int) -> int:
        return x * x

    total = sum(ray.get([square.remote(i) for i in range(config.tasks)]))
    expected = sum(i * i for i in range(config.tasks))
    if total != expected:
        raise OrchardError(f"Ray returned {total}, expected {expected}: the cluster is broken")
    nodes = len([node for node in ray.nodes() if node["Alive"]])

    mlflow.set_tracking_uri(settings.mlflow_uri)
    mlflow.set_experiment(EXPERIMENT)
    tags = {"orchard.step": "smoke"}
    if config.airflow_run_id:
        tags["airflow.run_id"] = config.airflow_run_id
    with mlflow.start_run(run_name="smoke", tags=tags) as mlrun:
        mlflow.log_params({"message": config.message, "tasks": config.tasks})
        mlflow.log_metrics(
            {"sum_of_squares": total, "ray_nodes": nodes, "seconds": time.monotonic() - started}
        )
    print(f"orchard-smoke: {config.message!r} -> sum of squares {total} on {nodes} Ray node(s)")
    print(f"orchard-smoke: MLflow run {mlrun.info.run_id} in experiment {EXPERIMENT}")
    return {"mlflow_run_id": mlrun.info.run_id, "sum_of_squares": total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--message", required=True)
    parser.add_argument("--fail", action="store_true")
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--airflow-run-id")
    args = parser.parse_args(argv)
    try:
        config = SmokeConfig(
            message=args.message,
            fail=args.fail,
            tasks=args.tasks,
            airflow_run_id=args.airflow_run_id,
        )
        run(config, load_settings())
    except OrchardError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
