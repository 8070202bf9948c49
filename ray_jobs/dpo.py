"""The dpo step: direct preference optimisation of the SFT model (TRL).

Inputs: one `chat_data` manifest, the policy to start from (normally `sft`, which is also
the frozen reference model) and, for `labels="judge"`, the `reward` model. TRL's
`DPOTrainer` trains on preference pairs:
- `labels="reference"` (default): the chat data's pairs, the grounded answer chosen over a
  hard negative;
- `labels="judge"` (RLAIF): no human or reference labels. For `judge_prompts` training
  questions the policy samples two answers and the reward model, as judge, picks the one
  it scores higher as chosen; pairs the judge cannot tell apart are dropped.
Output: `hf/`. Metrics: final loss, reward accuracy and margin as TRL logs them.

From users' feedback (the `orchard_feedback` loop): a `feedback` manifest among the inputs
adds its pairs (`preference/train.jsonl`, the replaced or thumbed-down answer rejected),
mixed with `feedback_ratio` of the chat data's own pairs per feedback pair (a seeded
sample; 0: feedback only), and the policy is normally the current champion's model
(`from_champion` records which version). Counts `feedback_pairs` and `original_pairs`;
facts `feedback_version` and `from_champion`; the step's MLflow run records the feedback
set as a dataset input.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Literal

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
from orchard.errors import OrchardError
from orchard.model_steps import TrainStepConfig, model_step, read_rows, split_inputs, tracked_run
from orchard.progress import training_progress_callback
from orchard.steps import Manifest, StepContext, StepOutput, StepSpec

log = logging.getLogger("orchard.dpo")
COLUMNS = ("prompt", "chosen", "rejected")
FEEDBACK = "feedback"  # the step of orchard_feedback's preference sets


class DpoConfig(TrainStepConfig):
    steps: int = Field(100, ge=1, description="Optimizer steps.")
    lr: float = Field(5e-5, gt=0, description="Peak learning rate (cosine decay, warmup).")
    batch_size: int = Field(8, ge=1, description="Preference pairs per device per step.")
    beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference.")
    labels: Literal["reference", "judge"] = Field(
        "reference", description="reference: the chat data's pairs; judge: RLAIF pairs."
    )
    judge_prompts: int = Field(128, ge=1, description="Questions the judge labels.")
    judge_max_new_tokens: int = Field(64, ge=1, description="Length of a judged answer.")
    feedback_ratio: float = Field(
        1.0,
        ge=0,
        description="With a feedback input: the chat data's own pairs mixed in per feedback "
        "pair (0: feedback only).",
    )
    from_champion: str | None = Field(
        None, description="The registry version the policy is (`orchard-chat/3`): lineage."
    )


def judge_pairs(config: DpoConfig, policy, tokenizer, reward_dir: Path, rows: list[dict]):
    """RLAIF: two sampled answers per question, the reward model's favourite chosen."""
    import torch
    from transformers import AutoModelForSequenceClassification

    judge = AutoModelForSequenceClassification.from_pretrained(
        reward_dir, dtype=torch.float32
    ).eval()
    judge_tokenizer = load_tokenizer(reward_dir)
    torch.manual_seed(config.seed)
    tokenizer.padding_side = "left"
    pairs = []
    prompts = [row["messages"][:-1] for row in rows[: config.judge_prompts]]
    for start in range(0, len(prompts), config.batch_size):
        batch = prompts[start : start + config.batch_size]
        texts = [
            tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
            for p in batch
        ]
        encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = policy.generate(
                **encoded,
                do_sample=True,
                temperature=1.0,
                num_return_sequences=2,
                max_new_tokens=config.judge_max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        answers = tokenizer.batch_decode(
            out[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True
        )
        for i, prompt in enumerate(batch):
            a, b = (answers[2 * i].strip(), answers[2 * i + 1].strip())
            scored = []
            for answer in (a, b):
                text = judge_tokenizer.apply_chat_template(
                    [*prompt, {"role": "assistant", "content": answer}], tokenize=False
                )
                ids = judge_tokenizer(text, return_tensors="pt", add_special_tokens=False)
                with torch.no_grad():
                    scored.append(float(judge(**ids).logits[0, 0]))
            if a == b or scored[0] == scored[1]:
                continue
            chosen, rejected = (a, b) if scored[0] > scored[1] else (b, a)
            pairs.append(
                {
                    "prompt": prompt,
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )
    tokenizer.padding_side = "right"
    policy.train()
    if not pairs:
        raise OrchardError("the judge could not tell any two sampled answers apart")
    return pairs


def dpo(
    config: DpoConfig, inputs: list[Manifest], ctx: StepContext, tracking_uri: str | None
) -> StepOutput:
    from trl import DPOConfig, DPOTrainer

    judged = config.labels == "judge"
    feedback = [m for m in inputs if m.step == FEEDBACK]
    if len(feedback) > 1 or (feedback and judged):
        raise OrchardError(
            "dpo takes at most one feedback manifest, and only with labels=reference; got "
            f"{[m.step for m in inputs]}"
        )
    inputs = [m for m in inputs if m.step != FEEDBACK]
    chat, models = split_inputs("dpo", inputs, ["policy", "reward"] if judged else ["policy"])
    start = Path(models["policy"].path) / "hf"
    tokenizer = load_tokenizer(start)
    policy = load_causal_lm(start)
    if judged:
        rows = judge_pairs(
            config,
            policy,
            tokenizer,
            Path(models["reward"].path) / "hf",
            read_rows(chat, "sft/train.jsonl"),
        )
        log.info("the judge labelled %d pairs", len(rows))
    elif feedback:
        rows, mixed = feedback_mix(config, feedback[0], read_rows(chat, "preference/train.jsonl"))
        rows = train_rows(rows, config)
    else:
        rows = train_rows(read_rows(chat, "preference/train.jsonl"), config)
    with tracked_run("dpo", ctx.key, tracking_uri) as run_id:
        if feedback and run_id:
            log_feedback_input(feedback[0])
        args = DPOConfig(
            **trainer_args(config, ctx.work, bool(run_id)),
            beta=config.beta,
            max_length=config.max_length,
        )
        trainer = DPOTrainer(
            model=policy,
            ref_model=load_causal_lm(start),
            args=args,
            train_dataset=dataset(rows, COLUMNS),
            processing_class=tokenizer,
            callbacks=[training_progress_callback()],
        )
        result = trainer.train()
        save_model(trainer.model, tokenizer, ctx.out)
    metrics = {"train_loss": float(result.training_loss)}
    for name in ("rewards/accuracies", "rewards/margins"):
        values = logged(trainer, name)
        if values:
            metrics[f"final_{name.replace('/', '_')}"] = float(values[-1])
    counts, facts = {"steps": config.steps, "pairs": len(rows)}, {}
    if feedback:
        counts |= mixed
        facts = {"feedback_version": feedback[0].key, "from_champion": config.from_champion or ""}
    return StepOutput(counts=counts, metrics=metrics, facts=facts, mlflow_run_id=run_id)


def feedback_mix(
    config: DpoConfig, feedback: Manifest, original: list[dict]
) -> tuple[list[dict], dict[str, int]]:
    """The feedback pairs plus `feedback_ratio` original pairs per feedback pair (seeded
    sample), and how many of each."""
    import random

    ours = [{c: row[c] for c in COLUMNS} for row in read_feedback(Path(feedback.path))]
    wanted = min(len(original), round(config.feedback_ratio * len(ours)))
    theirs = random.Random(config.seed).sample(original, wanted) if wanted else []
    log.info("dpo on %d feedback pairs and %d original pairs", len(ours), len(theirs))
    return ours + theirs, {"feedback_pairs": len(ours), "original_pairs": len(theirs)}


def read_feedback(directory: Path) -> list[dict]:
    from orchard.feedback import read_feedback_set

    rows = read_feedback_set(directory, "preference")
    if not rows:
        raise OrchardError(
            f"{directory} has no preference pairs: train it with kto (feedback_method kto), "
            "which learns from single labelled answers, or collect more feedback"
        )
    return rows


def log_feedback_input(feedback: Manifest) -> None:
    """The feedback set as a dataset input of the active MLflow run (context training)."""
    import mlflow

    from orchard.feedback import mlflow_dataset

    # ref.path: where the set is published (an s3:// location), not the local copy read.
    rows = read_feedback(Path(feedback.path))
    dataset = mlflow_dataset(rows, feedback.key, feedback.ref.path)
    mlflow.log_input(dataset, context="training")


STEP = StepSpec("dpo", DpoConfig, default_name="chat", doc=__doc__)
run, main = model_step(STEP, dpo)


if __name__ == "__main__":
    sys.exit(main())
