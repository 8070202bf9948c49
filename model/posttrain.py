"""What the TRL post-training steps (sft, reward, dpo, kto, grpo) share on the model side:
sampling their rows, the trainer arguments, loading a model and tokenizer, and saving the
result as a Hugging Face directory (`hf/`) that evaluation, registration and serving load.

Every trainer runs in fp32 on a CPU host (`use_cpu`, no bf16) and on the accelerator
elsewhere, and reports to MLflow when asked to (`tracking`). The step plumbing (their
config, inputs, MLflow run and entry) is `orchard/model_steps.py`: model/ never
orchestrates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from orchard.errors import OrchardError


class TrainingKnobs(Protocol):
    """The training fields of a post-training step's config (`TrainStepConfig`)."""

    steps: int
    lr: float
    batch_size: int
    grad_accum: int
    warmup_ratio: float
    seed: int
    logging_steps: int


def spread(rows: list[Any], limit: int) -> list[Any]:
    """At most `limit` rows evenly spaced over `rows` (all of them if they fit): a sample of
    a held-out file that covers every page and kind, since chat_data writes them in runs."""
    if len(rows) <= limit:
        return list(rows)
    return [rows[i * len(rows) // limit] for i in range(limit)]


def train_rows(rows: list[dict[str, Any]], config: TrainingKnobs) -> list[dict[str, Any]]:
    """The training rows `config.steps` can reach: a seeded random sample of steps × batch ×
    accumulation rows (all of them when there are fewer). The trainer's sampler shuffles
    with the same seed either way; this only spares tokenizing rows no step would see."""
    needed = config.steps * config.batch_size * config.grad_accum
    if len(rows) <= needed:
        return rows
    import random

    return random.Random(config.seed).sample(rows, needed)


def dataset(rows: list[dict[str, Any]], columns: tuple[str, ...]):
    import datasets
    from datasets import Dataset

    datasets.disable_progress_bars()  # one bar per map() in a job log says nothing
    return Dataset.from_list([{c: row[c] for c in columns} for row in rows])


def load_tokenizer(hf_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    if not getattr(tokenizer, "chat_template", None):
        raise OrchardError(f"the tokenizer in {hf_dir} has no chat template")
    return tokenizer


def load_causal_lm(hf_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)


def trainer_args(config: TrainingKnobs, work: Path, tracking: bool) -> dict[str, Any]:
    """Keyword arguments every TRL config class takes, from the step's config."""
    import torch

    on_gpu = torch.cuda.is_available()
    return {
        "output_dir": str(work / "trainer"),
        "max_steps": config.steps,
        "learning_rate": config.lr,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "lr_scheduler_type": "cosine",
        "warmup_steps": int(config.warmup_ratio * config.steps),
        "logging_steps": config.logging_steps,
        "seed": config.seed,
        "data_seed": config.seed,
        "use_cpu": not on_gpu,
        "bf16": on_gpu and torch.cuda.is_bf16_supported(),
        "save_strategy": "no",
        "report_to": ["mlflow"] if tracking else "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def save_model(model, tokenizer, out: Path) -> None:
    """`out/hf`: safetensors weights, the tokenizer with its chat template, and a
    generation config that stops at the end of a turn."""
    target = out / "hf"
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)


def logged(trainer, name: str) -> list[float]:
    """Every value of metric `name` the trainer logged, in order."""
    return [entry[name] for entry in trainer.state.log_history if name in entry]
