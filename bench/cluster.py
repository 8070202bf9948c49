"""Pretraining across test hosts: 2 workers on 2 hosts ÷ 1 worker on 1 host, and the
time from a worker host's death to training resumed.

    sudo .venv/bin/python bench/cluster.py [--steps 20] [--batch 8] [--seq 128] [--no-failure]

Starts the three-host test cluster (orchard.cluster; needs root), moto's S3 server on the
root namespace's bridge address, publishes a tiny tokenized corpus there, then runs the
pretrain step twice as Ray jobs with the same global batch and the data root on S3:
`workers=2` on hosts b and c (STRICT_SPREAD, gloo over the veths), and `workers=1` on
host b. Each test host has one CPU, so the ideal ratio is 2.0 minus the all-reduce cost;
on a busy machine with fewer free cores than hosts it is lower. Prints the median
tokens/s of each (the step's `tokens_per_s` metric, measured between log points, so Ray
and torch start-up are not in it) and the ratio.

Then a third run with 2 workers (30 steps of 8 x 256 tokens, a checkpoint every 10)
loses host c in the middle (testkit/cluster_failure.py: every process SIGKILLed once a
checkpoint is safe, then the host boots again at once) and prints the time from the
host's death to training resumed: to the first step the resumed run logged to MLflow
(exact timestamps), and to the "resumed from the checkpoint" line of the job's log
(polled each second). Never fails on time. Removes the cluster at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import os
import sys

# Orchard's packages, when run as `python bench/<name>.py` from anywhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import shlex  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from orchard import cluster  # noqa: E402
from orchard.settings import Settings  # noqa: E402
from orchard.steps import Manifest  # noqa: E402
from testkit.cluster_failure import pretrain_through_host_death  # noqa: E402
from testkit.cluster_pretrain import bridge_s3, cluster_pretrain  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8, help="global batch (sequences)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--no-failure", action="store_true", help="skip the host-death run")
    args = parser.parse_args()
    base = {
        "preset": args.preset,
        "seq_length": args.seq,
        "global_batch_size": args.batch,
        "steps": args.steps,
        "log_interval": max(1, args.steps // 4),
        "eval_interval": args.steps,
        "eval_batches": 1,
        "checkpoint_interval": args.steps,
        "threads_per_worker": 1,  # each test host has one CPU
    }
    runs = {
        "2 workers on hosts b+c": base
        | {
            "workers": 2,
            "placement": "STRICT_SPREAD",
            "worker_labels": {"orchard-host": "in(b,c)"},
        },
        "1 worker on host b": base | {"workers": 1, "worker_labels": {"orchard-host": "b"}},
    }
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"load average {loadavg()} at the start", flush=True)
    try:
        return _bench(args, runs)
    finally:
        print(f"load average {loadavg()} at the end", flush=True)


def loadavg() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _bench(args: argparse.Namespace, runs: dict[str, dict]) -> int:
    with tempfile.TemporaryDirectory(prefix="orchard-bench-cluster-") as tmp:
        hosts_settings = Settings(home=Path(tmp) / "cluster-home")
        print("starting the test cluster ...", flush=True)
        layout = cluster.up(hosts_settings, owner_bound=True)
        try:
            with (
                bridge_s3(layout) as endpoint,
                cluster_pretrain(hosts_settings, layout, endpoint, Path(tmp), 200) as setup,
            ):
                speeds = {}
                for number, (label, config) in enumerate(runs.items()):
                    location, log = setup.submit(config, f"bench{number}")
                    if location is None:
                        print(log[-4000:], file=sys.stderr)
                        print(f"error: the run '{label}' failed (its log is above)")
                        return 1
                    done = Manifest.read(location, setup.data.store)
                    speeds[label] = done.metrics["tokens_per_s"]
                    hosts = ", ".join(w["hostname"] for w in done.workers)
                    print(f"{label:24s} {speeds[label]:8.0f} tokens/s  (workers on {hosts})")
                two, one = speeds.values()
                print(
                    f"ratio (2 hosts / 1 host, global batch {args.batch} x {args.seq} tokens): "
                    f"{two / one:.2f}",
                    flush=True,
                )
                if not args.no_failure:
                    config = runs["2 workers on hosts b+c"] | {
                        "seq_length": 256,
                        "steps": 30,
                        "checkpoint_interval": 10,
                        "eval_interval": 30,
                        "log_interval": 1,
                    }
                    return _failover(setup, config)
        finally:
            cluster.down(hosts_settings)
    return 0


def _failover(setup, config) -> int:
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # the jobs' tracking store, read here

    print("pretraining while host c dies ...", flush=True)
    run = pretrain_through_host_death(setup, config)
    resumed = run.resumed()
    if run.location is None or run.killed_at is None or resumed is None:
        print(run.log[-4000:], file=sys.stderr)
        print("error: the host-death run did not kill, resume and finish (its log is above)")
        return 1
    done = Manifest.read(run.location, setup.data.store)
    history = MlflowClient(setup.settings.mlflow_uri).get_metric_history(done.mlflow_run_id, "loss")
    step, said_at = resumed
    last_before = max(m.step for m in history if m.timestamp / 1000 < run.killed_at)
    first_step = step + 1  # the first step the restarted worker group trained
    first_at = min(
        m.timestamp / 1000
        for m in history
        if m.step == first_step and m.timestamp / 1000 >= run.killed_at
    )
    print(
        f"host c killed ({run.killed_processes} processes) after step {last_before}, booted "
        f"again {run.powered_on_at - run.killed_at:.1f} s later; resumed from the checkpoint of "
        f"step {step} ({last_before - step} steps lost)"
    )
    said, first = said_at - run.killed_at, first_at - run.killed_at
    print(f"host death -> 'resumed from the checkpoint' in the job log: {said:.1f} s")
    print(f"host death -> first step after the restart (step {first_step}): {first:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
