"""The TRL post-training steps (sft, reward, dpo, grpo) on a tiny random Llama: assistant-only
loss masking, each step writes an `hf/` that loads and generates (or scores), training moves
the weights, re-runs are skipped, and inputs that do not fit are refused."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from orchard.errors import OrchardError
from orchard.settings import Settings
from orchard.steps import Manifest, StepConfig, StepOutput, run_step
from serving.tiny import build_tiny_chat_model

QA = [
    ("What does json.dumps do?", "json.dumps serializes obj to a JSON str."),
    ("What is sort_keys for?", "sort_keys sorts the keys."),
    ("How many spaces does indent=4 give?", "indent=4 gives 4 spaces."),
    ("Name a pear.", "A pear is a fruit."),
]
SYSTEM = {"role": "system", "content": "Be brief."}
TIMES: dict[str, float] = {}


class UntrackedSettings(Settings):
    """Settings with no MLflow server at all (plain Settings fall back to the stack's)."""

    @property
    def mlflow_uri(self) -> str | None:
        return self.mlflow_tracking_uri


class Fixture(StepConfig):
    label: str


def fixture(tmp: Path, step: str, body) -> Manifest:
    return run_step(
        step=step, name="f", config=Fixture(label=step), data_root=tmp, body=body, inputs=[]
    )


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def conversations() -> list[dict]:
    return [
        {
            "id": f"c{i}",
            "messages": [
                SYSTEM,
                {"role": "user", "content": q},
                {"role": "assistant", "content": a},
            ],
        }
        for i, (q, a) in enumerate(QA)
    ]


def pairs() -> list[dict]:
    return [
        {
            "id": f"p{i}",
            "prompt": [{"role": "user", "content": q}],
            "chosen": [{"role": "assistant", "content": a}],
            "rejected": [{"role": "assistant", "content": "I do not know."}],
            "negative": "unhelpful",
        }
        for i, (q, a) in enumerate(QA)
    ]


def chat_data(ctx):
    # The same few rows repeated: a tiny model can fit them in a few steps.
    _write(ctx.out / "sft" / "train.jsonl", conversations() * 2)
    _write(ctx.out / "sft" / "heldout.jsonl", conversations())
    _write(ctx.out / "preference" / "train.jsonl", pairs() * 2)
    _write(ctx.out / "preference" / "heldout.jsonl", pairs())
    return StepOutput()


def pretrain(ctx):
    build_tiny_chat_model(ctx.out / "hf", seed=3, max_context=256)
    return StepOutput()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("posttrain")
    settings = UntrackedSettings(home=tmp / "home", data_root=str(tmp))
    return settings, {
        "chat_data": fixture(tmp, "chat_data", chat_data),
        "pretrain": fixture(tmp, "pretrain", pretrain),
    }


@pytest.fixture(scope="module")
def sft_done(env):
    from ray_jobs import sft

    settings, m = env
    config = sft.SftConfig(
        steps=5, lr=2e-3, batch_size=4, warmup_ratio=0, logging_steps=1, max_length=128
    )
    started = time.monotonic()
    done = sft.run(config, [m["chat_data"], m["pretrain"]], settings)
    TIMES["sft"] = time.monotonic() - started
    return config, done


@pytest.fixture(scope="module")
def reward_done(env, sft_done):
    from ray_jobs import reward

    settings, m = env
    config = reward.RewardConfig(
        steps=3, lr=1e-3, batch_size=4, warmup_ratio=0, logging_steps=1, max_length=128
    )
    started = time.monotonic()
    done = reward.run(config, [m["chat_data"], sft_done[1]], settings)
    TIMES["reward"] = time.monotonic() - started
    return done


def assistant_loss(hf_dir: Path, rows: list[dict]) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    total, count = 0.0, 0
    for row in rows:
        enc = tokenizer.apply_chat_template(
            row["messages"], return_dict=True, return_assistant_tokens_mask=True
        )
        ids, mask = torch.tensor([enc["input_ids"]]), torch.tensor(enc["assistant_masks"])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1]
        scored = mask[1:].bool()
        total += torch.nn.functional.cross_entropy(
            logits[scored], ids[0, 1:][scored], reduction="sum"
        ).item()
        count += int(scored.sum())
    return total / count


def generates(hf_dir: Path) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    assert tokenizer.chat_template and "generation" in tokenizer.chat_template
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    return tokenizer.decode(out[0])


def weights_differ(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    return any(not (wa[k] == wb[k]).all() for k in wa)


def test_only_assistant_tokens_are_trained_on(env, tmp_path):
    from ray_jobs.sft import SftConfig, sft_trainer

    _, m = env
    config = SftConfig(steps=1, batch_size=2, max_length=128)
    base = Path(m["pretrain"].path) / "hf"
    trainer = sft_trainer(config, m["chat_data"], base, tmp_path, False)
    tokenizer = trainer.processing_class
    batch = next(iter(trainer.get_train_dataloader()))
    eos = tokenizer.eos_token_id
    seen = set()
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), strict=True):
        kept = [i for i, lab in zip(ids, labels, strict=True) if lab != -100]
        assert all(lab in (-100, i) for i, lab in zip(ids, labels, strict=True))
        text = tokenizer.decode(kept)
        answer = next(a for _, a in QA if a in text)
        seen.add(answer)
        assert text == answer + tokenizer.eos_token  # the answer and its closing EOS, only
        assert kept[-1] == eos
    assert seen and len(batch["input_ids"]) == 2


def test_length_grouped_batches_train_every_selected_conversation_once(env, tmp_path):
    from ray_jobs.sft import SftConfig, sft_trainer

    _, m = env
    config = SftConfig(steps=4, batch_size=2, max_length=128)
    base = Path(m["pretrain"].path) / "hf"
    trainer = sft_trainer(config, m["chat_data"], base, tmp_path, False)
    expected = sorted(tuple(row["input_ids"]) for row in trainer.train_dataset)
    pad = trainer.processing_class.pad_token_id
    seen = []
    for batch in trainer.get_train_dataloader():
        for ids, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist(),
                             strict=True):  # fmt: skip
            seen.append(tuple(i for i, keep in zip(ids, mask, strict=True) if keep))
    assert sorted(seen) == expected and pad is not None


def test_sft_trains_on_assistant_turns_and_writes_a_chat_model(env, sft_done, monkeypatch):
    import trl

    from ray_jobs import sft

    settings, m = env
    config, done = sft_done
    hf = Path(done.path) / "hf"
    assert {"train_loss", "heldout_loss"} <= done.metrics.keys()
    generates(hf)
    rows = conversations()
    assert assistant_loss(hf, rows) < assistant_loss(Path(m["pretrain"].path) / "hf", rows)
    # The same config and inputs: the finished manifest, no second training run.
    monkeypatch.setattr(trl, "SFTTrainer", lambda *a, **k: pytest.fail("trained again"))
    assert sft.run(config, [m["chat_data"], m["pretrain"]], settings) == done


def test_the_trainer_logs_into_the_steps_mlflow_run(env, tmp_path, monkeypatch):
    """One MLflow run per step: the trainer's loss curve, the step's params and manifest;
    the MLflow variables the trainer reads are set for the step only."""
    from mlflow import MlflowClient

    from ray_jobs import sft

    _, m = env
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = Settings(
        home=tmp_path / "home", data_root=str(tmp_path / "data"), mlflow_tracking_uri=uri
    )
    config = sft.SftConfig(steps=2, batch_size=4, max_length=128, logging_steps=1)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "someone-elses")
    done = sft.run(config, [m["chat_data"], m["pretrain"]], settings)
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert os.environ["MLFLOW_EXPERIMENT_NAME"] == "someone-elses"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("orchard-sft")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == done.mlflow_run_id
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 2
    assert "heldout_loss" in run.data.metrics
    assert "manifest.json" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_reward_model_scores_and_reports_accuracy(reward_done):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    hf = Path(reward_done.path) / "hf"
    for name in ("heldout_accuracy", "train_accuracy"):
        assert 0.0 <= reward_done.metrics[name] <= 1.0
    tokenizer = AutoTokenizer.from_pretrained(hf)
    model = AutoModelForSequenceClassification.from_pretrained(hf, dtype=torch.float32)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tokenizer.pad_token_id
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        tokenize=False,
    )
    with torch.no_grad():
        logits = model(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits
    assert logits.shape == (1, 1) and torch.isfinite(logits).all()


@pytest.mark.parametrize("labels", ["reference", "judge"])
def test_dpo_moves_the_sft_weights(env, sft_done, reward_done, labels):
    from ray_jobs import dpo

    settings, m = env
    config = dpo.DpoConfig(
        steps=2,
        lr=1e-3,
        batch_size=4,
        max_length=128,
        labels=labels,
        judge_max_new_tokens=8,
        logging_steps=1,
    )
    inputs = [m["chat_data"], sft_done[1]] + ([reward_done] if labels == "judge" else [])
    started = time.monotonic()
    done = dpo.run(config, inputs, settings)
    TIMES[f"dpo-{labels}"] = time.monotonic() - started
    assert "train_loss" in done.metrics
    generates(Path(done.path) / "hf")
    assert weights_differ(Path(done.path) / "hf", Path(sft_done[1].path) / "hf")


def test_grpo_moves_the_policy_with_rm_and_key_fact_rewards(env, sft_done, reward_done):
    from ray_jobs import grpo

    settings, m = env
    config = grpo.GrpoConfig(
        steps=2, lr=1e-3, batch_size=4, num_generations=4, max_completion_length=8, logging_steps=1
    )
    started = time.monotonic()
    done = grpo.run(config, [m["chat_data"], sft_done[1], reward_done], settings)
    TIMES["grpo"] = time.monotonic() - started
    assert {"first_reward", "last_reward"} <= done.metrics.keys()
    generates(Path(done.path) / "hf")
    assert weights_differ(Path(done.path) / "hf", Path(sft_done[1].path) / "hf")
    print("step seconds:", {k: round(v, 1) for k, v in TIMES.items()})


def test_inputs_that_do_not_fit_are_refused(env, sft_done):
    from ray_jobs import dpo, grpo, reward, sft

    settings, m = env
    with pytest.raises(OrchardError, match="one chat_data manifest"):
        sft.run(sft.SftConfig(steps=1), [m["pretrain"]], settings)
    with pytest.raises(OrchardError, match="one chat_data manifest"):
        reward.run(reward.RewardConfig(steps=1), [m["chat_data"], m["chat_data"]], settings)
    with pytest.raises(OrchardError, match="one model per role"):
        dpo.run(dpo.DpoConfig(steps=1, labels="judge"), [m["chat_data"], sft_done[1]], settings)
    with pytest.raises(OrchardError, match="one model per role"):
        grpo.run(grpo.GrpoConfig(steps=1), [m["chat_data"], sft_done[1]], settings)


def test_trainers_tokenize_only_the_rows_their_steps_reach():
    from model.posttrain import spread, train_rows
    from orchard.model_steps import TrainStepConfig

    rows = [{"id": i} for i in range(1000)]
    config = TrainStepConfig(steps=10, batch_size=4, grad_accum=2)
    sample = train_rows(rows, config)
    assert len(sample) == 80 and len({row["id"] for row in sample}) == 80
    assert train_rows(rows, config) == sample  # seeded: a retried step trains on the same
    assert train_rows(rows, config.model_copy(update={"seed": 1})) != sample
    # not the head of the file, which chat_data writes page by page
    assert max(row["id"] for row in sample) > 500
    assert train_rows(rows[:50], config) == rows[:50]
    assert [row["id"] for row in spread(rows, 4)] == [0, 250, 500, 750]
