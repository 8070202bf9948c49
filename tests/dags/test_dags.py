"""Every DAG file imports cleanly and follows the house rules; `dag.test()` of the smoke DAG
runs its task in-process against the real stack (Ray job + MLflow)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest

from tests.conftest import REPO

# What a DAG file must not import when Airflow parses it (often): task bodies import these.
HEAVY_MODULES = {
    "torch",
    "ray",
    "mlflow",
    "transformers",
    "trl",
    "megatron",
    "datatrove",
    "great_expectations",
    "tokenizers",
    "pandas",
    "numpy",
    "ray_jobs",
    "model",
    "serving",
    "platform_api",
}
# Airflow's trigger form opens its first section and collapses the others: a longer form
# groups its Params into sections (Param `section`) of at most this many.
FORM_SECTION_MAX = 8


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


def test_every_param_default_submits_from_the_airflow_trigger_form(dagbag):
    """Airflow's UI takes a Param whose type does not allow "null" as required, and an
    empty value (None, "") of a required Param disables the dialog's Trigger button. So an
    optional Param is typed ["null", ...] and every default validates against its schema
    (tests/dags/test_trigger_forms.py checks the same in a browser)."""
    for dag_id, dag in dagbag.dags.items():
        for name, param in dag.params.items():
            types = param.schema.get("type")
            optional = isinstance(types, list) and "null" in types
            if not optional:
                assert param.value not in (None, ""), f"{dag_id}.{name}: required, empty default"
            else:
                param.resolve(None)  # the form's empty value passes Airflow's validation
            param.resolve(param.value)


def test_long_trigger_forms_group_their_params_into_sections(dagbag):
    for dag_id, dag in dagbag.dags.items():
        sections = Counter(param.schema.get("section") for _, param in dag.params.items())
        crowded = {s or "Run Parameters": n for s, n in sections.items() if n > FORM_SECTION_MAX}
        assert not crowded, f"{dag_id}: more than {FORM_SECTION_MAX} Params in {crowded}"


def test_parsing_the_dag_files_imports_no_heavy_module():
    """A fresh interpreter parses dags/ as the DAG processor does; the modules it had to
    import for that are light (task bodies import the heavy ones when they run)."""
    code = (
        "import sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "before = set(sys.modules)\n"
        "bag = DagBag(dag_folder=sys.argv[1])\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "print(' '.join({m.split('.')[0] for m in set(sys.modules) - before}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "dags")], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = set(result.stdout.split())
    assert "orchard" in loaded  # the DAG files' shared arguments and Params
    assert not loaded & HEAVY_MODULES, sorted(loaded & HEAVY_MODULES)


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


# orchard_tokenizer → orchard_pretrain by dag.test, each step a Ray job, the output's
# lineage and Hugging Face export: tests/cluster/test_pretrain_cluster.py runs the two DAGs
# so (on the three-host cluster, the data root on S3), with more checks than a run on the
# one-node stack made here (124 s of the stack's serial time in the last CI simulation).


def test_the_build_dag_follows_every_stage_of_the_chain_in_order(dagbag):
    from orchard.settings import Settings

    dag = dagbag.dags["orchard_build"]
    settings = Settings()
    stages = [name.removeprefix("orchard_") for name in settings.pipeline_followers]
    order = ["data", *stages, "registered", "champion"]
    for upstream, downstream in zip(order[:-1], order[1:], strict=True):
        assert downstream in dag.get_task(upstream).downstream_task_ids
    # The base-model branch: import (beside the data stage) and the corpus → adapt.
    assert dag.get_task("data").downstream_task_ids == {stages[0], "adapt"}
    assert dag.get_task("import").downstream_task_ids == {"adapt"}
    assert dag.get_task("registered").upstream_task_ids == {stages[-1], "adapt"}
    assert dag.get_task("registered").trigger_rule == "none_failed_min_one_success"
    assert settings.pipeline_followers[-1] == "orchard_posttrain"
    assert "register" in dagbag.dags["orchard_posttrain"].task_ids


@pytest.mark.slow
@pytest.mark.integration
def test_posttrain_registers_a_challenger_that_generates_and_a_retrigger_does_no_work(
    dagbag, airflow_db, stack, monkeypatch
):
    """orchard_posttrain task by task in-process, each step a Ray job on the stack, from a
    tiny base model over a small documentation corpus, with the stages `make run` adapts
    SmolLM2 with: chat data → SFT → DPO → evaluate → register (the reward model and GRPO
    are skipped tasks here; tests/unit/test_posttrain.py trains them); the version is
    challenger (and champion, the registry being empty), tagged with its lineage and
    metrics, and loads and generates."""
    from pathlib import Path

    import mlflow
    from mlflow import MlflowClient

    from tests.chat_corpus import tiny_base

    name = "orchard-chat-dag-test"
    monkeypatch.setenv("ORCHARD_MODEL_NAME", name)
    settings = stack.settings()
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    data = Path(settings.data_dir)
    base = tiny_base(data)
    conf = {"pretrained": base.path, "stages": ["sft", "dpo"], "sft_steps": 4, "dpo_steps": 2}
    dag = dagbag.get_dag("orchard_posttrain")
    assert dag.test(run_conf=conf).state == "success"

    client = MlflowClient(tracking_uri=settings.mlflow_uri, registry_uri=settings.mlflow_uri)
    (found,) = client.search_model_versions(f"name='{name}'")
    version = client.get_model_version(name, found.version)  # search leaves aliases out
    assert set(version.aliases) == {"challenger", "champion"}
    for step in ("chat_data", "sft", "dpo", "evaluate", "pretrain", "curate"):
        assert f"orchard.lineage.{step}" in version.tags, step
    assert not {"orchard.lineage.reward", "orchard.lineage.grpo"} & set(version.tags)
    assert version.tags["orchard.model_step"] == "dpo"
    assert {"eval.rouge_l", "eval.heldout_ppl"} <= set(version.tags)
    # lm-evaluation-harness ran inside evaluate; the model card states it and what
    # decontamination removed from the chat data behind the model.
    harness = {"eval.lm_eval/orchard_docs_qa/contains", "eval.lm_eval/orchard_safety/refusal_rate"}
    assert harness <= set(version.tags)
    assert version.tags["orchard.decontamination.sft"].endswith(" removed")
    assert "lm-eval (local held-out tasks): orchard_docs_qa: " in version.description

    mlflow.set_tracking_uri(settings.mlflow_uri)
    generate = mlflow.transformers.load_model(f"models:/{name}@challenger")
    text = generate([{"role": "user", "content": "What does json.dumps do?"}], max_new_tokens=8)
    assert text and text[0]["generated_text"]

    outputs = {step: sorted(p.name for p in (data / step).iterdir()) for step in ("sft", "dpo")}
    assert dag.test(run_conf=conf).state == "success"
    assert {s: sorted(p.name for p in (data / s).iterdir()) for s in outputs} == outputs
    assert len(client.search_model_versions(f"name='{name}'")) == 1


def test_the_index_dag_builds_the_shared_knowledge_base_from_the_curated_corpus(dagbag):
    """orchard_index starts on the asset orchard_data publishes (beside the tokenizer) and
    runs the index step on the corpus that event names (tests/unit/test_index.py runs the
    step itself)."""
    dag = dagbag.dags["orchard_index"]
    (asset,) = dag.timetable.asset_condition.objects
    assert asset.name == "orchard_curated_corpus"
    assert asset in dagbag.dags["orchard_data"].get_task("mix").outlets
    assert dag.get_task("corpus").downstream_task_ids == {"index"}
    assert dag.params["knowledge_base"] == "crawled-site"
