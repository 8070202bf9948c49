"""How an answer is graded against a reference answer: the reference's key facts (dotted
names, calls, snake_case identifiers, numbers) found in the answer. Evaluation reports it
(`key_fact_em`, `key_fact_recall`) and GRPO trains on it as a verifiable reward."""

from __future__ import annotations

import re

_FACT = re.compile(r"[A-Za-z_]\w*(?:\.\w+)+|\w+\(|\b[a-z]+_[a-z_]+\b|\b\d+(?:\.\d+)?\b")


def key_facts(reference: str) -> set[str]:
    return {match.rstrip("(") for match in _FACT.findall(reference)}


def key_fact_recall(answer: str, reference: str) -> float | None:
    """Share of the reference's key facts present in `answer`; None when it has none."""
    facts = key_facts(reference)
    return sum(fact in answer for fact in facts) / len(facts) if facts else None


def rouge(prediction: str, reference: str, kind: str = "rougeL") -> float:
    """ROUGE F1 of `prediction` against `reference` (rouge_score: rougeL, rouge1, …)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([kind]).score(reference, prediction)[kind].fmeasure


def rouge_l(prediction: str, reference: str) -> float:
    return rouge(prediction, reference, "rougeL")


def grounded_reward(answer: str, reference: str) -> float:
    """A verifiable reward in [0, 1]: the reference's key facts recalled, or ROUGE-L F1
    against the reference when it names none."""
    recall = key_fact_recall(answer, reference)
    return recall if recall is not None else rouge_l(answer, reference)
