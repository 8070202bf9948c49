"""The sft step: supervised fine-tuning of a pretrained model on the chat data (TRL).

Inputs: one `chat_data` manifest and one model (normally `pretrain`; any step with a causal
LM in `hf/`). TRL's `SFTTrainer` trains on `sft/train.jsonl` (conversations in the
`messages` format) rendered with the model's own chat template; the loss covers the
assistant tokens only (`assistant_only_loss`, from the template's `{% generation %}`
markers: the answer and its closing `<|endoftext|>`). Output: `hf/`, the fine-tuned model
with tokenizer and chat template. Metrics: `train_loss`, `heldout_loss` (on
`sft/heldout.jsonl`, entries never trained on), their difference from the base model's
held-out loss.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from pydantic import Field

from model.posttrain import (
    dataset,
    load_causal_lm,
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

log = logging.getLogger("orchard.sft")
COLUMNS = ("messages",)


class SftConfig(TrainStepConfig):
    steps: int = Field(300, ge=1, description="Optimizer steps.")
    lr: float = Field(5e-4, gt=0, description="Peak learning rate (cosine decay, warmup).")
    batch_size: int = Field(16, ge=1, description="Conversations per device per step.")
    heldout_examples: int = Field(
        256, ge=1, description="Held-out conversations of the before/after loss (spread)."
    )


def sft_trainer(config: SftConfig, chat: Manifest, base: Path, work: Path, tracking: bool):
    """The configured `SFTTrainer` (built apart from training so tests can inspect it)."""
    from trl import SFTConfig, SFTTrainer

    tokenizer = load_tokenizer(base)
    args = SFTConfig(
        **trainer_args(config, work, tracking),
        max_length=config.max_length,
        assistant_only_loss=True,
        packing=False,
        eval_strategy="no",
        per_device_eval_batch_size=config.batch_size,
    )
    return SFTTrainer(
        model=load_causal_lm(base),
        args=args,
        train_dataset=dataset(train_rows(read_rows(chat, "sft/train.jsonl"), config), COLUMNS),
        eval_dataset=dataset(
            spread(read_rows(chat, "sft/heldout.jsonl"), config.heldout_examples), COLUMNS
        ),
        processing_class=tokenizer,
        callbacks=[training_progress_callback()],
    )


def sft(
    config: SftConfig, inputs: list[Manifest], ctx: StepContext, tracking_uri: str | None
) -> StepOutput:
    chat, models = split_inputs("sft", inputs, ["policy"])
    base = Path(models["policy"].path) / "hf"
    with tracked_run("sft", ctx.key, tracking_uri) as run_id:
        trainer = sft_trainer(config, chat, base, ctx.work, bool(run_id))
        before = trainer.evaluate()["eval_loss"]
        log.info("held-out loss of the base model: %.4f", before)
        result = trainer.train()
        after = trainer.evaluate()["eval_loss"]
        log.info("held-out loss after %d steps: %.4f", config.steps, after)
        save_model(trainer.model, trainer.processing_class, ctx.out)
    losses = logged(trainer, "loss")
    return StepOutput(
        counts={"steps": config.steps, "conversations": len(trainer.train_dataset)},
        metrics={
            "train_loss": float(result.training_loss),
            "final_loss": float(losses[-1]) if losses else float(result.training_loss),
            "base_heldout_loss": float(before),
            "heldout_loss": float(after),
        },
        mlflow_run_id=run_id,
    )


STEP = StepSpec("sft", SftConfig, default_name="chat", doc=__doc__)
run, main = model_step(STEP, sft)


if __name__ == "__main__":
    sys.exit(main())
