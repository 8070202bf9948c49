"""The registered version carries its lm-eval scores and the decontamination counts of
the training sets behind it: as tags the admin models page lists (eval metrics, lineage)
and in its description, the model card. Against a SQLite MLflow store, no server."""

from __future__ import annotations

import pytest

from orchard.steps import Manifest, StepConfig, StepOutput, run_step
from platform_api.registry import Registry
from ray_jobs.register import RegisterConfig, model_card, register
from serving.tiny import build_tiny_chat_model

NAME = "orchard-card-test"
LM_EVAL = {
    "lm_eval/orchard_docs_qa/contains": 0.25,
    "lm_eval/orchard_docs_qa/examples": 4.0,
    "lm_eval/orchard_signature_mc/acc": 0.5,
}


class Fixture(StepConfig):
    label: str


def step(root, name: str, inputs: list[Manifest], counts=None, metrics=None, model=False):
    def body(ctx):
        if model:
            build_tiny_chat_model(ctx.out / "hf", max_context=64)
        return StepOutput(counts=counts or {}, metrics=metrics or {})

    return run_step(
        step=name,
        name="f",
        config=Fixture(label=name),
        data_root=root,
        body=body,
        inputs=inputs,
    )


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    mix = step(root, "mix", [], {"decontamination.mix.checked": 900})  # no .removed: 0
    chat = step(
        root,
        "chat_data",
        [mix],
        {
            "decontamination.sft.checked": 120,
            "decontamination.sft.removed": 3,
            "decontamination.preference.checked": 300,
            "decontamination.preference.removed": 0,
        },
    )
    sft = step(root, "sft", [chat], model=True)
    evaluation = step(root, "evaluate", [sft, chat], metrics={"rouge_l": 0.2, **LM_EVAL})
    return root, sft, evaluation


def test_the_model_card_states_scores_and_decontamination(chain):
    _, sft, evaluation = chain
    card = model_card(sft, evaluation)
    assert "orchard_docs_qa: contains 0.25" in card and "orchard_signature_mc: acc 0.5" in card
    assert "examples" not in card
    assert "mix 0 of 900 rows removed; preference 0 of 300 rows removed; sft 3 of 120" in card
    bare = model_card(sft, None)
    assert "lm-eval: not run." in bare and "sft 3 of 120 rows removed" in bare


def test_the_admin_registry_lists_lm_eval_scores_and_the_card(chain, tmp_path, monkeypatch):
    root, sft, evaluation = chain
    monkeypatch.chdir(tmp_path)  # a SQLite tracking store puts artifacts in ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = RegisterConfig(model_name=NAME)
    run_step(
        step="register",
        name="model",
        config=config,
        data_root=root,
        body=lambda ctx: register(config, [sft, evaluation], ctx, uri),
        inputs=[sft, evaluation],
    )
    _, _, (version,) = Registry(uri, NAME).overview()
    assert {k: float(v) for k, v in version.metrics.items() if k.startswith("lm_eval/")} == LM_EVAL
    assert version.lineage["orchard.decontamination.sft"] == "3 of 120 removed"
    assert version.lineage["orchard.decontamination.mix"] == "0 of 900 removed"
    assert version.description == model_card(sft, evaluation)
