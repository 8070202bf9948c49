"""The progress line of `orchard run`: which DAG and task run, for how long, and a
training step's step count and loss, from Airflow's task instances and task logs.

Airflow is a stand-in on loopback answering the four calls the tracker makes, with
entries shaped as Airflow 3.3's REST API v2 returns them (fields copied from a real
stack's answers); the client, tracker and display are the real ones."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlparse

import pytest
from rich.console import Console

from orchard.airflow_client import AirflowClient
from orchard.credentials import AirflowLogin
from orchard.progress import (
    ProgressDisplay,
    ProgressTracker,
    TrainingProgress,
    elapsed,
    step_line,
    training_progress_callback,
)
from testkit.http import JsonHandler, LoopbackServer

BUILD_RUN = "manual__2026-12-07T06:00:00.000000+00:00"
PRETRAIN_RUN = "asset_triggered__2026-12-07T06:10:48.500000+00:00"


def task_instance(dag_id: str, run_id: str, task_id: str, state: str | None, start: str | None):
    """One entry of `GET /api/v2/dags/{dag}/dagRuns/{run}/taskInstances`."""
    return {
        "id": "0193a1b2-0000-7000-8000-000000000000",
        "task_id": task_id,
        "dag_id": dag_id,
        "dag_run_id": run_id,
        "map_index": -1,
        "logical_date": None,
        "run_after": "2026-12-07T06:00:00.000000Z",
        "start_date": start,
        "end_date": None,
        "duration": None,
        "state": state,
        "try_number": 1 if state else 0,
        "max_tries": 2,
        "task_display_name": task_id,
        "dag_display_name": dag_id,
        "hostname": "vm" if state else "",
        "unixname": "root",
        "pool": "default_pool",
        "pool_slots": 1,
        "queue": "default",
        "priority_weight": 1,
        "operator": "_PythonDecoratedOperator",
        "operator_name": "@task",
        "queued_when": start,
        "scheduled_when": start,
        "pid": 4242 if state == "running" else None,
        "executor": None,
        "executor_config": "{}",
        "note": None,
        "rendered_map_index": None,
        "rendered_fields": {},
        "trigger": None,
        "triggerer_job": None,
        "dag_version": None,
    }


BUILD_RUN_ENTRY = {
    "dag_run_id": BUILD_RUN,
    "dag_id": "orchard_build",
    "logical_date": None,
    "queued_at": "2026-12-07T06:00:00.000000Z",
    "start_date": "2026-12-07T06:00:01.000000Z",
    "end_date": None,
    "run_after": "2026-12-07T06:00:00.000000Z",
    "run_type": "manual",
    "state": "running",
    "conf": {"data": {}},
}


def log_entry(event: str) -> dict:
    """One entry of a task log's `content`, as Airflow 3.3 returns it for task output."""
    return {
        "timestamp": "2026-12-07T06:11:34.752182Z",
        "event": event,
        "level": "info",
        "logger": "task.stdout",
    }


# Lines as the pretrain task's Airflow log carries them: run_ray_job's prefix, then the
# Ray Train worker's (colored by Ray).
WORKER = "[ray job] \x1b[36m(RayTrainWorker pid=2165)\x1b[0m "
LOG_START = [
    log_entry("submitted Ray job orchard_pretrain-manual__2026-12-07T06-10-48-pretrain-a1"),
    log_entry(WORKER + "> total number of samples: 2373"),
    log_entry(WORKER + '{"loss": 7.71, "lr": 0.0006, "step": 110, "tokens": 28160}'),
    log_entry(WORKER + "step 110/400 loss 7.7100"),
    log_entry(WORKER + '{"loss": 5.312, "lr": 0.0006, "step": 120, "tokens": 30720}'),
    log_entry(WORKER + "step 120/400 loss 5.3120"),
]
LOG_MORE = [log_entry(WORKER + "step 130/400 loss 5.0010")]


class AirflowStandIn:
    """Airflow mid-build: `orchard_build`'s `pretrain` task follows a running
    `orchard_pretrain` run whose `pretrain` task trains; `stage` switches to the gap
    between two stages or to a queued build."""

    def __init__(self) -> None:
        self.stage = "training"
        self.log_missing = False
        self.log_calls: list[dict] = []
        self.since_asked: list[str] = []
        stand_in = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                self.json_body()
                self.reply(201, {"access_token": "t"})

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if stand_in.log_missing and "/logs/" in url.path:
                    self.reply(404, {"detail": "TaskInstance not found"})
                    return
                self.reply(200, stand_in.answer(url.path, query))

        self.http = LoopbackServer(Handler)
        self.url = self.http.url

    def answer(self, path: str, query: dict) -> dict:
        build_task = "pretrain" if self.stage != "queued" else None
        if path == f"/api/v2/dags/orchard_build/dagRuns/{BUILD_RUN}/taskInstances":
            tis = [
                task_instance(
                    "orchard_build", BUILD_RUN, "data", "success", "2026-12-07T06:00:02Z"
                ),
                task_instance(
                    "orchard_build", BUILD_RUN, "pretrain", "running", "2026-12-07T06:09:30Z"
                ),
                task_instance("orchard_build", BUILD_RUN, "registered", None, None),
            ]
            if build_task is None:
                tis = [task_instance("orchard_build", BUILD_RUN, "data", None, None)]
            return {"task_instances": tis, "total_entries": len(tis)}
        if path == "/api/v2/dags/~/dagRuns/~/taskInstances":
            assert query["state"] == "running"
            self.since_asked.append(query["run_after_gte"])
            tis = [
                # The build's own task is in the answer too: the tracker must not show
                # it twice. Another DAG's task, not followed, must not show at all.
                task_instance(
                    "orchard_build", BUILD_RUN, "pretrain", "running", "2026-12-07T06:09:30Z"
                ),
                task_instance(
                    "orchard_smoke", "manual__x", "hello", "running", "2026-12-07T06:11:00Z"
                ),
            ]
            if self.stage == "training":
                tis.append(
                    task_instance(
                        "orchard_pretrain",
                        PRETRAIN_RUN,
                        "pretrain",
                        "running",
                        "2026-12-07T06:10:50.000000Z",
                    )
                )
            return {"task_instances": tis, "total_entries": len(tis)}
        if (
            path
            == f"/api/v2/dags/orchard_pretrain/dagRuns/{PRETRAIN_RUN}/taskInstances/pretrain/logs/1"
        ):
            self.log_calls.append(query)
            if "token" not in query:
                return {"content": LOG_START, "continuation_token": "after-6-lines"}
            return {"content": LOG_MORE, "continuation_token": "after-7-lines"}
        if path == f"/api/v2/dags/orchard_build/dagRuns/{BUILD_RUN}/taskInstances/pretrain/logs/1":
            follows = "following http://127.0.0.1:8080/dags/orchard_pretrain/runs/x"
            return {"content": [{"event": follows}], "continuation_token": "after-1-line"}
        raise AssertionError(f"the tracker asked for {path}")


@pytest.fixture
def airflow() -> Iterator[AirflowStandIn]:
    stand_in = AirflowStandIn()
    yield stand_in
    stand_in.http.stop()


def tracker(airflow: AirflowStandIn, log_every: float = 0.0) -> ProgressTracker:
    client = AirflowClient(airflow.url, AirflowLogin("admin", password="p"))
    return ProgressTracker(
        client,
        "orchard_build",
        BUILD_RUN,
        followed=["orchard_data", "orchard_tokenizer", "orchard_pretrain", "orchard_posttrain"],
        log_every=log_every,
    )


NOW = datetime(2026, 12, 7, 6, 14, 2, tzinfo=UTC)


def test_the_line_shows_the_stage_task_its_time_and_the_training_progress(airflow):
    snapshot = tracker(airflow).snapshot(BUILD_RUN_ENTRY)
    assert snapshot.line(NOW) == (
        "orchard_build 14m01s · orchard_pretrain.pretrain 3m12s · step 120/400 · loss 5.3120"
    )
    # Only runs queued since the build started count as its stages.
    assert airflow.since_asked == [BUILD_RUN_ENTRY["run_after"]]


def test_the_task_log_is_read_on_from_where_it_left_off(airflow):
    follow = tracker(airflow)
    follow.snapshot(BUILD_RUN_ENTRY)
    line = follow.snapshot(BUILD_RUN_ENTRY).line(NOW)
    assert line.endswith("step 130/400 · loss 5.0010")
    assert [call.get("token") for call in airflow.log_calls] == [None, "after-6-lines"]


def test_the_log_is_read_at_most_every_log_every_seconds(airflow):
    follow = tracker(airflow, log_every=3600)
    for _ in range(3):
        line = follow.snapshot(BUILD_RUN_ENTRY).line(NOW)
    assert len(airflow.log_calls) == 1
    assert line.endswith("step 120/400 · loss 5.3120")


def test_a_log_not_there_yet_shows_the_task_without_progress_then_with_it(airflow):
    follow = tracker(airflow)
    airflow.log_missing = True
    line = follow.snapshot(BUILD_RUN_ENTRY).line(NOW)
    assert line == "orchard_build 14m01s · orchard_pretrain.pretrain 3m12s"
    airflow.log_missing = False
    assert follow.snapshot(BUILD_RUN_ENTRY).line(NOW).endswith("step 120/400 · loss 5.3120")


def test_between_two_stages_the_builds_own_task_shows(airflow):
    airflow.stage = "between"
    line = tracker(airflow).snapshot(BUILD_RUN_ENTRY).line(NOW)
    assert line == "orchard_build 14m01s · pretrain 4m32s"


def test_a_run_with_nothing_running_shows_its_state(airflow):
    airflow.stage = "queued"
    run = BUILD_RUN_ENTRY | {"state": "queued", "start_date": None}
    assert tracker(airflow).snapshot(run).line(NOW) == "orchard_build 14m02s · queued"


def test_plain_output_prints_a_line_per_change_not_per_poll(airflow):
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    display = ProgressDisplay(console, tracker(airflow), poll_every=0, plain_every=3600)
    with display:
        for stage in ("training", "training", "training", "between", "between", "training"):
            airflow.stage = stage
            display.update(BUILD_RUN_ENTRY)
    lines = out.getvalue().splitlines()
    assert [line.split(" · ", 1)[1].split(" ")[0] for line in lines] == [
        "orchard_pretrain.pretrain",
        "pretrain",
        "orchard_pretrain.pretrain",
    ]
    assert "\r" not in out.getvalue()


def test_a_failing_poll_keeps_the_last_line_and_the_run_followed(airflow):
    out = io.StringIO()
    display = ProgressDisplay(
        Console(file=out, force_terminal=False, width=200),
        tracker(airflow),
        poll_every=0,
        plain_every=0,
    )
    display.update(BUILD_RUN_ENTRY)
    airflow.http.stop()  # Airflow stops answering
    display.update(BUILD_RUN_ENTRY)
    first, second = out.getvalue().splitlines()
    # The same task, step and loss (elapsed times may have ticked on between the polls).
    durations = re.compile(r"\b(\d+h)?(\d+m)?\d+s\b")
    assert durations.sub("T", second.split(" · ", 1)[1]) == durations.sub(
        "T", first.split(" · ", 1)[1]
    )
    assert "step 120/400 · loss 5.3120" in second


def test_progress_lines_are_found_among_a_task_logs_other_lines():
    text = "\n".join(entry["event"] for entry in LOG_START)
    assert TrainingProgress.last_in(text) == TrainingProgress(120, 400, 5.312)
    assert TrainingProgress.last_in("submitted Ray job x\nno steps here") is None
    assert TrainingProgress.last_in(step_line(7, 9, float("nan"))).step == 7


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0, "0s"), (45.9, "45s"), (192, "3m12s"), (3723, "1h02m03s")]
)
def test_elapsed_times_read_like_a_clock(seconds, shown):
    assert elapsed(seconds) == shown


def test_a_trainer_prints_a_progress_line_at_every_logged_loss(tmp_path, capsys):
    """The post-training steps' callback, on a real (tiny) transformers Trainer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    ids = torch.randint(0, 64, (8, 12))
    rows = [{"input_ids": row, "labels": row} for row in ids]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=6,
        per_device_train_batch_size=2,
        logging_steps=2,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
    )
    trainer = Trainer(
        model=LlamaForCausalLM(config),
        args=args,
        train_dataset=rows,
        callbacks=[training_progress_callback()],
    )
    trainer.train()
    printed = capsys.readouterr().out
    found = [TrainingProgress.last_in(line) for line in printed.splitlines()]
    progress = [p for p in found if p]
    assert [(p.step, p.total) for p in progress] == [(2, 6), (4, 6), (6, 6)]
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert [p.loss for p in progress] == pytest.approx(losses, abs=1e-4)
