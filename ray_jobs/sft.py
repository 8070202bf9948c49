"""The sft step: supervised fine-tuning of a pretrained model on the chat data (TRL).

Inputs: one `chat_data` manifest and one model (normally `pretrain`; any step with a causal
LM in `hf/`). TRL's `SFTTrainer` trains on `sft/train.jsonl` (conversations in the
`messages` format) rendered with the model's own chat template; the loss covers the
assistant tokens only (`assistant_only_loss`, from the template's `{% generation %}`
markers: the answer and its closing `<|endoftext|>`). Output: `hf/`, the fine-tuned model
with tokenizer and chat template. Metrics: `train_loss`, `heldout_loss` (on
`sft/heldout.jsonl`, entries never trained on), their difference from the base model's
held-out loss.

`method="lora"` trains low-rank adapters (PEFT `LoraConfig`) on the attention and MLP
projections instead of every weight: the base weights stay frozen, `hf/` is the base with
the adapters merged in (`merge_and_unload`, the same layout as a full fine-tune, so the
later stages and serving read it unchanged), and `adapter/` holds the adapter alone
(PEFT's `adapter_config.json` + `adapter_model.safetensors`), logged to the step's MLflow
run as its own artifact. Counts: `parameters`, `trainable_parameters`; metric
`trainable_share`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Literal

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
# The linear layers of a Llama block (and of Orchard's Megatron export, which writes one):
# attention q/k/v/o and the SwiGLU MLP's gate/up/down.
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_FIELDS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")
ADAPTER_DIR = "adapter"


class SftConfig(TrainStepConfig):
    steps: int = Field(300, ge=1, description="Optimizer steps.")
    lr: float = Field(5e-4, gt=0, description="Peak learning rate (cosine decay, warmup).")
    batch_size: int = Field(16, ge=1, description="Conversations per device per step.")
    heldout_examples: int = Field(
        256, ge=1, description="Held-out conversations of the before/after loss (spread)."
    )
    method: Literal["full", "lora"] = Field(
        "full", description="full: train every weight; lora: train low-rank adapters (PEFT)."
    )
    lora_r: int = Field(16, ge=1, description="LoRA rank (method=lora).")
    lora_alpha: float = Field(
        32, gt=0, description="LoRA scale numerator: updates are scaled by alpha / r."
    )
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    lora_target_modules: tuple[str, ...] = Field(
        LLAMA_PROJECTIONS,
        min_length=1,
        description="Names of the linear layers that get adapters (method=lora).",
    )

    def key_fields(self) -> dict[str, Any]:
        # A full fine-tune ignores the LoRA fields: leave them (and the method) out of its
        # key, so outputs made before LoRA existed keep their keys.
        fields = super().key_fields()
        if self.method == "full":
            for name in ("method", *LORA_FIELDS):
                fields.pop(name)
        return fields


def lora_config(config: SftConfig):
    """PEFT's `LoraConfig` of the step's LoRA fields (None for a full fine-tune)."""
    if config.method != "lora":
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, all) parameters of `model`; with adapters, all = base + adapters."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def sft_trainer(config: SftConfig, chat: Manifest, base: Path, work: Path, tracking: bool):
    """The configured `SFTTrainer` (built apart from training so tests can inspect it)."""
    from trl import SFTConfig, SFTTrainer

    tokenizer = load_tokenizer(base)
    args = SFTConfig(
        **trainer_args(config, work, tracking),
        max_length=config.max_length,
        assistant_only_loss=True,
        packing=False,
        # Batches of conversations of similar length (randomly permuted, then sorted within
        # groups of a few batches): padding to a batch's longest row wasted 43 % of the
        # tokens of the adapted model's 256 SFT rows; grouped, 20 % (docs/posttraining.md).
        train_sampling_strategy="group_by_length",
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
        peft_config=lora_config(config),
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
        trainable, total = parameter_counts(trainer.model)
        model = trainer.model
        if config.method == "lora":
            model.save_pretrained(ctx.out / ADAPTER_DIR, safe_serialization=True)
            model = model.merge_and_unload()  # base + (alpha / r) * B @ A, plain Llama again
        save_model(model, trainer.processing_class, ctx.out)
    losses = logged(trainer, "loss")
    return StepOutput(
        counts={
            "steps": config.steps,
            "conversations": len(trainer.train_dataset),
            "parameters": total,
            "trainable_parameters": trainable,
        },
        metrics={
            "train_loss": float(result.training_loss),
            "final_loss": float(losses[-1]) if losses else float(result.training_loss),
            "base_heldout_loss": float(before),
            "heldout_loss": float(after),
            "trainable_share": trainable / total,
        },
        artifacts=[ADAPTER_DIR] if config.method == "lora" else [],
        mlflow_run_id=run_id,
    )


STEP = StepSpec("sft", SftConfig, default_name="chat", doc=__doc__)
run, main = model_step(STEP, sft)


if __name__ == "__main__":
    sys.exit(main())
