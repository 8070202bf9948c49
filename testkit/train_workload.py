"""A small training workload for the observability tests: a Ray job whose task trains a
tiny torch model and reports through `orchard.train_metrics.TrainMetrics`, as the
pretrain step's Ray Train worker does (same metrics, same export path), in seconds
instead of the minute a real pretrain needs to start.

    python -m testkit.train_workload --run NAME --seconds 12
"""

from __future__ import annotations

import argparse
import time

import ray


@ray.remote(num_cpus=0)
def train(run: str, seconds: float) -> int:
    import torch

    from orchard.train_metrics import TrainMetrics

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    inputs = torch.randn(64, 16)
    targets = inputs.sum(dim=1, keepdim=True)
    metrics = TrainMetrics(run, "workload")
    started, steps = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        window = time.perf_counter()
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        steps += 1
        metrics.step()
        time.sleep(0.2)  # a step every ~0.2 s: several scrapes see the run move
        metrics.point(
            {
                "loss": float(loss),
                "lr": 1e-2,
                "grad_norm": float(grad_norm),
                "tokens_per_s": inputs.shape[0] / (time.perf_counter() - window),
                "val_loss": float(loss),
            }
        )
    time.sleep(6)  # the last values reach the metrics agent before the worker exits
    return steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True)
    parser.add_argument("--seconds", type=float, default=12)
    args = parser.parse_args()
    ray.init()
    steps = ray.get(train.remote(args.run, args.seconds))
    print(f"{args.run}: {steps} steps", flush=True)


if __name__ == "__main__":
    main()
