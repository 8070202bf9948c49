"""The grpo step: online reinforcement learning of the chat model (TRL `GRPOTrainer`).

Inputs: one `chat_data` manifest, the policy to start from (normally `dpo`, else `sft`)
and the `reward` model. For each training question (`sft/train.jsonl`, the reference
answer withheld) the policy samples `num_generations` answers; each is scored by
- the reward model (TRL scores a sequence-classification model directly), and
- a verifiable reward: the share of the reference answer's key facts (dotted names,
  calls, identifiers, numbers) the answer states, or its ROUGE-L against the reference
  when the reference names none (`orchard.grading.grounded_reward`);
weighted by `reward_weights`. GRPO pushes the policy towards the answers that beat their
group's mean, with a KL pull (`beta`) towards the starting policy. This is the RLHF step:
the reward model stands in for people's preferences (RLAIF when it was trained on
judge-labelled pairs). Output: `hf/`. Metrics: mean reward over the first and last
logged steps, final KL.
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
    train_rows,
    trainer_args,
)
from orchard.grading import grounded_reward
from orchard.model_steps import TrainStepConfig, model_step, read_rows, split_inputs, tracked_run
from orchard.progress import training_progress_callback
from orchard.steps import Manifest, StepContext, StepOutput, StepSpec

log = logging.getLogger("orchard.grpo")


class GrpoConfig(TrainStepConfig):
    steps: int = Field(40, ge=1, description="Optimizer steps.")
    lr: float = Field(3e-5, gt=0, description="Peak learning rate (cosine decay, warmup).")
    batch_size: int = Field(
        8, ge=2, description="Completions per device per step (questions x generations)."
    )
    num_generations: int = Field(4, ge=2, description="Answers sampled per question.")
    max_completion_length: int = Field(48, ge=4, description="Tokens of a sampled answer.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    beta: float = Field(0.04, ge=0, description="KL pull towards the starting policy.")
    logging_steps: int = Field(1, ge=1, description="Steps between logged rewards.")
    reward_weights: tuple[float, float] = Field(
        (1.0, 1.0), description="Weights of the reward model and the verifiable reward."
    )


def key_fact_reward(completions, reference, **_) -> list[float]:
    """TRL reward function: the grounded reward of each completion against its reference."""
    return [
        grounded_reward(completion[-1]["content"], ref)
        for completion, ref in zip(completions, reference, strict=True)
    ]


def grpo(
    config: GrpoConfig, inputs: list[Manifest], ctx: StepContext, tracking_uri: str | None
) -> StepOutput:
    import torch
    from transformers import AutoModelForSequenceClassification
    from trl import GRPOConfig, GRPOTrainer

    chat, models = split_inputs("grpo", inputs, ["policy", "reward"])
    start = Path(models["policy"].path) / "hf"
    reward_dir = Path(models["reward"].path) / "hf"
    tokenizer = load_tokenizer(start)
    rows = [
        {"prompt": row["messages"][:-1], "reference": row["messages"][-1]["content"]}
        for row in train_rows(read_rows(chat, "sft/train.jsonl"), config)
    ]
    judge = AutoModelForSequenceClassification.from_pretrained(reward_dir, dtype=torch.float32)
    with tracked_run("grpo", ctx.key, tracking_uri) as run_id:
        args = GRPOConfig(
            **trainer_args(config, ctx.work, bool(run_id)),
            num_generations=config.num_generations,
            max_completion_length=config.max_completion_length,
            temperature=config.temperature,
            beta=config.beta,
            reward_weights=list(config.reward_weights),
        )
        trainer = GRPOTrainer(
            model=load_causal_lm(start),
            reward_funcs=[judge, key_fact_reward],
            args=args,
            train_dataset=dataset(rows, ("prompt", "reference")),
            processing_class=tokenizer,
            reward_processing_classes=[load_tokenizer(reward_dir), None],
            callbacks=[training_progress_callback()],
        )
        result = trainer.train()
        save_model(trainer.model, tokenizer, ctx.out)
    rewards = logged(trainer, "reward")
    metrics = {"train_loss": float(result.training_loss)}
    if rewards:
        metrics |= {"first_reward": float(rewards[0]), "last_reward": float(rewards[-1])}
    facts = logged(trainer, "rewards/key_fact_reward/mean")
    if facts:
        metrics |= {
            "first_key_fact_reward": float(facts[0]),
            "last_key_fact_reward": float(facts[-1]),
        }
    kl = logged(trainer, "kl")
    if kl:
        metrics["final_kl"] = float(kl[-1])
    return StepOutput(
        counts={"steps": config.steps, "questions": len(rows)},
        metrics=metrics,
        mlflow_run_id=run_id,
    )


STEP = StepSpec("grpo", GrpoConfig, default_name="chat", doc=__doc__)
run, main = model_step(STEP, grpo)


if __name__ == "__main__":
    sys.exit(main())
