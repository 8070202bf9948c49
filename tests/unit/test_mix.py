"""The mix step samples categories to their target shares without repeating a document."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from orchard.errors import OrchardError
from orchard.steps import StepConfig, StepContext, StepOutput, run_step
from ray_jobs.mix import MixConfig, mix, plan


class FixtureCorpus(StepConfig):
    label: str


def curated(tmp_path: Path, label: str, categories: dict[str, int]):
    def body(ctx: StepContext) -> StepOutput:
        docs = ctx.out / "documents"
        docs.mkdir()
        with gzip.open(docs / "00000.jsonl.gz", "wt") as handle:
            for category, n in categories.items():
                for i in range(n):
                    meta = {"category": category} if category != "web" else {}
                    line = {"text": f"{label} {category} {i}", "id": f"{label}-{category}-{i}"}
                    handle.write(json.dumps(line | {"metadata": meta}) + "\n")
        return StepOutput()

    return run_step(
        step="curate", name=label, config=FixtureCorpus(label=label), data_root=tmp_path, body=body
    )


def read(path: str) -> list[dict]:
    docs = []
    for shard in sorted(Path(path, "documents").glob("*.jsonl.gz")):
        with gzip.open(shard, "rt") as handle:
            docs.extend(json.loads(line) for line in handle)
    return docs


def mixed(tmp_path, config, sources):
    return run_step(
        step="mix",
        name="mix",
        config=config,
        data_root=tmp_path,
        inputs=sources,
        body=lambda ctx: mix(config, [Path(s.path) for s in sources], ctx),
    )


def test_categories_are_sampled_to_their_weights_without_repeats(tmp_path):
    web = curated(tmp_path, "web", {"web": 100})
    code = curated(tmp_path, "code", {"code": 30, "books": 5})
    done = mixed(tmp_path, MixConfig(weights={"web": 0.8, "code": 0.2}), [web, code])
    docs = read(done.path)
    ids = [d["id"] for d in docs]
    assert len(ids) == len(set(ids)) == 125  # 100 web is the binding share
    report = json.loads(Path(done.path, "mix.json").read_text())
    assert report["achieved"] == {"web": 0.8, "code": 0.2}
    assert report["available"]["books"] == 5 and "books" not in report["achieved"]
    assert done.counts["documents.code"] == 25


def test_total_documents_is_respected_and_capped(tmp_path):
    web = curated(tmp_path, "web", {"web": 50})
    done = mixed(tmp_path, MixConfig(total_documents=20), [web])
    assert len(read(done.path)) == 20
    assert plan(MixConfig(total_documents=500), {"web": 50}) == {"web": 50}


def test_a_weighted_category_with_no_documents_is_left_out_loudly(caplog):
    assert plan(MixConfig(weights={"web": 1, "code": 1}), {"web": 10}) == {"web": 10}
    assert "no code documents" in caplog.text
    with pytest.raises(OrchardError, match="none of the weighted categories"):
        plan(MixConfig(weights={"code": 1}), {"web": 10})


def test_bad_weights_are_refused():
    with pytest.raises(ValueError, match="weights"):
        MixConfig(weights={"web": -1})
    with pytest.raises(ValueError):
        MixConfig(weights={"poetry": 1})


def test_documents_overlapping_an_eval_task_are_not_mixed_and_are_counted(tmp_path, monkeypatch):
    from orchard.safety import HELDOUT
    from orchard.settings import Settings
    from ray_jobs.mix import run

    monkeypatch.setattr(Settings, "mlflow_uri", property(lambda self: None))
    answer = (
        "Serialize obj to a JSON formatted str using this conversion table, with keys "
        "always of the type str."
    )

    def chat_data(ctx: StepContext) -> StepOutput:
        (ctx.out / "sft").mkdir()
        messages = [
            {"role": "user", "content": "What does json.dumps do?"},
            {"role": "assistant", "content": answer},
        ]
        row = {"id": "e0", "messages": messages, "kind": "describe"}
        (ctx.out / "sft" / "heldout.jsonl").write_text(json.dumps(row) + "\n")
        return StepOutput()

    def corpus(ctx: StepContext) -> StepOutput:
        texts = {
            "page": f"The json page. {answer.upper()} More text.",  # the held-out answer
            "forum": f"Someone asked: {HELDOUT[1]}",  # a safety eval prompt
            "near": " ".join(answer.split()[:12]) + " and so on.",  # 12 words: kept
            "other": "Pear trees prefer deep, well drained soil.",
        }
        (ctx.out / "documents").mkdir()
        with gzip.open(ctx.out / "documents" / "00000.jsonl.gz", "wt") as handle:
            for doc_id, text in texts.items():
                handle.write(json.dumps({"id": doc_id, "text": text, "metadata": {}}) + "\n")
        return StepOutput()

    source = run_step(
        step="curate", name="c", config=FixtureCorpus(label="c"), data_root=tmp_path, body=corpus
    )
    chat = run_step(
        step="chat_data",
        name="d",
        config=FixtureCorpus(label="d"),
        data_root=tmp_path,
        body=chat_data,
    )
    settings = Settings(home=tmp_path / "home", data_root=str(tmp_path), mlflow_tracking_uri=None)
    alone = run(MixConfig(), [source], settings)  # the safety set is always checked
    assert {d["id"] for d in read(alone.path)} == {"page", "near", "other"}
    assert alone.counts["decontamination.mix.checked"] == 4
    assert alone.counts["decontamination.mix.removed"] == 1
    done = run(MixConfig(), [source, chat], settings)
    assert {d["id"] for d in read(done.path)} == {"near", "other"}
    assert done.counts["decontamination.mix.removed"] == 2
    report = json.loads(Path(done.path, "decontamination.json").read_text())
    assert report["mix"]["removed_ids"] == ["page", "forum"]
    assert report["eval_sets"] == [chat.path]
