"""The register step against the stack's real MLflow: a model directory becomes a version
of the registered model with alias `challenger`, lineage and eval tags; `champion` only on
an empty registry when asked; a retry never registers twice; the version loads and
generates through MLflow's `transformers` flavor."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from orchard.errors import OrchardError
from orchard.steps import Manifest, StepConfig, StepOutput, run_step
from ray_jobs.register import KEY_TAG, RegisterConfig
from ray_jobs.register import run as register
from serving.tiny import build_tiny_chat_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NAME = "orchard-register-test"


class Fixture(StepConfig):
    label: str


def fixture_step(data: Path, step: str, inputs: list[Manifest], metrics=None, model=False):
    """An upstream step's finished output, made through the real step contract."""

    def body(ctx):
        if model:
            build_tiny_chat_model(ctx.out / "hf", max_context=128)
        return StepOutput(metrics=metrics or {})

    return run_step(
        step=step,
        name="fixture",
        config=Fixture(label=step),
        data_root=data,
        body=body,
        inputs=inputs,
    )


@pytest.fixture(scope="module")
def upstream(stack):
    data = Path(stack.settings().data_dir) / "register-test"
    corpus = fixture_step(data, "mix", [])
    model = fixture_step(data, "sft", [corpus], model=True)
    evaluation = fixture_step(data, "evaluate", [model], metrics={"rouge_l": 0.25, "ppl": 41.5})
    return corpus, model, evaluation


@pytest.fixture(scope="module")
def client(stack) -> MlflowClient:
    uri = stack.settings().mlflow_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_a_model_is_registered_as_challenger_with_lineage_and_metrics(stack, upstream, client):
    corpus, model, evaluation = upstream
    settings = stack.settings()
    config = RegisterConfig(model_name=NAME, champion_if_none=True)
    done = register(config, [model, evaluation], settings)
    version = str(done.counts["version"])

    registered = client.get_registered_model(NAME)
    assert registered.aliases == {"challenger": version, "champion": version}
    tags = client.get_model_version(NAME, version).tags
    assert tags["orchard.lineage.sft"] == model.path
    assert tags["orchard.lineage.mix"] == corpus.path
    assert tags["orchard.lineage.evaluate"] == evaluation.path
    assert float(tags["eval.rouge_l"]) == 0.25
    assert tags[KEY_TAG] == done.key

    # Done already: nothing is registered again.
    again = register(config, [model, evaluation], settings)
    assert again.path == done.path
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 1

    # A retry whose first attempt registered but died before its manifest reuses the
    # version it made instead of registering a second one.
    retried = register(config, [model, evaluation], settings, force=True)
    assert retried.counts["version"] == int(version)
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 1


def test_champion_is_never_moved_once_there_is_one(stack, upstream, client):
    _, model, _ = upstream
    settings = stack.settings()
    champion = client.get_registered_model(NAME).aliases["champion"]
    # A different config makes a different step key, so a new version.
    done = register(
        RegisterConfig(model_name=NAME, champion_if_none=True), [model], settings, name="solo"
    )
    version = str(done.counts["version"])
    assert version != champion
    aliases = client.get_registered_model(NAME).aliases
    assert aliases == {"challenger": version, "champion": champion}


def test_the_challenger_loads_and_generates(stack, upstream, client):
    import mlflow

    mlflow.set_tracking_uri(stack.settings().mlflow_uri)
    pipe = mlflow.transformers.load_model(f"models:/{NAME}@challenger")
    chat = [{"role": "user", "content": "Hello there"}]
    prompt = pipe.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    out = pipe(prompt, max_new_tokens=5, do_sample=False, return_full_text=False)
    assert isinstance(out[0]["generated_text"], str)
    ids = pipe.tokenizer(prompt, return_tensors="pt")
    generated = pipe.model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] == ids["input_ids"].shape[1] + 5


def test_bad_inputs_are_refused_with_what_to_pass(stack, upstream):
    corpus, model, evaluation = upstream
    settings = stack.settings()
    with pytest.raises(OrchardError, match="no hf/config.json"):
        register(RegisterConfig(model_name=NAME), [corpus], settings)
    with pytest.raises(OrchardError, match="one model manifest"):
        register(RegisterConfig(model_name=NAME), [model, corpus], settings)
    other = fixture_step(
        Path(settings.data_dir) / "register-test", "evaluate", [corpus], metrics={"x": 1.0}
    )
    with pytest.raises(OrchardError, match="is not of the model"):
        register(RegisterConfig(model_name=NAME), [model, other], settings)
