"""`orchard_data` end to end through Airflow's REST API, on the fixture website that the
stack serves: crawl (robots.txt honoured) → curate → validate → mix, then a second
trigger that does no work, and imported sources mixed in by weight.

A failing validation is not re-run here: tests/unit/test_validate.py fails the step on
each rule with its one-line report, and tests/integration/test_stack.py shows a failing
Ray job turning its task red (Airflow then skips what depends on it)."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from orchard.airflow_client import AirflowClient, AirflowError
from testkit.corpus import planted_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DAG = "orchard_data"


@pytest.fixture(scope="module")
def airflow(stack) -> AirflowClient:
    settings = stack.settings()
    client = AirflowClient.from_settings(settings)
    client.wait_for_dag(DAG)
    client.unpause(DAG)
    # The DAGs this one's asset triggers (tokenizer, pretraining) are tested on their own:
    # here they would only train a model in the background of every data test.
    for follower in settings.pipeline_followers:
        client.wait_for_dag(follower)
        client.pause(follower)
    yield client
    client.close()


def read_corpus(manifest_dir: Path) -> dict[str, dict]:
    docs = {}
    for shard in sorted((manifest_dir / "documents").glob("*.jsonl.gz")):
        with gzip.open(shard, "rt") as handle:
            for line in handle:
                doc = json.loads(line)
                docs[doc["metadata"]["url"]] = doc
    return docs


def task_logs(airflow: AirflowClient, run_id: str) -> dict[str, str]:
    return {
        ti["task_id"]: airflow.task_log(DAG, run_id, ti["task_id"], max(ti["try_number"], 1))
        for ti in airflow.task_instances(DAG, run_id)
        if ti["try_number"]
    }


@pytest.fixture(scope="module")
def first_run(airflow, stack):
    run_id = airflow.trigger(DAG, {"max_pages": 200})
    state = airflow.wait_for_run(DAG, run_id, timeout=900)
    logs = task_logs(airflow, run_id)
    assert state == "success", "\n".join(f"--- {k}\n{v[-3000:]}" for k, v in logs.items())
    return run_id, logs


def published(airflow: AirflowClient, run_id: str, step: str) -> Path:
    """The output directory the run's `step` task published or reused (its XCom)."""
    return Path(airflow.return_value(DAG, run_id, step))


def test_the_corpus_is_clean_deduplicated_and_validated(airflow, first_run):
    run_id, _ = first_run
    corpus = planted_corpus()
    docs = read_corpus(published(airflow, run_id, "mix"))
    ids = {re.search(r"/([\w-]+)\.html$", url).group(1) for url in docs if url.endswith(".html")}
    # Every distinct page is there; of each planted duplicate pair only one is.
    assert (
        corpus.distinct
        - set(corpus.near_duplicates.values())
        - set(corpus.exact_duplicates.values())
        <= ids
    )
    for copy, original in {**corpus.near_duplicates, **corpus.exact_duplicates}.items():
        assert (copy in ids) != (original in ids), (copy, original)
    assert not corpus.foreign & ids
    text = " ".join(doc["text"] for doc in docs.values())
    assert "jane.doe@example-corp.com" not in text and "415-555-0132" not in text
    assert "private ledger" not in text
    validated = published(airflow, run_id, "validate")
    validation = json.loads((validated / "validation.json").read_text())
    assert validation["success"] is True
    assert (validated / "data_docs" / "index.html").exists()


def test_a_task_that_returned_nothing_reads_as_the_default(airflow, first_run):
    # Without sources, `import_sources` returns None and Airflow stores no XCom: `orchard run`
    # reads the champion rule's decision (None on a nano-only build) this way.
    run_id, _ = first_run
    assert airflow.return_value(DAG, run_id, "import_sources", None) is None
    with pytest.raises(AirflowError, match="404"):
        airflow.return_value(DAG, run_id, "import_sources")
    assert Path(airflow.return_value(DAG, run_id, "mix", None)).is_dir()


def test_robots_disallowed_pages_are_never_requested(stack, first_run):
    site_log = (stack.home / "logs" / "site.log").read_text()
    assert "GET /index.html" in site_log
    assert "/private/" not in site_log


def test_a_second_trigger_does_no_work(airflow, stack, first_run):
    steps = ("crawl", "curate", "validate", "mix")
    before = {step: published(airflow, first_run[0], step) for step in steps}
    data = Path(stack.settings().data_dir)
    listing = {step: sorted(p.name for p in (data / step).iterdir()) for step in steps}
    run_id = airflow.trigger(DAG, {"max_pages": 200})
    assert airflow.wait_for_run(DAG, run_id, timeout=600) == "success"
    logs = task_logs(airflow, run_id)
    for task in ("crawl", "curate", "validate", "mix"):
        assert "already done, skipped" in logs[task], task
        assert "submitted Ray job" not in logs[task], task
    assert {step: published(airflow, run_id, step) for step in steps} == before
    # Nothing new was written beside the outputs, not even a staging directory.
    assert {step: sorted(p.name for p in (data / step).iterdir()) for step in steps} == listing


def test_imported_sources_join_the_crawl_and_are_mixed_by_weight(
    airflow, stack, first_run, tmp_path
):
    import random

    from testkit.corpus import article

    rng = random.Random(99)
    books = tmp_path / "books.jsonl"
    books.write_text(
        "".join(json.dumps({"text": article(rng), "title": f"book {i}"}) + "\n" for i in range(10))
    )
    conf = {
        "max_pages": 200,
        "imports": [f"jsonl/books:{books}"],
        "weights": {"web": 0.8, "books": 0.2},
    }
    run_id = airflow.trigger(DAG, conf)
    state = airflow.wait_for_run(DAG, run_id, timeout=900)
    logs = task_logs(airflow, run_id)
    assert state == "success", "\n".join(f"--- {k}\n{v[-2000:]}" for k, v in logs.items())
    assert "already done, skipped" in logs["crawl"]  # same crawl Params: reused
    mixes = [
        p for p in (Path(stack.settings().data_dir) / "mix").iterdir() if not p.name.startswith(".")
    ]
    newest = max(mixes, key=lambda p: p.stat().st_mtime)
    report = json.loads((newest / "mix.json").read_text())
    assert report["available"]["books"] == 10
    assert abs(report["achieved"]["books"] - 0.2) < 0.02
