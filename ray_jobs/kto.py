"""The kto step: Kahneman-Tversky optimisation on unpaired thumbs (TRL `KTOTrainer`).

KTO learns from single answers labelled desirable or undesirable, so every thumb counts,
not only the few that pair up with another answer to the same question (DPO's need).

Inputs: one `chat_data` manifest, the policy to start from (from users' feedback, the
current champion's model; it is also the frozen reference) and, normally, one `feedback`
manifest (orchard_feedback's set). The rows:
- the feedback set's labelled answers (`orchard.feedback.kto_rows`): its unpaired rows
  (`kto/train.jsonl`: every thumb, up desirable and down undesirable, and every
  edited-away answer undesirable), then its pairs unfolded (the chosen answer desirable,
  the rejected one undesirable), each (prompt, answer, label) once;
- `feedback_ratio` original rows per feedback row: a seeded sample of the chat data's own
  preference pairs, each unfolded into a desirable and an undesirable row (0: feedback
  only). Without a feedback manifest, the chat data's pairs unfolded alone.
The rows are shuffled (seeded) once: TRL reads them in order, since it estimates KTO's KL
term from the other answers of the same batch. When desirable and undesirable rows are
unbalanced, the rarer class's loss weight is raised to the count ratio (the lower end of
the range TRL recommends after the paper's Eq. 8).

Output: `hf/`. Metrics: final loss, KL and reward margin as TRL logs them. Counts:
`rows`, `feedback_rows` (`feedback_desirable`), `original_pairs`, `original_rows`; facts
`feedback_version` and `from_champion` (the registry version the policy is): the lineage
the register step tags a challenger with. The step's MLflow run records the labelled
answers it trained on from the feedback as a dataset input (context `training`).
"""

from __future__ import annotations

import logging
import random
import sys
from pathlib import Path

from pydantic import Field

from model.posttrain import (
    dataset,
    load_causal_lm,
    load_tokenizer,
    logged,
    save_model,
    trainer_args,
)
from orchard.errors import OrchardError
from orchard.feedback import kto_rows, mlflow_unpaired_dataset, read_feedback_set, unfold
from orchard.model_steps import TrainStepConfig, model_step, read_rows, split_inputs, tracked_run
from orchard.progress import training_progress_callback
from orchard.steps import Manifest, StepContext, StepOutput, StepSpec

log = logging.getLogger("orchard.kto")
COLUMNS = ("prompt", "completion", "label")
FEEDBACK = "feedback"  # the step of orchard_feedback's sets


class KtoConfig(TrainStepConfig):
    steps: int = Field(60, ge=1, description="Optimizer steps.")
    lr: float = Field(5e-5, gt=0, description="Peak learning rate (cosine decay, warmup).")
    batch_size: int = Field(
        8, ge=2, description="Answers per device per step (KTO's KL term needs two or more)."
    )
    beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference.")
    feedback_ratio: float = Field(
        1.0,
        ge=0,
        description="With a feedback input: original rows (the chat data's pairs, unfolded) "
        "per feedback row (0: feedback only).",
    )
    from_champion: str | None = Field(
        None, description="The registry version the policy is (`orchard-chat/3`): lineage."
    )


def feedback_mix(
    config: KtoConfig, feedback: Manifest | None, original: list[dict]
) -> tuple[list[dict], list[dict], dict[str, int]]:
    """The labelled answers to train on (shuffled), those of them from the feedback, and
    how many came from where."""
    rng = random.Random(config.seed)
    ours: list[dict] = []
    if feedback is not None:
        directory = Path(feedback.path)
        ours = kto_rows(
            read_feedback_set(directory, "preference"), read_feedback_set(directory, "kto")
        )
        if not ours:
            raise OrchardError(
                f"{feedback.path} has no labelled answers: the feedback set has nothing to train on"
            )
        wanted = min(len(original), round(config.feedback_ratio * len(ours) / 2))
    else:
        wanted = len(original)
    theirs = unfold(rng.sample(original, wanted)) if wanted else []
    rows = [{c: row[c] for c in COLUMNS} for row in [*ours, *theirs]]
    rng.shuffle(rows)
    counts = {
        "rows": len(rows),
        "feedback_rows": len(ours),
        "feedback_desirable": sum(bool(r["label"]) for r in ours),
        "original_pairs": wanted,
        "original_rows": len(theirs),
    }
    log.info("kto on %d feedback rows and %d original rows", len(ours), len(theirs))
    return rows, ours, counts


def class_weights(rows: list[dict]) -> tuple[float, float]:
    """(desirable, undesirable) loss weights: the rarer class weighted by how much rarer it
    is, so both classes weigh the same in the loss."""
    desirable = sum(bool(r["label"]) for r in rows)
    undesirable = len(rows) - desirable
    if not desirable or not undesirable:
        raise OrchardError(
            f"kto needs desirable and undesirable answers; got {desirable} desirable and "
            f"{undesirable} undesirable (raise feedback_ratio to mix in original pairs)"
        )
    if desirable < undesirable:
        return undesirable / desirable, 1.0
    return 1.0, desirable / undesirable


def kto(
    config: KtoConfig, inputs: list[Manifest], ctx: StepContext, tracking_uri: str | None
) -> StepOutput:
    from trl import KTOConfig, KTOTrainer

    feedback = [m for m in inputs if m.step == FEEDBACK]
    if len(feedback) > 1:
        raise OrchardError(
            f"kto takes at most one feedback manifest; got {[m.step for m in inputs]}"
        )
    chat, models = split_inputs("kto", [m for m in inputs if m.step != FEEDBACK], ["policy"])
    start = Path(models["policy"].path) / "hf"
    tokenizer = load_tokenizer(start)
    original = read_rows(chat, "preference/train.jsonl")
    rows, ours, counts = feedback_mix(config, feedback[0] if feedback else None, original)
    desirable_weight, undesirable_weight = class_weights(rows)
    with tracked_run("kto", ctx.key, tracking_uri) as run_id:
        if feedback and run_id:
            import mlflow

            name = f"orchard-feedback-{feedback[0].key}-kto"
            dataset_input = mlflow_unpaired_dataset(ours, name, feedback[0].path)
            mlflow.log_input(dataset_input, context="training")
        args = KTOConfig(
            **trainer_args(config, ctx.work, bool(run_id)),
            beta=config.beta,
            max_length=config.max_length,
            desirable_weight=desirable_weight,
            undesirable_weight=undesirable_weight,
        )
        trainer = KTOTrainer(
            model=load_causal_lm(start),
            ref_model=load_causal_lm(start),
            args=args,
            train_dataset=dataset(rows, COLUMNS),
            processing_class=tokenizer,
            callbacks=[training_progress_callback()],
        )
        result = trainer.train()
        save_model(trainer.model, tokenizer, ctx.out)
    metrics = {
        "train_loss": float(result.training_loss),
        "desirable_weight": desirable_weight,
        "undesirable_weight": undesirable_weight,
    }
    for name in ("kl", "rewards/margins"):
        values = logged(trainer, name)
        if values:
            metrics[f"final_{name.replace('/', '_')}"] = float(values[-1])
    facts = {}
    if feedback:
        facts = {"feedback_version": feedback[0].key, "from_champion": config.from_champion or ""}
    return StepOutput(
        counts={"steps": config.steps, **counts}, metrics=metrics, facts=facts, mlflow_run_id=run_id
    )


STEP = StepSpec("kto", KtoConfig, default_name="feedback", doc=__doc__)
run, main = model_step(STEP, kto)


if __name__ == "__main__":
    sys.exit(main())
