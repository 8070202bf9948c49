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
