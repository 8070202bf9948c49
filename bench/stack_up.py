"""How long `orchard up` takes to all-healthy, cold vs warm, and what the idle stack holds.

Cold: a fresh ORCHARD_HOME (Airflow and MLflow create their databases). Warm: `down`,
then `up` again on the same home (the baseline the cold figure is compared with).
Runs the real CLI on free loopback ports; prints figures, never fails on time.

    .venv/bin/python bench/stack_up.py
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testkit.stack import orchard, stack_env  # noqa: E402


def timed_up(env: dict[str, str]) -> tuple[float, dict[str, str]]:
    started = time.monotonic()
    result = orchard(env, "up")
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"orchard up failed:\n{result.stdout}\n{result.stderr}")
    per_service = dict(re.findall(r"^\s+(.+?)\s+healthy \((\d+) s\)", result.stdout, re.M))
    return elapsed, per_service


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="orchard-bench-")) / "home"
    env = stack_env(home)
    try:
        cold, cold_services = timed_up(env)
        time.sleep(20)  # let start-up work (DAG parsing, first scheduler loops) settle
        status = orchard(env, "status").stdout
        memory = re.search(r"resident memory of the stack: (\d+) MiB", status)
        orchard(env, "down")
        warm, warm_services = timed_up(env)
    finally:
        orchard(env, "down")
    print(f"{'service':<16}{'cold s':>8}{'warm s':>8}")
    for name in cold_services:
        print(f"{name:<16}{cold_services[name]:>8}{warm_services.get(name, '-'):>8}")
    print(
        f"orchard up, all healthy: cold {cold:.1f} s, warm {warm:.1f} s "
        f"(cold/warm {cold / warm:.2f}x)"
    )
    if memory:
        print(f"idle stack resident memory (USS, all processes): {memory.group(1)} MiB")
    print("per-service memory:")
    print(status)


if __name__ == "__main__":
    main()
