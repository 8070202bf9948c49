"""The sft step with `method="lora"` on the tiny random Llama of test_posttrain: only the
adapters train, the published `hf/` is the merged model (a plain Llama that loads and
generates, equal to base + adapter), the adapter is kept beside it and logged to the step's
MLflow run, and bad LoRA settings are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchard.settings import Settings
from tests.unit.test_posttrain import chat_data, fixture, generates, pretrain

LORA = {"method": "lora", "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sft-lora")
    settings = Settings(
        home=tmp / "home", data_root=str(tmp / "data"), mlflow_tracking_uri=f"sqlite:///{tmp}/m.db"
    )
    return settings, fixture(tmp, "chat_data", chat_data), fixture(tmp, "pretrain", pretrain)


@pytest.fixture(scope="module")
def lora_done(env):
    from ray_jobs import sft

    settings, chat, base = env
    config = sft.SftConfig(
        steps=8, lr=1e-2, batch_size=4, warmup_ratio=0, logging_steps=1, max_length=128, **LORA
    )
    return sft.run(config, [chat, base], settings)


def weights(hf_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(hf_dir / "model.safetensors")


def test_lora_trains_the_adapters_only_and_leaves_the_base_weights(env, tmp_path):
    from ray_jobs.sft import SftConfig, sft_trainer

    _, chat, base = env
    config = SftConfig(steps=3, lr=1e-2, batch_size=4, warmup_ratio=0, max_length=128, **LORA)
    trainer = sft_trainer(config, chat, Path(base.path) / "hf", tmp_path, False)
    trainer.train()
    params = dict(trainer.model.named_parameters())
    trained = {n for n, p in params.items() if p.requires_grad}
    assert trained and all(".lora_A." in n or ".lora_B." in n for n in trained)
    # every projection of every layer got an adapter
    layers = trainer.model.get_base_model().config.num_hidden_layers
    assert len(trained) == 2 * 7 * layers
    assert any(params[n].abs().sum() > 0 for n in trained if ".lora_B." in n)  # B starts at 0
    # the frozen base is bit-for-bit the pretrained one
    before = weights(Path(base.path) / "hf")
    state = trainer.model.get_base_model().state_dict()
    frozen = {n.replace(".base_layer", ""): t for n, t in state.items() if "lora_" not in n}
    assert frozen.keys() == before.keys()
    assert all((frozen[n] == before[n]).all() for n in before)


def test_lora_publishes_the_merged_model_and_keeps_the_adapter(env, lora_done):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, _, base = env
    out, base_hf = Path(lora_done.path), Path(base.path) / "hf"
    merged = weights(out / "hf")
    assert merged.keys() == weights(base_hf).keys()  # a plain Llama: no adapter tensors
    assert any(not (merged[n] == t).all() for n, t in weights(base_hf).items())
    generates(out / "hf")
    assert lora_done.metrics["heldout_loss"] < lora_done.metrics["base_heldout_loss"]

    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["peft_type"]) == (8, 16, "LORA")
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    # base + adapter (PEFT, unmerged) computes what the merged model does
    ids = torch.tensor([[5, 17, 42, 99, 3, 250, 7]])
    with torch.no_grad():
        plain = AutoModelForCausalLM.from_pretrained(out / "hf", dtype=torch.float32)
        with_adapter = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(base_hf, dtype=torch.float32), out / "adapter"
        )
        diff = (plain(ids).logits - with_adapter(ids).logits).abs().max().item()
    assert diff < 1e-3, diff

    assert lora_done.config["method"] == "lora" and lora_done.config["lora_r"] == 8
    total, trainable = lora_done.counts["parameters"], lora_done.counts["trainable_parameters"]
    assert 0 < trainable < total
    assert lora_done.metrics["trainable_share"] == pytest.approx(trainable / total)


def test_the_adapter_is_an_artifact_of_the_steps_mlflow_run(env, lora_done):
    from mlflow import MlflowClient

    settings, _, _ = env
    client = MlflowClient(tracking_uri=settings.mlflow_uri)
    run_id = lora_done.mlflow_run_id
    assert run_id
    files = {a.path for a in client.list_artifacts(run_id, "adapter")}
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= files
    assert client.get_run(run_id).data.params["method"] == "lora"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"method": "lora", "lora_r": 0}, "error: bad lora_r in --config: "),
        ({"method": "qlora"}, "error: bad method in --config: Input should be 'full' or 'lora'"),
        ({"method": "lora", "lora_target_modules": []}, "error: bad lora_target_modules"),
    ],
)
def test_bad_lora_settings_are_refused_in_one_line(config, message, capsys):
    from ray_jobs import sft

    assert sft.main(["--config", json.dumps(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_lora_settings_change_the_key_of_lora_runs_only():
    from ray_jobs.sft import SftConfig

    full = SftConfig().key_fields()
    assert "method" not in full and not any(name.startswith("lora_") for name in full)
    assert SftConfig(lora_r=4).key_fields() == full  # ignored by a full fine-tune
    lora = SftConfig(method="lora").key_fields()
    assert lora["method"] == "lora" and lora != SftConfig(method="lora", lora_r=4).key_fields()
