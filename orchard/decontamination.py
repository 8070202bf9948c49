"""Decontamination: training rows that share a 13-gram with an evaluation item are removed.

Every training set (the pretraining mix, the SFT and preference sets) is checked against
the texts of every evaluation task (`orchard.eval_tasks.eval_texts`: the held-out
questions and answers, the multiple-choice options, the safety prompts, the held-out text
scored for perplexity) before anything trains on it.

Text is normalised before it is cut into n-grams: lower-cased (`str.casefold`), and every
run of characters that is not a letter or digit (whitespace, punctuation, `_`, backticks,
Markdown) becomes one word break. "`json.dumps(obj)`" and "JSON dumps obj" are the same
three words. A training row is contaminated when any 13 consecutive words of it equal 13
consecutive words of one evaluation text. An evaluation text shorter than 13 words (a
safety prompt, a short question) is matched whole, as one contiguous run of its words,
when it has at least `MIN_WORDS`; shorter ones are too generic to mean a leak
("what does json dumps do") and are not matched on their own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

N = 13
MIN_WORDS = 8
_WORD = re.compile(r"[^\W_]+")

Row = TypeVar("Row")


def words(text: str) -> list[str]:
    """The normalised words of `text`: lower-cased, split at anything not a letter/digit."""
    return _WORD.findall(text.casefold())


class EvalNgrams:
    """The n-grams of a set of evaluation texts, and the question: does a text share one?"""

    def __init__(self, texts: Iterable[str], n: int = N, min_words: int = MIN_WORDS) -> None:
        if n < 1 or not 1 <= min_words <= n:
            raise ValueError(f"need n >= 1 and 1 <= min_words <= n; got n={n}, {min_words=}")
        self.n = n
        self.grams: set[tuple[str, ...]] = set()  # the n-grams of the long texts
        short: set[str] = set()  # the shorter texts, words joined by one space
        self.texts = 0
        for text in texts:
            found = words(text)
            if len(found) >= n:
                self.grams.update(_windows(found, n))
            elif len(found) >= min_words:
                short.add(" ".join(found))
            else:
                continue
            self.texts += 1
        self.short = sorted(short)

    def __len__(self) -> int:
        return len(self.grams) + len(self.short)

    def match(self, text: str) -> tuple[str, ...] | None:
        """The first run of words `text` shares with an evaluation text, or None."""
        found = words(text)
        # Windows built and looked up in C (zip, set.isdisjoint), short texts found as
        # substrings of the joined words: a Python loop over positions is ~5x slower.
        if not self.grams.isdisjoint(_windows(found, self.n)):
            return next(run for run in _windows(found, self.n) if run in self.grams)
        if self.short:
            joined = f" {' '.join(found)} "
            for run in self.short:
                if f" {run} " in joined:
                    return tuple(run.split())
        return None


def _windows(found: list[str], length: int) -> Iterator[tuple[str, ...]]:
    """Every run of `length` consecutive words of `found`."""
    return zip(*(found[i:] for i in range(length)), strict=False)


@dataclass
class Decontaminated:
    """What was removed from one training set."""

    name: str
    checked: int = 0
    removed_ids: list[str] = field(default_factory=list)
    examples: list[dict[str, str]] = field(default_factory=list)

    @property
    def removed(self) -> int:
        return len(self.removed_ids)

    def counts(self) -> dict[str, int]:
        """`decontamination.<set>.checked` / `.removed`: the manifest's counts."""
        prefix = f"decontamination.{self.name}"
        return {f"{prefix}.checked": self.checked, f"{prefix}.removed": self.removed}

    def summary(self, keep_examples: int = 5) -> dict:
        return {
            "checked": self.checked,
            "removed": self.removed,
            "removed_ids": self.removed_ids,
            "examples": self.examples[:keep_examples],
        }


def decontaminate(
    name: str,
    rows: Sequence[Row],
    text_of: Callable[[Row], str],
    index: EvalNgrams,
    id_of: Callable[[Row], str] = lambda row: str(row.get("id", "")),  # type: ignore[attr-defined]
) -> tuple[list[Row], Decontaminated]:
    """The rows of training set `name` that share no n-gram with the evaluation texts,
    and the report of what was removed (ids and the shared words of the first few)."""
    report = Decontaminated(name, checked=len(rows))
    kept: list[Row] = []
    for row in rows:
        shared = index.match(text_of(row))
        if shared is None:
            kept.append(row)
            continue
        report.removed_ids.append(id_of(row))
        if len(report.examples) < 20:
            report.examples.append({"id": id_of(row), "shared": " ".join(shared)})
    return kept, report


def messages_text(messages: Iterable[dict]) -> str:
    """The text of a conversation for matching: every turn's content, one turn a line."""
    return "\n".join(str(m.get("content") or "") for m in messages)


def preference_text(row: dict) -> str:
    """The text of a preference pair: prompt, chosen and rejected answers."""
    return messages_text([*row["prompt"], *row["chosen"], *row["rejected"]])
