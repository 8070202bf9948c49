"""Post-training from users' feedback: DPO from the champion's model on the feedback set
mixed with the champion's own preference pairs, registered as `challenger` with lineage
naming the feedback dataset version, the champion it started from and the row counts;
and KTO on thumbs that never pair up, with the same lineage.
Real steps (feedback, dpo, register) on a tiny random Llama, against a SQLite MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from orchard.feedback import champion_lineage
from orchard.registry import aliases
from orchard.settings import Settings
from orchard.steps import StepConfig, StepOutput, run_step
from ray_jobs import dpo, feedback, register
from serving.tiny import build_tiny_chat_model
from tests.unit.test_feedback_dataset import export, regeneration

NAME = "orchard-loop-test"


class LocalSettings(Settings):
    """Settings whose MLflow is a SQLite store (plain Settings fall back to the stack's)."""

    @property
    def mlflow_uri(self) -> str | None:
        return self.mlflow_tracking_uri


class Fixture(StepConfig):
    label: str


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def original_pairs() -> list[dict]:
    return [
        {
            "id": f"p{i}",
            "prompt": [{"role": "user", "content": f"What is option {i}?"}],
            "chosen": [{"role": "assistant", "content": f"Option {i} sorts."}],
            "rejected": [{"role": "assistant", "content": "I do not know."}],
        }
        for i in range(6)
    ]


def chat_data(ctx):
    held = {
        "id": "h1",
        "messages": [
            {"role": "user", "content": "What does indent do in json.dumps?"},
            {"role": "assistant", "content": "It pretty-prints."},
        ],
    }
    _write(ctx.out / "sft" / "heldout.jsonl", [held])
    _write(ctx.out / "preference" / "train.jsonl", original_pairs())
    return StepOutput()


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loop")
    settings = LocalSettings(
        home=tmp / "home",
        data_root=str(tmp / "data"),
        mlflow_tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
    )
    root = tmp / "data"
    chat = run_step(
        step="chat_data", name="f", config=Fixture(label="c"), data_root=root, body=chat_data
    )

    def sft_body(ctx):
        build_tiny_chat_model(ctx.out / "hf", seed=5, max_context=256)
        return StepOutput()

    sft = run_step(
        step="sft",
        name="f",
        config=Fixture(label="s"),
        data_root=root,
        body=sft_body,
        inputs=[chat],
    )
    return settings, tmp, chat, sft


@pytest.mark.slow
def test_a_challenger_from_feedback_names_its_dataset_champion_and_counts(loop, monkeypatch):
    settings, tmp, chat, sft = loop
    monkeypatch.chdir(tmp)  # a SQLite tracking store puts artifacts in ./mlruns
    uri = settings.mlflow_uri
    # The champion as the register step tags a version (lineage to its manifests); its
    # weights are not needed here, so the version is made without logging a model.
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(NAME)
    champion = client.create_model_version(
        NAME,
        source=sft.path,
        tags={
            "orchard.model_step": "sft",
            **{f"orchard.lineage.{m.step}": m.path for m in (sft, chat)},
        },
    ).version
    client.set_registered_model_alias(NAME, "champion", champion)
    records = [
        regeneration(f"u{i % 4}", f"Explain flag {i}", "Short.", "A much longer answer " * 3)
        for i in range(8)
    ]
    dataset = feedback.run(export(tmp / "export.jsonl", records), [chat], settings)

    version, model, chat_path = champion_lineage(uri, NAME)
    assert (model, chat_path) == (sft.path, chat.path)
    config = dpo.DpoConfig(
        steps=2,
        lr=1e-3,
        batch_size=4,
        max_length=128,
        logging_steps=1,
        feedback_ratio=0.5,
        from_champion=f"{NAME}/{version}",
    )
    trained = dpo.run(config, [chat, sft, dataset], settings)
    assert (trained.counts["feedback_pairs"], trained.counts["original_pairs"]) == (8, 4)

    made = register.run(register.RegisterConfig(model_name=NAME), [trained], settings)
    record = json.loads((Path(made.path) / "registered.json").read_text())
    tags = record["tags"]
    assert tags["orchard.feedback.version"] == dataset.key
    assert tags["orchard.feedback.from_champion"] == f"{NAME}/{champion}"
    assert tags["orchard.feedback.feedback_pairs"] == "8"
    assert tags["orchard.feedback.original_pairs"] == "4"
    assert tags["orchard.feedback.dataset_pairs"] == "8"
    assert tags["orchard.lineage.feedback"] == dataset.path
    assert aliases(uri, NAME) == {"champion": version, "challenger": record["version"]}

    # MLflow records the feedback set as a dataset input of the run that trained on it.
    run = MlflowClient(tracking_uri=uri).get_run(trained.mlflow_run_id)
    inputs = [(d.dataset.name, d.dataset.source) for d in run.inputs.dataset_inputs]
    assert [name for name, _ in inputs] == [f"orchard-feedback-{dataset.key}"]
    assert dataset.path in inputs[0][1]


@pytest.mark.slow
def test_kto_trains_the_champion_on_thumbs_alone_with_the_loops_lineage(loop, monkeypatch):
    """Thumbs that never pair up (each question asked once) are no use to DPO; KTO trains
    on them, mixed with the original pairs unfolded, and the version it makes would be
    tagged with the same lineage as DPO's (the tags come from the manifests alone)."""
    from safetensors.torch import load_file

    from ray_jobs import kto
    from tests.unit.test_feedback_dataset import rating

    settings, tmp, chat, sft = loop
    monkeypatch.chdir(tmp)
    thumbs = [
        rating(f"u{i % 4}", f"Which flag does {i}?", "Short." if i % 3 else "Long " * 9, i % 3 > 0)
        for i in range(12)
    ]
    config = export(tmp / "thumbs.jsonl", thumbs).model_copy(
        update={"method": "kto", "min_rows": 12}
    )
    dataset = feedback.run(config, [chat], settings)
    assert (dataset.counts["pairs"], dataset.counts["labelled_answers"]) == (0, 12)

    trained = kto.run(
        kto.KtoConfig(
            steps=2,
            lr=1e-3,
            batch_size=4,
            max_length=128,
            logging_steps=1,
            feedback_ratio=0.5,
            from_champion=f"{NAME}/1",
        ),
        [chat, sft, dataset],
        settings,
    )
    # 12 feedback answers (8 up, 4 down) and 3 original pairs unfolded: 6 answers.
    assert trained.counts["feedback_rows"] == 12 and trained.counts["feedback_desirable"] == 8
    assert (trained.counts["original_pairs"], trained.counts["original_rows"]) == (3, 6)
    assert trained.metrics["undesirable_weight"] > 1 == trained.metrics["desirable_weight"]
    before = load_file(Path(sft.path) / "hf" / "model.safetensors")
    after = load_file(Path(trained.path) / "hf" / "model.safetensors")
    assert any(not before[k].equal(after[k]) for k in before)  # the model did learn

    tags = register.version_tags(trained, None)
    assert tags["orchard.model_step"] == "kto"
    assert tags["orchard.feedback.method"] == "kto"
    assert tags["orchard.feedback.version"] == dataset.key
    assert tags["orchard.feedback.from_champion"] == f"{NAME}/1"
    assert tags["orchard.feedback.feedback_rows"] == "12"
    assert tags["orchard.feedback.original_rows"] == "6"
    assert tags["orchard.feedback.dataset_labelled_answers"] == "12"
    assert tags["orchard.lineage.feedback"] == dataset.path
    assert tags["orchard.lineage.sft"] == sft.path  # the champion's model it started from

    run = MlflowClient(tracking_uri=settings.mlflow_uri).get_run(trained.mlflow_run_id)
    names = [d.dataset.name for d in run.inputs.dataset_inputs]
    assert names == [f"orchard-feedback-{dataset.key}-kto"]
