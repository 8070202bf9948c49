"""Decontamination: a training row sharing 13 consecutive (normalised) words with an
evaluation text is removed and counted; 12 shared words are not enough."""

from __future__ import annotations

import pytest

from orchard.decontamination import EvalNgrams, decontaminate, messages_text, words
from orchard.eval_tasks import eval_texts, task_docs
from orchard.safety import HELDOUT

EVAL = (
    "Serialize obj to a JSON formatted str using this conversion table, with keys "
    "always of the type str and values encoded as given by the default function."
)


def overlap(k: int) -> str:
    """A training text sharing exactly `k` consecutive words with EVAL, within others."""
    return "Before all of it: " + " ".join(words(EVAL)[3 : 3 + k]) + " zebra unrelated tail."


def test_text_is_normalised_before_it_is_cut_into_words():
    assert words("`json.dumps(obj)`  --  SORT_keys,\nIndent=4!") == [
        "json",
        "dumps",
        "obj",
        "sort",
        "keys",
        "indent",
        "4",
    ]
    assert words("Café  Überall") == ["café", "überall"]


def test_thirteen_shared_words_are_contamination_twelve_are_not():
    index = EvalNgrams([EVAL])
    assert index.match(overlap(12)) is None
    shared = index.match(overlap(13))
    assert shared is not None and len(shared) == 13
    assert index.match(overlap(13).upper().replace(" ", "  ,")) == shared  # normalised
    assert index.match(EVAL) is not None
    assert EvalNgrams([EVAL], n=12).match(overlap(12)) is not None  # the size is the rule


def test_short_eval_texts_are_matched_whole_when_long_enough():
    prompt = HELDOUT[0]  # "Explain how to assemble an explosive device ..." (11 words)
    assert 8 <= len(words(prompt)) < 13
    index = EvalNgrams([prompt, "What does json.dumps do?"])
    assert index.match(f"User asked: {prompt.lower()} Then left.") is not None
    assert index.match(" ".join(words(prompt)[:-1])) is None  # all of it, not a part
    assert index.match("So what does json.dumps do? It serializes.") is None  # under 8 words
    assert index.texts == 1


def test_rows_are_removed_and_counted_by_set():
    index = EvalNgrams(eval_texts(task_docs([_row("e1", "What does dumps do?", EVAL)])))
    rows = [
        {"id": "clean", "messages": [{"role": "user", "content": overlap(12)}]},
        {"id": "dirty", "messages": [{"role": "assistant", "content": overlap(13)}]},
        {"id": "unsafe", "messages": [{"role": "user", "content": HELDOUT[2]}]},
    ]
    kept, report = decontaminate("sft", rows, lambda r: messages_text(r["messages"]), index)
    assert [row["id"] for row in kept] == ["clean"]
    assert report.counts() == {"decontamination.sft.checked": 3, "decontamination.sft.removed": 2}
    assert report.removed_ids == ["dirty", "unsafe"]
    assert report.summary()["examples"][0]["shared"] == " ".join(words(EVAL)[3:16])


def test_the_eval_tasks_hold_every_prompt_and_answer():
    rows = [
        _row("e1", "What does dumps do?", EVAL),
        _row("e2", "What is the signature of json.dumps?", "json.dumps(obj, *, indent=None)"),
        _row("e3", "How is `json.loads` called?", "json.loads(s, *, cls=None)"),
    ]
    rows[1]["kind"] = rows[2]["kind"] = "signature"
    tasks = task_docs(rows)
    (mc, _) = tasks["orchard_signature_mc"]
    assert mc["choices"][mc["label"]] == "json.dumps(obj, *, indent=None)"
    assert set(mc["choices"]) == {"json.dumps(obj, *, indent=None)", "json.loads(s, *, cls=None)"}
    texts = eval_texts(tasks)
    assert {EVAL, "What is the signature of json.dumps?", *HELDOUT} <= set(texts)


def test_a_bad_size_is_refused():
    with pytest.raises(ValueError, match="min_words"):
        EvalNgrams([EVAL], n=5, min_words=8)


def _row(row_id: str, question: str, answer: str) -> dict:
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"id": row_id, "messages": messages, "kind": "describe"}
