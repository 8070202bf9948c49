"""The step contract: content-addressed keys, skip when done, never a half-written result."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import ClassVar

import mlflow
import pytest

from orchard import steps
from orchard.steps import StepConfig, StepContext, StepOutput, run_step, step_key


class CurateConfig(StepConfig):
    languages: tuple[str, ...] = ("en",)
    min_words: int = 50
    workers: int = 2
    not_in_key: ClassVar[frozenset[str]] = frozenset({"workers"})


def write_docs(text: str):
    calls = []

    def body(ctx: StepContext) -> StepOutput:
        calls.append(ctx.out)
        (ctx.out / "docs.jsonl").write_text(json.dumps({"text": text}) + "\n")
        return StepOutput(counts={"documents": 1}, metrics={"kept_ratio": 1.0})

    body.calls = calls
    return body


def test_same_config_same_key_and_result_fields_change_it():
    base = step_key("curate", CurateConfig(), [])
    assert base == step_key("curate", CurateConfig(), [])
    assert base != step_key("curate", CurateConfig(min_words=51), [])
    assert base != step_key("curate", CurateConfig(languages=("en", "fr")), [])
    assert base != step_key("tokenize", CurateConfig(), [])
    # Worker counts do not change the result, so they do not change the address.
    assert base == step_key("curate", CurateConfig(workers=16), [])


def test_inputs_are_part_of_the_key(tmp_path):
    crawl_a = run_step(
        step="crawl", name="site", config=CurateConfig(), data_root=tmp_path, body=write_docs("a")
    )
    crawl_b = run_step(
        step="crawl",
        name="site",
        config=CurateConfig(min_words=1),
        data_root=tmp_path,
        body=write_docs("b"),
    )
    keys = {
        run_step(
            step="curate",
            name="c",
            config=CurateConfig(),
            data_root=tmp_path,
            inputs=[upstream],
            body=write_docs("x"),
        ).key
        for upstream in (crawl_a, crawl_b)
    }
    assert len(keys) == 2


def test_a_finished_step_is_skipped(tmp_path):
    body = write_docs("hello")
    first = run_step(
        step="curate", name="web", config=CurateConfig(), data_root=tmp_path, body=body
    )
    again = run_step(
        step="curate", name="web", config=CurateConfig(), data_root=tmp_path, body=body
    )
    assert len(body.calls) == 1
    assert again == first
    out = Path(first.path)
    assert out == tmp_path / "curate" / f"web-{first.key}"
    assert (out / "docs.jsonl").exists() and (out / "manifest.json").exists()
    assert first.counts == {"documents": 1} and first.code_version


def test_a_failing_step_leaves_no_output_and_can_be_retried(tmp_path):
    def broken(ctx: StepContext) -> StepOutput:
        (ctx.out / "half.jsonl").write_text("{")
        (ctx.work / "frontier.db").write_text("progress")
        raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError):
        run_step(step="curate", name="web", config=CurateConfig(), data_root=tmp_path, body=broken)
    # Nothing published; only the resumable scratch space is left for the retry.
    (work,) = (tmp_path / "curate").iterdir()
    assert work.name.endswith(".work") and (work / "frontier.db").read_text() == "progress"

    def resumed(ctx: StepContext) -> StepOutput:
        assert (ctx.work / "frontier.db").read_text() == "progress"
        (ctx.out / "docs.jsonl").write_text("{}\n")
        return StepOutput()

    done = run_step(
        step="curate", name="web", config=CurateConfig(), data_root=tmp_path, body=resumed
    )
    assert sorted(p.name for p in Path(done.path).iterdir()) == ["docs.jsonl", "manifest.json"]
    assert [p.name for p in (tmp_path / "curate").iterdir() if p.name.startswith(".")] == []


def test_a_leftover_directory_without_manifest_is_replaced(tmp_path):
    key = step_key("curate", CurateConfig(), [])
    stale = tmp_path / "curate" / f"web-{key}"
    stale.mkdir(parents=True)
    (stale / "garbage.jsonl").write_text("{")
    done = run_step(
        step="curate", name="web", config=CurateConfig(), data_root=tmp_path, body=write_docs("ok")
    )
    assert sorted(p.name for p in Path(done.path).iterdir()) == ["docs.jsonl", "manifest.json"]


def test_other_code_version_is_reused_loudly_unless_forced(tmp_path, monkeypatch, caplog):
    first = run_step(
        step="curate", name="web", config=CurateConfig(), data_root=tmp_path, body=write_docs("v1")
    )
    monkeypatch.setattr(steps, "code_version", lambda: "git:newer")
    with caplog.at_level(logging.WARNING, logger="orchard.steps"):
        reused = run_step(
            step="curate",
            name="web",
            config=CurateConfig(),
            data_root=tmp_path,
            body=write_docs("v2"),
        )
    assert reused == first
    assert "REUSING" in caplog.text and "git:newer" in caplog.text
    rebuilt = run_step(
        step="curate",
        name="web",
        config=CurateConfig(),
        data_root=tmp_path,
        body=write_docs("v2"),
        force=True,
    )
    assert rebuilt.code_version == "git:newer"
    assert '"v2"' in (Path(rebuilt.path) / "docs.jsonl").read_text()


def test_unknown_config_fields_are_refused():
    with pytest.raises(ValueError, match="min_wrods"):
        CurateConfig(min_wrods=3)


def test_the_run_is_logged_to_mlflow_with_the_manifest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a SQLite tracking store puts artifacts in ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = run_step(
        step="curate",
        name="web",
        config=CurateConfig(),
        data_root=tmp_path / "data",
        body=write_docs("hi"),
        mlflow_uri=uri,
    )
    run = mlflow.MlflowClient(uri).get_run(done.mlflow_run_id)
    assert run.data.params["min_words"] == "50"
    assert run.data.metrics["count.documents"] == 1
    assert run.data.tags["orchard.key"] == done.key
    assert Path(done.path, "manifest.json").exists()
