"""The evaluate step: how good is a chat model on entries it never saw in training?

Inputs: the candidate model (a step with `hf/`: sft, dpo, grpo, …), the `chat_data`
manifest whose held-out split it is judged on, optionally the `reward` model, and
optionally baseline models to compare against (their steps listed in `baselines`, e.g.
the pretrained base). `champion_version` adds the registry's current champion, downloaded
from MLflow (the DAG resolves the alias when it is triggered, so the key says which
version was compared).

Metrics, per model (the candidate's unprefixed, others prefixed `<step>.` / `champion.`):
- `heldout_ppl`: perplexity of the reference answers (assistant tokens only);
- `rouge_l`: ROUGE-L F1 of the greedy answer against the reference answer;
- `key_fact_em` / `key_fact_recall`: the reference's key facts (dotted names, calls,
  snake_case identifiers, numbers) all present / the share present in the answer;
- `safety_refusal_rate`: refusals on the held-out harmful requests of `orchard.safety`;
- `rm_win_rate_vs_<other>`: the reward model prefers the candidate's answer (ties half);
  `<model>.rm_win_rate_vs_<other>` the same between two other models (dpo against sft);
- `lm_eval/<task>/<metric>` (candidate only): EleutherAI's lm-evaluation-harness on
  Orchard's local tasks (`orchard.eval_tasks`: docs QA, signature multiple choice, safety
  refusals, held-out text perplexity), run on the already-loaded candidate; the task
  files are kept in `report/lm_eval_tasks/` and lm-eval's results in
  `report/lm_eval.json`.
Every answer is kept in `report/answers.jsonl` for people to read.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from pydantic import Field

from model.posttrain import spread
from orchard.errors import OrchardError
from orchard.grading import key_facts, rouge_l
from orchard.model_steps import model_step
from orchard.steps import Manifest, StepConfig, StepContext, StepOutput, StepSpec

log = logging.getLogger("orchard.evaluate")


class EvaluateConfig(StepConfig):
    baselines: list[str] = Field(
        default_factory=list,
        description="Steps of the input models the candidate is compared with (e.g. pretrain).",
    )
    model_name: str = Field("orchard-chat", description="Registered model of the champion.")
    champion_version: str | None = Field(
        None, description="Registry version of the current champion to compare with."
    )
    max_examples: int = Field(
        48, ge=1, description="Held-out questions answered per model (spread over the set)."
    )
    max_new_tokens: int = Field(96, ge=1, le=4096, description="Answer length cap.")
    repetition_penalty: float = Field(
        1.0,
        ge=1.0,
        description="Greedy decoding's penalty on tokens already in the prompt or answer "
        "(1 = none, HF `repetition_penalty`); "
        "the same for every model compared.",
    )
    max_context: int = Field(1024, ge=16, description="Tokens of a conversation scored.")
    batch_size: int = Field(8, ge=1, description="Answers generated together.")
    lm_eval: bool = Field(
        True, description="Also run lm-evaluation-harness on the local tasks (candidate)."
    )


def answer_quality(rows: list[dict], answers: list[str]) -> dict[str, float]:
    """ROUGE-L and key-fact matches of `answers` against the rows' reference answers."""
    pairs = list(zip((row["reference"] for row in rows), answers, strict=True))
    facts = [(key_facts(reference), answer) for reference, answer in pairs]
    facts = [(found, answer) for found, answer in facts if found]
    return {
        "rouge_l": sum(rouge_l(answer, reference) for reference, answer in pairs) / len(pairs),
        "key_fact_em": (
            sum(all(f in answer for f in found) for found, answer in facts) / len(facts)
            if facts
            else 0.0
        ),
        "key_fact_recall": (
            sum(sum(f in answer for f in found) / len(found) for found, answer in facts)
            / len(facts)
            if facts
            else 0.0
        ),
    }


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise OrchardError(f"{path} is missing: pass a finished chat_data manifest")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def heldout_questions(chat_data: Path, limit: int) -> list[dict]:
    """Held-out conversations as (prompt messages, reference answer)."""
    rows = []
    for row in read_jsonl(chat_data / "sft" / "heldout.jsonl"):
        messages = row["messages"]
        if not messages or messages[-1]["role"] != "assistant":
            continue
        rows.append(
            {
                "id": row.get("id", str(len(rows))),
                "messages": messages,
                "prompt": messages[:-1],
                "reference": messages[-1]["content"],
                "kind": row.get("kind"),
            }
        )
    if not rows:
        raise OrchardError(f"{chat_data}/sft/heldout.jsonl holds no held-out conversation")
    # Evenly spaced over the file, not its head: chat_data writes rows page by page and
    # kind by kind, so the first `limit` would be one page's section questions.
    return spread(rows, limit)


class Judged:
    """One causal LM + tokenizer, with what evaluation asks of it."""

    def __init__(self, label: str, model: Any, tokenizer: Any, config: EvaluateConfig) -> None:
        self.label, self.model, self.tokenizer, self.config = label, model.eval(), tokenizer, config
        self.tokenizer.padding_side = "left"

    @classmethod
    def from_dir(cls, label: str, hf_dir: Path, config: EvaluateConfig) -> Judged:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(hf_dir)
        model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
        return cls(label, model, tokenizer, config)

    def perplexity(self, conversations: list[list[dict]]) -> float:
        import torch

        total, count = 0.0, 0
        for messages in conversations:
            encoded = self.tokenizer.apply_chat_template(
                messages, return_dict=True, return_assistant_tokens_mask=True
            )
            ids = torch.tensor([encoded["input_ids"][: self.config.max_context]])
            mask = torch.tensor(encoded["assistant_masks"][: self.config.max_context])
            with torch.no_grad():
                logits = self.model(input_ids=ids).logits[0, :-1]
            targets, scored = ids[0, 1:], mask[1:].bool()
            if not scored.any():
                continue
            nll = torch.nn.functional.cross_entropy(
                logits[scored], targets[scored], reduction="sum"
            )
            total, count = total + nll.item(), count + int(scored.sum())
        return math.exp(total / count) if count else float("nan")

    def answer(self, prompts: list[list[dict]]) -> list[str]:
        import torch

        answers: list[str] = []
        limit = self.config.max_context - self.config.max_new_tokens
        for start in range(0, len(prompts), self.config.batch_size):
            batch = prompts[start : start + self.config.batch_size]
            texts = [
                self.tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                for p in batch
            ]
            encoded = self.tokenizer(
                texts,
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max(limit, 8),
                add_special_tokens=False,
            )
            with torch.no_grad():
                out = self.model.generate(
                    **encoded,
                    max_new_tokens=self.config.max_new_tokens,
                    do_sample=False,
                    repetition_penalty=self.config.repetition_penalty,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self.tokenizer.eos_token_id,
                )
            new = out[:, encoded["input_ids"].shape[1] :]
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            answers += [text.strip() for text in texts]
        return answers


class RewardModel:
    def __init__(self, hf_dir: Path) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(hf_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            hf_dir, dtype=torch.float32
        ).eval()

    def score(self, prompt: list[dict], answer: str) -> float:
        import torch

        messages = [*prompt, {"role": "assistant", "content": answer}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False)
        ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False, truncation=True)
        with torch.no_grad():
            return float(self.model(**ids).logits[0, 0])


def win_rates(rm: RewardModel, prompts: list[list[dict]], answers: dict[str, list[str]]):
    """`<a>.rm_win_rate_vs_<b>` for every ordered pair of models (the candidate's without
    a prefix): how often the reward model prefers a's answer to b's, ties half."""
    scores = {
        label: [rm.score(prompt, text) for prompt, text in zip(prompts, texts, strict=True)]
        for label, texts in answers.items()
    }
    rates: dict[str, float] = {}
    for a, ours in scores.items():
        for b, theirs in scores.items():
            if a == b:
                continue
            pairs = zip(ours, theirs, strict=True)
            wins = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x, y in pairs)
            prefix = "" if a == "candidate" else f"{a}."
            rates[f"{prefix}rm_win_rate_vs_{b}"] = wins / len(prompts)
    return rates


def _roles(inputs: list[Manifest], config: EvaluateConfig):
    by_step: dict[str, list[Manifest]] = {}
    for manifest in inputs:
        by_step.setdefault(manifest.step, []).append(manifest)
    chat = by_step.pop("chat_data", [])
    reward = by_step.pop("reward", [])
    baselines = {step: by_step.pop(step) for step in config.baselines if step in by_step}
    missing = [step for step in config.baselines if step not in baselines]
    candidates = [m for group in by_step.values() for m in group]
    if len(chat) != 1 or len(candidates) != 1 or len(reward) > 1 or missing:
        raise OrchardError(
            "evaluate takes one chat_data manifest, one candidate model, at most one reward "
            f"model and one model per baseline step {config.baselines}; got "
            f"{[m.step for m in inputs]}"
        )
    for manifest in [*candidates, *reward, *(m for g in baselines.values() for m in g)]:
        if not (Path(manifest.path) / "hf" / "config.json").is_file():
            raise OrchardError(f"{manifest.path} ({manifest.step}) has no hf/ model directory")
    return chat[0], candidates[0], (reward[0] if reward else None), baselines


def _champion(config: EvaluateConfig, tracking_uri: str | None) -> Judged:
    import mlflow

    if not tracking_uri:
        raise OrchardError("champion_version needs the MLflow server: set ORCHARD_MLFLOW_URI")
    mlflow.set_tracking_uri(tracking_uri)
    uri = f"models:/{config.model_name}/{config.champion_version}"
    try:
        parts = mlflow.transformers.load_model(uri, return_type="components")
    except Exception as error:  # MLflow raises many types for a missing version
        raise OrchardError(f"cannot load the champion {uri}: {error}") from error
    return Judged("champion", parts["model"], parts["tokenizer"], config)


def harness(
    candidate: Judged, rows: list[dict], report: Path, work: Path, config: EvaluateConfig
) -> dict[str, float]:
    """lm-eval on the local tasks built from `rows`, the candidate's model reused."""
    from orchard.eval_tasks import run_harness, task_docs, write_task_dir

    tasks = write_task_dir(
        report / "lm_eval_tasks",
        task_docs(rows),
        config.max_new_tokens,
        cache_dir=work / "hf_datasets",
    )
    log.info("lm-eval on %s", ", ".join(tasks))
    metrics, table = run_harness(
        candidate.model,
        candidate.tokenizer,
        report / "lm_eval_tasks",
        tasks,
        batch_size=config.batch_size,
        max_length=config.max_context,
    )
    (report / "lm_eval.json").write_text(json.dumps(table, indent=2, sort_keys=True, default=str))
    return metrics


def evaluate(
    config: EvaluateConfig, inputs: list[Manifest], ctx: StepContext, tracking_uri: str | None
) -> StepOutput:
    import torch

    from orchard.safety import HELDOUT, is_refusal

    torch.manual_seed(0)
    chat, candidate, reward, baselines = _roles(inputs, config)
    rows = heldout_questions(Path(chat.path), config.max_examples)
    judged = [Judged.from_dir("candidate", Path(candidate.path) / "hf", config)]
    for step, (manifest,) in baselines.items():
        judged.append(Judged.from_dir(step, Path(manifest.path) / "hf", config))
    if config.champion_version:
        judged.append(_champion(config, tracking_uri))
    rm = RewardModel(Path(reward.path) / "hf") if reward else None

    prompts = [row["prompt"] for row in rows]
    safety_prompts = [[{"role": "user", "content": text}] for text in HELDOUT]
    metrics: dict[str, float] = {}
    answers: dict[str, list[str]] = {}
    for model in judged:
        prefix = "" if model.label == "candidate" else f"{model.label}."
        log.info("evaluating %s on %d held-out questions", model.label, len(rows))
        answers[model.label] = model.answer(prompts)
        refusals = [is_refusal(text) for text in model.answer(safety_prompts)]
        metrics |= {
            f"{prefix}{name}": value
            for name, value in answer_quality(rows, answers[model.label]).items()
        }
        metrics[f"{prefix}heldout_ppl"] = model.perplexity([row["messages"] for row in rows])
        metrics[f"{prefix}safety_refusal_rate"] = sum(refusals) / len(refusals)
    if rm:
        metrics |= win_rates(rm, prompts, answers)
    report = ctx.out / "report"
    report.mkdir()
    if config.lm_eval:
        metrics |= harness(judged[0], rows, report, ctx.work, config)
    with (report / "answers.jsonl").open("w") as handle:
        for i, row in enumerate(rows):
            record = {
                "id": row["id"],
                "question": row["prompt"][-1]["content"],
                "reference": row["reference"],
                "answers": {label: texts[i] for label, texts in answers.items()},
            }
            handle.write(json.dumps(record) + "\n")
    (report / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    for name, value in sorted(metrics.items()):
        log.info("%s = %.4f", name, value)
    return StepOutput(
        counts={"examples": len(rows), "models": len(judged)},
        metrics={k: v for k, v in metrics.items() if math.isfinite(v)},
        artifacts=["report"],
    )


STEP = StepSpec("evaluate", EvaluateConfig, default_name="model", doc=__doc__)
run, main = model_step(STEP, evaluate)


if __name__ == "__main__":
    sys.exit(main())
