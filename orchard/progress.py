"""What a running DAG is doing, in one line a person can follow.

`orchard run` follows `orchard_build` for half an hour; without this it could only say
"running". The line names each running task (of the followed run, and of the runs its
assets started: `orchard_data` ... `orchard_posttrain`), how long it has been running,
and, for a training step, its step count and loss:

    orchard_build 14m02s · orchard_pretrain.pretrain 3m12s · step 120/400 · loss 5.3120
    orchard_pretrain 2m11s · pretrain 2m03s · step 100/400 · loss 1.7006

Sources, all already there:
- the task instances of Airflow's REST API v2: the followed run's, and the running ones of
  every followed DAG run queued since it (`/dags/~/dagRuns/~/taskInstances?state=running`);
- the training steps' own progress: each prints `step N/M loss X` (`step_line`) every few
  steps, pretrain from its loop and the post-training steps from a trainer callback
  (`TrainingProgressCallback`). The line goes to the Ray job's log, which the DAG task
  copies into its Airflow task log (`[ray job] ...`), and this module reads that task log
  incrementally (Airflow's continuation token), so the terminal shows what the Airflow UI
  shows.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchard.airflow_client import AirflowClient

# "step 120/400 loss 5.3120", anywhere in a line (Ray prefixes worker output, Airflow
# and run_ray_job prefix the job's lines).
_STEP_LINE = re.compile(r"\bstep (\d+)/(\d+) loss ([-+0-9.eE]+|nan|inf)\b")


def step_line(step: int, total: int, loss: float) -> str:
    """The progress line a training loop prints, and `TrainingProgress.last_in` reads."""
    return f"step {step}/{total} loss {loss:.4f}"


@dataclass(frozen=True)
class TrainingProgress:
    step: int
    total: int
    loss: float

    @classmethod
    def last_in(cls, text: str) -> TrainingProgress | None:
        """The last progress line in a log, if any."""
        matches = _STEP_LINE.findall(text)
        if not matches:
            return None
        step, total, loss = matches[-1]
        return cls(int(step), int(total), float(loss))

    def __str__(self) -> str:
        return f"step {self.step}/{self.total} · loss {self.loss:.4f}"


def elapsed(seconds: float) -> str:
    """45s, 3m12s, 1h02m03s."""
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class RunningTask:
    """A running task instance, from one entry of Airflow's `task_instances` list."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    started: datetime | None

    @classmethod
    def from_api(cls, ti: dict[str, Any]) -> RunningTask:
        return cls(
            dag_id=ti["dag_id"],
            run_id=ti["dag_run_id"],
            task_id=ti["task_id"],
            map_index=ti.get("map_index", -1),
            try_number=max(ti.get("try_number") or 1, 1),
            started=_when(ti.get("start_date")),
        )

    @property
    def key(self) -> tuple[str, str, str, int, int]:
        return (self.dag_id, self.run_id, self.task_id, self.map_index, self.try_number)

    @property
    def name(self) -> str:
        suffix = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.dag_id}.{self.task_id}{suffix}"


def running(task_instances: Iterable[dict[str, Any]]) -> list[RunningTask]:
    """The running ones, oldest first."""
    tasks = [RunningTask.from_api(ti) for ti in task_instances if ti.get("state") == "running"]
    return sorted(tasks, key=lambda t: (t.started or datetime.max.replace(tzinfo=UTC), t.name))


@dataclass(frozen=True)
class Snapshot:
    """What a followed run is doing at one moment."""

    dag_id: str
    state: str
    started: datetime | None
    tasks: tuple[tuple[RunningTask, TrainingProgress | None], ...] = ()

    def line(self, now: datetime) -> str:
        """`orchard_build 14m02s · orchard_pretrain.pretrain 3m12s · step 120/400 · loss
        5.3120`; the run's state instead of tasks while none runs."""
        head = self.dag_id + (
            f" {elapsed((now - self.started).total_seconds())}" if self.started else ""
        )
        if not self.tasks:
            return f"{head} · {self.state}"
        parts = [head]
        for task, progress in self.tasks:
            # The followed run's own tasks go by their task id; its stages' by dag.task.
            part = task.name.removeprefix(f"{self.dag_id}.")
            if task.started:
                part += f" {elapsed((now - task.started).total_seconds())}"
            if progress:
                part += f" · {progress}"
            parts.append(part)
        return " · ".join(parts)


class ProgressTracker:
    """Polls Airflow for what a run (and the runs its assets start) is doing.

    `followed`: the DAGs whose runs, queued after the followed run, count as part of it
    (for `orchard_build`: the pipeline chain). Their running tasks are shown instead of
    the followed run's own (which only wait for them). Each running task's log is read
    incrementally, at most every `log_every` seconds, for its training progress.
    """

    def __init__(
        self,
        client: AirflowClient,
        dag_id: str,
        run_id: str,
        followed: Sequence[str] = (),
        log_every: float = 5.0,
    ) -> None:
        self.client = client
        self.dag_id = dag_id
        self.run_id = run_id
        self.followed = set(followed) - {dag_id}
        self.log_every = log_every
        self._logs: dict[tuple, _LogCursor] = {}

    def snapshot(self, run: dict[str, Any]) -> Snapshot:
        """What the run is doing; `run` is its entry of Airflow's `dagRuns` API."""
        tasks = running(self.client.task_instances(self.dag_id, self.run_id))
        since = run.get("run_after") or run.get("queued_at")
        if self.followed and since:
            inner = [
                task
                for task in running(self.client.running_task_instances(run_after_gte=since))
                if task.dag_id in self.followed
            ]
            tasks = inner or tasks
        live = {task.key for task in tasks}
        for key in list(self._logs):
            if key not in live:
                del self._logs[key]
        shown = tuple((task, self._progress(task)) for task in tasks)
        started = _when(run.get("start_date")) or _when(run.get("queued_at"))
        return Snapshot(self.dag_id, run.get("state") or "queued", started, shown)

    def _progress(self, task: RunningTask) -> TrainingProgress | None:
        """The task's latest progress line; the last one known while its log cannot be
        read (not written yet, Airflow busy)."""
        import httpx

        from orchard.errors import OrchardError

        cursor = self._logs.setdefault(task.key, _LogCursor())
        if time.monotonic() - cursor.read_at >= self.log_every:
            cursor.read_at = time.monotonic()
            try:
                text, token = self.client.task_log_since(
                    task.dag_id,
                    task.run_id,
                    task.task_id,
                    task.try_number,
                    map_index=task.map_index,
                    token=cursor.token,
                )
            except (OrchardError, httpx.HTTPError):
                return cursor.progress
            cursor.token = token
            cursor.progress = TrainingProgress.last_in(text) or cursor.progress
        return cursor.progress


@dataclass
class _LogCursor:
    token: str | None = None
    read_at: float = float("-inf")
    progress: TrainingProgress | None = None


class ProgressDisplay:
    """Shows a tracker's snapshots: on a terminal one updating status line (rich), else
    plain lines, one when the running tasks change and otherwise at most one every
    `plain_every` seconds. Polls Airflow at most every `poll_every` seconds; in between it
    only moves the clocks. A failing poll never stops the run being followed: the last
    snapshot stays."""

    def __init__(
        self,
        console: Any,
        tracker: ProgressTracker,
        poll_every: float = 3.0,
        plain_every: float = 30.0,
    ) -> None:
        self.console = console
        self.tracker = tracker
        self.poll_every = poll_every
        self.plain_every = plain_every
        self.snapshot: Snapshot | None = None
        self._polled_at = float("-inf")
        self._printed_at = float("-inf")
        self._printed: tuple | None = None
        self._status: Any = None

    def __enter__(self) -> ProgressDisplay:
        if self.console.is_terminal:
            self._status = self.console.status("starting …")
            self._status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()

    def update(self, run: dict[str, Any]) -> None:
        """Called at every poll of the run (`AirflowClient.wait_for_run`'s `on_poll`)."""
        import httpx

        from orchard.errors import OrchardError

        now = time.monotonic()
        if now - self._polled_at >= self.poll_every or self.snapshot is None:
            self._polled_at = now
            try:
                self.snapshot = self.tracker.snapshot(run)
            except (OrchardError, httpx.HTTPError, KeyError, ValueError):
                if self.snapshot is None:
                    return
        line = self.snapshot.line(datetime.now(UTC))
        if self._status is not None:
            self._status.update(line)
            return
        tasks = tuple(task.key for task, _ in self.snapshot.tasks)
        if tasks != self._printed or now - self._printed_at >= self.plain_every:
            self.console.print(line, soft_wrap=True)
            self._printed, self._printed_at = tasks, now


def training_progress_callback() -> Any:
    """A `transformers.TrainerCallback` printing `step_line` at every logged loss (the
    trainer's own logs say neither the step nor the total)."""
    from transformers import TrainerCallback

    class TrainingProgressCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs and "loss" in logs:
                print(step_line(state.global_step, state.max_steps, logs["loss"]), flush=True)

    return TrainingProgressCallback()
