"""The reward step: a reward model trained on the chat data's preference pairs (TRL).

Inputs: one `chat_data` manifest and one model (normally `sft`) whose weights start the
reward model: a `LlamaForSequenceClassification` with one score head. TRL's
`RewardTrainer` trains it on `preference/train.jsonl` (the grounded answer chosen over a
hard negative: another entry's answer, a truncated answer, the base model's own sample).
Output: `hf/`, the reward model with tokenizer and chat template, which evaluation uses
for win rates and GRPO/DPO-with-judge as a judge. Metrics: pairwise accuracy on the
training pairs and on `preference/heldout.jsonl` (entries never trained on), ties half.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from pydantic import Field

from model.posttrain import (
    dataset,
    load_tokenizer,
    logged,
    save_model,
    spread,
    train_rows,
    trainer_args,
)
from orchard.model_steps import TrainStepConfig, model_step, read_rows, split_inputs, tracked_run
from orchard.progress import training_progress_callback
from orchard.steps import Manifest, StepContext, StepOutput, StepSpec

log = logging.getLogger("orchard.reward")
COLUMNS = ("prompt", "chosen", "rejected")


class RewardConfig(TrainStepConfig):
    steps: int = Field(150, ge=1, description="Optimizer steps.")
    lr: float = Field(3e-4, gt=0, description="Peak learning rate (cosine decay, warmup).")
    batch_size: int = Field(8, ge=1, description="Preference pairs per device per step.")
    accuracy_pairs: int = Field(
        256, ge=1, description="Training pairs scored for the training accuracy."
    )
    heldout_pairs: int = Field(
        512, ge=1, description="Held-out pairs scored for the held-out accuracy (spread)."
    )


def score(model, tokenizer, prompt: list[dict], answer: list[dict], max_length: int) -> float:
    import torch

    text = tokenizer.apply_chat_template([*prompt, *answer], tokenize=False)
    ids = tokenizer(
        text, return_tensors="pt", add_special_tokens=False, truncation=True, max_length=max_length
    )
    with torch.no_grad():
        return float(model(**ids).logits[0, 0])


def pairwise_accuracy(model, tokenizer, rows: list[dict], max_length: int) -> float:
    model.eval()
    hits = 0.0
    for row in rows:
        chosen = score(model, tokenizer, row["prompt"], row["chosen"], max_length)
        rejected = score(model, tokenizer, row["prompt"], row["rejected"], max_length)
        hits += 1.0 if chosen > rejected else 0.5 if chosen == rejected else 0.0
    return hits / len(rows)


def reward(
    config: RewardConfig, inputs: list[Manifest], ctx: StepContext, tracking_uri: str | None
) -> StepOutput:
    import torch
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig as TrlRewardConfig
    from trl import RewardTrainer

    chat, models = split_inputs("reward", inputs, ["policy"])
    base = Path(models["policy"].path) / "hf"
    tokenizer = load_tokenizer(base)
    train = train_rows(read_rows(chat, "preference/train.jsonl"), config)
    heldout = spread(read_rows(chat, "preference/heldout.jsonl"), config.heldout_pairs)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=1, dtype=torch.float32
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    with tracked_run("reward", ctx.key, tracking_uri) as run_id:
        args = TrlRewardConfig(
            **trainer_args(config, ctx.work, bool(run_id)), max_length=config.max_length
        )
        trainer = RewardTrainer(
            model=model,
            args=args,
            train_dataset=dataset(train, COLUMNS),
            processing_class=tokenizer,
            callbacks=[training_progress_callback()],
        )
        result = trainer.train()
        metrics = {
            "train_loss": float(result.training_loss),
            "heldout_accuracy": pairwise_accuracy(
                trainer.model, tokenizer, heldout, config.max_length
            ),
            "train_accuracy": pairwise_accuracy(
                trainer.model, tokenizer, train[: config.accuracy_pairs], config.max_length
            ),
        }
        if run_id:
            import mlflow

            mlflow.log_metrics(metrics)
        log.info("reward model: %s", metrics)
        save_model(trainer.model, tokenizer, ctx.out)
    accuracies = logged(trainer, "accuracy")
    if accuracies:
        metrics["final_batch_accuracy"] = float(accuracies[-1])
    return StepOutput(
        counts={"steps": config.steps, "pairs": len(train), "heldout_pairs": len(heldout)},
        metrics=metrics,
        mlflow_run_id=run_id,
    )


STEP = StepSpec("reward", RewardConfig, default_name="rm", doc=__doc__)
run, main = model_step(STEP, reward)


if __name__ == "__main__":
    sys.exit(main())
