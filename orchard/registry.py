"""The model registry: how Orchard registers a chat model version in MLflow.

`register_hf_model` is the one way a chat model enters the registry (the register step,
the tests and `serving.tiny` use it): it checks that a Hugging Face directory holds a
causal LM and a tokenizer with a chat template, logs them as an MLflow `transformers`
flavor model, creates the registered version, tags it and optionally points an alias at
it. Serving reads what this writes (docs/serving.md states the contract).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

EXPERIMENT = "orchard-registry"
BASE_TAG = "orchard.base"
"""Prefix of the tags naming the imported base model a version was adapted from
(`orchard.base.source`, `.licence`, `.sha256`, ...); a from-scratch version has none."""
LAYOUT_TAG = "orchard.serving_layout"
LAYOUT = "mlflow-transformers/v1"


def _load_checked(hf_dir: Path):
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (hf_dir / "config.json").is_file():
        raise ValueError(f"{hf_dir} has no config.json: pass a save_pretrained() directory")
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"the tokenizer in {hf_dir} has no chat template: serving renders chats with "
            "it; set tokenizer.chat_template and save_pretrained again"
        )
    try:
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
        )
    except Exception as error:  # jinja errors have many types
        raise ValueError(f"the chat template in {hf_dir} does not render: {error}") from None
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype="auto")
    return model, tokenizer, transformers.__version__


@contextlib.contextmanager
def _tracking(tracking_uri: str) -> Iterator[None]:
    """Log to `tracking_uri` inside the caller's active run, or in a run of our own."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        if mlflow.active_run() is not None:
            yield
        else:
            experiment = mlflow.set_experiment(EXPERIMENT)
            with mlflow.start_run(experiment_id=experiment.experiment_id, run_name="register"):
                yield
    finally:
        mlflow.set_tracking_uri(previous)


def register_hf_model(
    hf_dir: str | Path,
    *,
    tracking_uri: str,
    name: str,
    alias: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Register a Hugging Face causal LM + tokenizer directory as a new version of `name`.

    Logged as an MLflow `transformers` flavor model (task text-generation) into the active
    run, or into a new run of experiment `orchard-registry`. `tags` go on the model
    version (put the manifests that made the model here); `alias` (e.g. "challenger") is
    moved to the new version. Returns the version number as a string, e.g. "3".
    """
    import mlflow
    import torch
    from mlflow import MlflowClient

    model, tokenizer, transformers_version = _load_checked(Path(hf_dir))
    with _tracking(tracking_uri):
        info = mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer},
            name="model",
            task="text-generation",
            registered_model_name=name,
            # Inferring requirements imports optional packages (torchvision) that Orchard
            # does not install; state them instead.
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                f"transformers=={transformers_version}",
            ],
        )
    version = str(info.registered_model_version)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    for key, value in {**(tags or {}), LAYOUT_TAG: LAYOUT}.items():
        client.set_model_version_tag(name, version, key, str(value))
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version


def find_version(tracking_uri: str, name: str, tag: str, value: str) -> str | None:
    """The version of `name` tagged `tag=value`, if one exists (newest first): how a
    retried registration finds the version its killed attempt already created."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    tagged = [v for v in versions if v.tags.get(tag) == value]
    return str(max(tagged, key=lambda v: int(v.version)).version) if tagged else None


def aliases(tracking_uri: str, name: str) -> dict[str, str]:
    """alias -> version of registered model `name` (empty when it is not registered)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return {}
    return {alias: str(version) for alias, version in model.aliases.items()}


def version_tag(tracking_uri: str, name: str, version: str, tag: str) -> str | None:
    """Tag `tag` of version `version` of registered model `name` (None when unset)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    return client.get_model_version(name, version).tags.get(tag)
