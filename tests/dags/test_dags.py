"""Every DAG file imports cleanly and follows the house rules; `dag.test()` of the smoke DAG
runs its task in-process against the real stack (Ray job + MLflow)."""

from __future__ import annotations

import os

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.fixture(scope="module")
def airflow_db():
    from airflow.utils import db

    db.initdb()


def test_every_dag_imports_cleanly(dagbag):
    assert dagbag.import_errors == {}
    assert "orchard_smoke" in dagbag.dag_ids


def test_every_dag_is_documented_tagged_and_declares_retries(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, dag_id
        assert dag.doc_md, dag_id
        assert "retries" in dag.default_args, dag_id
        assert dag_id == os.path.splitext(os.path.basename(dag.fileloc))[0]


def test_every_param_has_a_title_and_description(dagbag):
    for dag_id, dag in dagbag.dags.items():
        for name, param in dag.params.items():
            schema = param.schema
            assert schema.get("title") and param.description, f"{dag_id}.{name}"


@pytest.mark.slow
@pytest.mark.integration
def test_dag_test_runs_the_smoke_task_against_the_stack(dagbag, airflow_db, stack, monkeypatch):
    for key, value in stack.settings().to_env().items():
        monkeypatch.setenv(key, value)
    dag = dagbag.get_dag("orchard_smoke")
    ok = dag.test(run_conf={"message": "from dag.test"})
    assert ok.state == "success"
    failed = dag.test(run_conf={"fail": True})
    assert failed.state == "failed"


@pytest.mark.slow
@pytest.mark.integration
def test_dag_test_tokenizes_and_pretrains_a_corpus_on_the_stack(
    dagbag, airflow_db, stack, monkeypatch
):
    """orchard_tokenizer then orchard_pretrain, task by task in-process, each step a Ray job
    on the stack; the pretrained model lands as a Hugging Face directory."""
    from pathlib import Path

    from orchard.steps import latest
    from tests.corpus import corpus_step

    settings = stack.settings()
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    data = Path(settings.data_dir)
    corpus = corpus_step(data, documents=80, seed=7)

    tokenizer_run = dagbag.get_dag("orchard_tokenizer").test(
        run_conf={"corpus": str(Path(corpus.path) / "manifest.json"), "vocab_size": 512}
    )
    assert tokenizer_run.state == "success"
    tokenized = latest(data, "tokenize")
    assert tokenized is not None and corpus.key in {ref.key for ref in tokenized.inputs}
    assert (Path(tokenized.path) / "datasets.json").is_file()

    pretrain_run = dagbag.get_dag("orchard_pretrain").test(
        run_conf={
            "tokenized": str(Path(tokenized.path) / "manifest.json"),
            "steps": 4,
            "seq_length": 64,
            "global_batch_size": 4,
        }
    )
    assert pretrain_run.state == "success"
    model = latest(data, "pretrain")
    assert model is not None and model.inputs[0].key == tokenized.key
    assert (Path(model.path) / "hf" / "model.safetensors").is_file()
    assert model.counts["steps"] == 4
