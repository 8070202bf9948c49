"""The training core under `ray_jobs/pretrain.py`: Megatron DDP, optimizer, LR schedule, step.

    training = build_training(get_preset("nano"), vocab_size, TrainConfig(total_steps=240))
    for batch in loader:                  # GPTDataset samples collated to [b, s] tensors
        metrics = training.train_step(batch)   # {"loss", "grad_norm", "lr", "tokens"}
    checkpoint = training.state_dict()    # model + optimizer + scheduler + step

Everything is Megatron-Core's own machinery: `DistributedDataParallel` for the gradient
buffers and their all-reduce, `get_megatron_optimizer` (Adam with decoupled weight decay,
gradient clipping), `OptimizerParamScheduler` (linear warmup, cosine decay to min_lr),
and the forward/backward schedule of `get_forward_backward_func`, which splits a batch
into micro-batches (gradient accumulation) and runs the pipeline stages when PP > 1.
The loss is the masked mean cross-entropy over every loss-mask token of the global batch
(`calculate_per_token_loss`: the gradient is divided by the token count across all
micro-batches and data-parallel ranks, not averaged per micro-batch).

`parallel_state` must be initialised (`model.distributed`) before `build_training`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
from megatron.core.distributed.finalize_model_grads import finalize_model_grads
from megatron.core.models.gpt import GPTModel
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.pipeline_parallel import get_forward_backward_func
from pydantic import BaseModel, ConfigDict, Field, model_validator

from model.cpu_compat import cuda_to_cpu
from model.distributed import seed_all
from model.gpt import build_gpt, check_parallel_state
from model.presets import ModelPreset
from orchard.errors import OrchardError


class TrainConfig(BaseModel):
    """Optimizer, schedule and batching of one pretraining run (per data-parallel rank)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lr: float = Field(6e-4, gt=0, description="Peak learning rate, reached after warmup.")
    min_lr: float = Field(6e-5, ge=0, description="Learning rate at the end of cosine decay.")
    weight_decay: float = Field(0.1, ge=0, description="Decoupled (AdamW) weight decay.")
    beta1: float = Field(0.9, gt=0, lt=1, description="Adam beta1.")
    beta2: float = Field(0.95, gt=0, lt=1, description="Adam beta2.")
    adam_eps: float = Field(1e-8, gt=0, description="Adam epsilon.")
    clip_grad: float = Field(1.0, ge=0, description="Global gradient-norm clip (0: none).")
    warmup_steps: int = Field(100, ge=0, description="Steps of linear warmup from 0 to lr.")
    total_steps: int = Field(1000, gt=0, description="Steps until lr reaches min_lr.")
    micro_batch_size: int = Field(
        8,
        gt=0,
        description="Samples per forward pass; a batch of b samples runs as "
        "b / micro_batch_size accumulated micro-batches.",
    )
    seed: int = Field(1234, description="Seed of the weight initialisation.")

    @model_validator(mode="after")
    def _schedule_fits(self) -> TrainConfig:
        if self.warmup_steps >= self.total_steps:
            raise ValueError(
                f"warmup_steps {self.warmup_steps} must be below total_steps {self.total_steps}"
            )
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr {self.min_lr} is above the peak lr {self.lr}")
        return self


def build_training(
    preset: ModelPreset,
    vocab_size: int,
    config: TrainConfig,
    *,
    bf16: bool = False,
    recompute: bool = False,
    init_state: Mapping[str, torch.Tensor] | None = None,
) -> Training:
    """Model (seeded with `config.seed`), Megatron DDP, optimizer and LR schedule.

    `init_state` (a GPTModel state dict of the same shape, e.g. an imported base model's
    `megatron/model.pt`) replaces the random initialisation: continued pretraining. It is
    loaded before the optimizer exists, so that bf16 master weights start from it too.
    `parallel_state` must be initialised with the preset's TP/PP sizes; every rank of a
    data-parallel group must call this with the same arguments.
    """
    check_parallel_state(preset)
    seed_all(config.seed)
    gpt = build_gpt(preset, vocab_size, bf16=bf16, recompute=recompute)
    if init_state is not None:
        try:
            gpt.load_state_dict(init_state, strict=True)
        except RuntimeError as error:  # missing, unexpected or mis-shaped tensors
            first = " ".join(str(error).split())[:300]
            raise OrchardError(
                f"the initial weights do not fit model {preset.name!r} with vocab size "
                f"{vocab_size} ({first}): initialise from the import the preset came from"
            ) from None
    model_config = gpt.config
    ddp = DistributedDataParallel(
        config=model_config,
        ddp_config=DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            overlap_grad_reduce=torch.cuda.is_available(),
            use_distributed_optimizer=False,
        ),
        module=gpt,
    )
    ddp.broadcast_params()  # identical replicas whatever each rank's RNG did
    with cuda_to_cpu():
        optimizer = get_megatron_optimizer(
            OptimizerConfig(
                optimizer="adam",
                lr=config.lr,
                min_lr=config.min_lr,
                weight_decay=config.weight_decay,
                adam_beta1=config.beta1,
                adam_beta2=config.beta2,
                adam_eps=config.adam_eps,
                clip_grad=config.clip_grad,
                bf16=bf16,
                params_dtype=model_config.params_dtype,
                use_distributed_optimizer=False,
            ),
            [ddp],
        )
    scheduler = OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=config.lr,
        min_lr=config.min_lr,
        lr_warmup_steps=config.warmup_steps,
        lr_decay_steps=config.total_steps,
        lr_decay_style="cosine",
        start_wd=config.weight_decay,
        end_wd=config.weight_decay,
        wd_incr_steps=config.total_steps,
        wd_incr_style="constant",
    )
    # The schedule finds these hooks on the model's config (Megatron-LM's wiring).
    model_config.no_sync_func = ddp.no_sync
    model_config.finalize_model_grads_func = finalize_model_grads
    model_config.grad_scale_func = optimizer.scale_loss
    return Training(preset, vocab_size, config, ddp, optimizer, scheduler)


class Training:
    """A model being trained: call `train_step` per batch, `state_dict` to checkpoint.

    Attributes: `preset`, `vocab_size`, `config`, `model` (the DDP-wrapped GPTModel),
    `gpt` (the bare GPTModel, this pipeline stage), `optimizer`, `scheduler`, `step`
    (optimizer steps taken).
    """

    def __init__(
        self,
        preset: ModelPreset,
        vocab_size: int,
        config: TrainConfig,
        model: DistributedDataParallel,
        optimizer,
        scheduler: OptimizerParamScheduler,
    ):
        self.preset, self.vocab_size, self.config = preset, vocab_size, config
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.step = 0
        self._device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")

    @property
    def gpt(self) -> GPTModel:
        return self.model.module

    def train_step(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """One optimizer step on `batch` (this data-parallel rank's share of the global batch).

        `batch` is what Megatron's GPTDataset yields, collated to `[b, s]` tensors:
        `tokens`, `labels`, `loss_mask`, `position_ids`, and optionally `attention_mask`
        (`[b, 1, s, s]`, True = masked out; absent means plain causal attention). `b` must
        be a multiple of `config.micro_batch_size`.

        Returns `loss` (masked mean cross-entropy over the global batch, before the
        update), `grad_norm` (before clipping), `lr` (used by this step) and `tokens`
        (tokens processed by all data-parallel ranks in this step). Same on every rank.
        """
        micro_batches = self._micro_batches(batch)
        self.model.train()
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()
        stats = self._forward_backward(micro_batches, forward_only=False)
        self.scheduler.step(increment=1)  # step n trains with the schedule's lr(n)
        with cuda_to_cpu():
            _, grad_norm, _ = self.optimizer.step()
        self.step += 1
        loss_sum, loss_tokens = stats.tolist()
        tokens = batch["tokens"].numel() * parallel_state.get_data_parallel_world_size()
        return {
            "loss": loss_sum / max(loss_tokens, 1.0),
            "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
            "lr": self.optimizer.param_groups[0]["lr"],
            "tokens": tokens,
        }

    @torch.no_grad()
    def eval_loss(self, batches: Iterable[Mapping[str, torch.Tensor]]) -> float:
        """Masked mean cross-entropy over every loss-mask token of `batches` (all DP ranks)."""
        self.model.eval()
        total = torch.zeros(2, dtype=torch.float64)
        try:
            for batch in batches:
                total += self._forward_backward(self._micro_batches(batch), forward_only=True)
        finally:
            self.model.train()
        if total[1] == 0:
            raise OrchardError("eval_loss got no tokens with loss_mask set: pass eval batches")
        return float(total[0] / total[1])

    def state_dict(self) -> dict[str, Any]:
        """A checkpoint: CPU copies of model, optimizer and scheduler state, and the step.

        `state["model"]` is the bare GPTModel's state dict (this pipeline stage, this TP
        shard): with TP = PP = 1 it is what `model.export.export_hf` reads.
        """
        with cuda_to_cpu():
            optimizer = self.optimizer.state_dict()
        return _to_cpu(
            {
                "model": self.gpt.state_dict(),
                "optimizer": optimizer,
                "scheduler": self.scheduler.state_dict(),
                "step": self.step,
                "preset": dataclasses.asdict(self.preset),
                "vocab_size": self.vocab_size,
            }
        )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from `state_dict()` output: same shape, parallel layout and vocabulary
        required. The LR schedule (warmup, decay steps, lr) comes from the checkpoint."""
        mine = dataclasses.asdict(self.preset) | {"vocab_size": self.vocab_size}
        # A field added to ModelPreset after the checkpoint was written has its default.
        defaults = {f.name: f.default for f in dataclasses.fields(ModelPreset)}
        saved = defaults | dict(state.get("preset", {})) | {"vocab_size": state.get("vocab_size")}
        differ = [k for k in mine if k != "name" and saved.get(k) != mine[k]]
        if differ:
            raise OrchardError(
                f"checkpoint of preset {saved.get('name')!r} does not fit this run's preset "
                f"{self.preset.name!r}: "
                + ", ".join(f"{k} {saved.get(k)} vs {mine[k]}" for k in differ)
                + ". Resume with the checkpoint's preset and tokenizer"
            )
        self.gpt.load_state_dict(state["model"], strict=True)
        with cuda_to_cpu():
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])

    def _micro_batches(self, batch: Mapping[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        missing = {"tokens", "labels", "loss_mask", "position_ids"} - set(batch)
        if missing:
            raise OrchardError(
                f"batch lacks {sorted(missing)}: pass GPTDataset samples collated to [b, s]"
            )
        tokens = batch["tokens"]
        if tokens.dim() != 2:
            raise OrchardError(f"batch tokens have shape {list(tokens.shape)}, expected [b, s]")
        b, mbs = tokens.size(0), self.config.micro_batch_size
        if b % mbs:
            raise OrchardError(f"batch of {b} samples is not a multiple of micro_batch_size {mbs}")
        top = int(torch.maximum(tokens.max(), batch["labels"].max()))
        if top >= self.vocab_size:
            raise OrchardError(
                f"token id {top} is outside the model's vocabulary of {self.vocab_size}: "
                "build the model with the tokenizer's vocab size"
            )
        keys = ["tokens", "labels", "loss_mask", "position_ids"]
        if batch.get("attention_mask") is not None:
            keys.append("attention_mask")
        moved = {k: batch[k].to(self._device, non_blocking=True) for k in keys}
        return [{k: v[i : i + mbs] for k, v in moved.items()} for i in range(0, b, mbs)]

    def _forward_backward(self, micro_batches: list[dict], *, forward_only: bool) -> torch.Tensor:
        """Megatron's schedule over the micro-batches; returns [loss sum, loss tokens] (CPU),
        summed over the pipeline's last stage and all data-parallel ranks."""
        first = micro_batches[0]["tokens"]
        with cuda_to_cpu():
            outputs = get_forward_backward_func()(
                forward_step_func=_forward_step,
                data_iterator=iter(micro_batches),
                model=self.model,
                num_microbatches=len(micro_batches),
                seq_length=first.size(1),
                micro_batch_size=first.size(0),
                forward_only=forward_only,
            )
        stats = torch.zeros(2, dtype=torch.float64, device=self._device)
        for out in outputs:  # empty except on the last pipeline stage
            stats += out["lm loss"].to(stats)
        if dist.get_world_size() > 1:
            dist.all_reduce(stats, group=parallel_state.get_pipeline_model_parallel_group())
            dist.all_reduce(stats, group=parallel_state.get_data_parallel_group())
        return stats.cpu()


def _forward_step(data_iterator, model):
    batch = next(data_iterator)
    output = model(
        batch["tokens"],
        batch["position_ids"],
        batch.get("attention_mask"),
        labels=batch["labels"],
    )
    return output, partial(_masked_loss, batch["loss_mask"])


def _masked_loss(loss_mask: torch.Tensor, per_token_loss: torch.Tensor):
    """Megatron's (loss, num_tokens, reported) triple: sums here, the division by the
    global token count happens on the gradients (`calculate_per_token_loss`)."""
    mask = loss_mask.reshape(-1).float()
    loss_sum = (per_token_loss.float().reshape(-1) * mask).sum()
    num_tokens = mask.sum().to(torch.int)
    return loss_sum, num_tokens, {"lm loss": torch.stack([loss_sum.detach(), mask.sum()])}


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, Mapping):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value
