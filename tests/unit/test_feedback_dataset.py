"""The feedback step (ray_jobs/feedback.py): the platform's feedback export becomes a
preference set, redacted, deduplicated, decontaminated and gated by Great Expectations.
The export here is written by the test in the API's format; tests/platform/
test_feedback_loop.py fetches a real one over HTTP."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from orchard.errors import OrchardError
from orchard.settings import Settings
from orchard.steps import Manifest, StepConfig, StepOutput, run_step
from ray_jobs import feedback

EVAL_QUESTION = "What does the sort_keys argument of json.dumps do when it is true?"


class UntrackedSettings(Settings):
    @property
    def mlflow_uri(self) -> str | None:
        return None


class Fixture(StepConfig):
    label: str


def chat_data(root: Path) -> Manifest:
    """A chat_data output whose held-out set (what evaluation asks) holds EVAL_QUESTION."""

    def body(ctx):
        held = ctx.out / "sft" / "heldout.jsonl"
        held.parent.mkdir(parents=True)
        row = {
            "id": "h1",
            "messages": [
                {"role": "user", "content": EVAL_QUESTION},
                {"role": "assistant", "content": "It sorts the output's keys."},
            ],
        }
        held.write_text(json.dumps(row) + "\n")
        return StepOutput()

    return run_step(
        step="chat_data", name="f", config=Fixture(label="c"), data_root=root, body=body
    )


def regeneration(user: str, question: str, short: str, long: str, rating=None) -> dict:
    return {
        "kind": "regeneration",
        "prompt": [{"role": "user", "content": question}],
        "rejected": {"content": long, "rating": None, "model_version": "orchard-chat/1"},
        "chosen": {"content": short, "rating": rating, "model_version": "orchard-chat/1"},
        "user": user,
        "model_version": "orchard-chat/1",
        "variant": "champion",
    }


def rating(user: str, question: str, answer: str, up: bool) -> dict:
    return {
        "kind": "rating",
        "prompt": [{"role": "user", "content": question}],
        "completion": [{"role": "assistant", "content": answer}],
        "label": up,
        "rating": "up" if up else "down",
        "comment": "",
        "user": user,
        "model_version": "orchard-chat/1",
        "variant": "challenger",
    }


def export(path: Path, records: list[dict]) -> feedback.FeedbackConfig:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return feedback.FeedbackConfig(export=str(path), export_sha256=digest, min_pairs=4)


@pytest.fixture
def env(tmp_path):
    return UntrackedSettings(home=tmp_path / "home", data_root=str(tmp_path / "data")), tmp_path


def test_an_export_of_three_rows_stops_the_run_with_a_report_naming_the_rule(env):
    settings, tmp = env
    config = export(
        tmp / "export.jsonl",
        [rating("u1", "Hi?", "Hello.", True), rating("u1", "Why?", "Because.", False)]
        + [regeneration("u1", "What is indent?", "Spaces.", "A long story.")],
    )
    with pytest.raises(OrchardError) as raised:
        feedback.run(config, [], settings)
    message = str(raised.value)
    assert "enough_pairs" in message and "1 pairs, need at least 4" in message
    assert "no_dominant_user" in message and "one user gave 3 of 3 rows" in message
    report = Path(settings.data_root) / "feedback"
    (failed,) = report.glob("failed-*")
    assert (failed / "data_docs" / "index.html").is_file()
    rules = {
        r["rule"]: r["success"]
        for r in json.loads((failed / "validation.json").read_text())["rules"]
    }
    assert rules["enough_pairs"] is False and rules["not_one_sided"] is True
    assert not list(report.glob("feedback-*"))  # nothing published


def test_a_one_sided_export_is_stopped_by_its_own_rule(env):
    settings, tmp = env
    downs = [rating(f"u{i % 4}", f"Question {i}?", f"Answer {i}.", False) for i in range(40)]
    pairs = [regeneration(f"u{i % 4}", f"Q{i}?", "Short.", f"Long {i}.") for i in range(4)]
    with pytest.raises(OrchardError, match=r"not_one_sided .*5% of judgements positive"):
        feedback.run(export(tmp / "export.jsonl", downs + pairs), [], settings)


def test_the_dataset_has_no_pii_no_duplicates_and_no_eval_question(env):
    settings, tmp = env
    chat = chat_data(tmp / "data")
    records = [
        regeneration(f"u{i % 3}", f"How do I indent JSON, case {i}?", "Use indent=2.", "x" * 80)
        for i in range(6)
    ]
    records.append(records[0])  # the same signal twice
    records.append(
        regeneration(
            "u1",
            "Mail me at jane.doe@corp.io or call +1 415-555-0132 about indent",
            "Use indent.",
            "Sure, jane.doe@corp.io, a long answer.",
        )
    )
    records.append(regeneration("u2", EVAL_QUESTION, "Sorts keys.", "A long answer."))
    records += [rating("u0", "Hi?", "Hello.", True), rating("u2", "Hi?", "Go away.", False)]
    config = export(tmp / "export.jsonl", records)
    done = feedback.run(config, [chat], settings)

    out = Path(done.path)
    text = (out / "preference" / "train.jsonl").read_text()
    pairs = [json.loads(line) for line in text.splitlines()]
    assert "jane.doe@corp.io" not in text and "555-0132" not in text
    assert "email@example.com" in text or "firstname.lastname@example.org" in text
    assert EVAL_QUESTION not in text
    assert done.counts["decontamination.feedback_pairs.removed"] == 1
    assert done.counts["duplicates_removed"] == 1
    # 6 distinct regenerations + the redacted one + the up/down pair on "Hi?"
    assert len(pairs) == done.counts["pairs"] == 8
    assert {p["source"] for p in pairs} == {"regeneration", "ratings"}
    hi = next(p for p in pairs if p["source"] == "ratings")
    assert (hi["chosen"][0]["content"], hi["rejected"][0]["content"]) == ("Hello.", "Go away.")
    kto = [json.loads(line) for line in (out / "kto" / "train.jsonl").read_text().splitlines()]
    assert sorted(r["label"] for r in kto) == [False, True]
    # The version is the step key: the same export gives the same dataset, another a new one.
    assert done.facts["version"] == done.key
    assert feedback.run(config, [chat], settings).key == done.key
    records.append(rating("u1", "Bye?", "Bye.", True))
    assert feedback.run(export(tmp / "export2.jsonl", records), [chat], settings).key != done.key


def test_a_regeneration_whose_ratings_contradict_it_makes_no_pair():
    redact = feedback.Redactor()
    pairs, _, counts = feedback.preference_rows(
        [regeneration("u", "Q?", "New.", "Old.", rating="down")], redact, 4
    )
    assert pairs == [] and counts["pairs.contradicted"] == 1


def test_thumbs_alone_pass_the_kto_gate_that_counts_labelled_answers_not_pairs(env):
    settings, tmp = env
    thumbs = [rating(f"u{i % 4}", f"Question {i}?", f"Answer {i}.", i % 2 == 0) for i in range(16)]
    path = tmp / "export.jsonl"
    for_dpo = export(path, thumbs)
    with pytest.raises(OrchardError, match=r"enough_pairs .*0 pairs, need at least 4"):
        feedback.run(for_dpo, [], settings)
    done = feedback.run(for_dpo.model_copy(update={"method": "kto"}), [], settings)
    assert (done.counts["pairs"], done.counts["labelled_answers"]) == (0, 16)
    assert done.facts["method"] == "kto"
    kto = (Path(done.path) / "kto" / "train.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["label"] for line in kto) == [False] * 8 + [True] * 8


def test_the_kto_gate_stops_too_few_answers_and_one_sided_thumbs(env):
    settings, tmp = env
    few = [rating("u1", "Hi?", "Hello.", True), rating("u2", "Why?", "Because.", False)]
    few.append(regeneration("u3", "What is indent?", "Spaces.", "A long story."))
    config = export(tmp / "few.jsonl", few).model_copy(update={"method": "kto"})
    with pytest.raises(OrchardError) as raised:
        feedback.run(config, [], settings)
    # Two thumbs and one pair unfolded into a desirable and an undesirable answer.
    assert "enough_rows" in str(raised.value) and "enough_pairs" not in str(raised.value)
    assert "4 labelled answers (2 from pairs), need at least 16" in str(raised.value)

    ups = [rating(f"u{i % 4}", f"Question {i}?", f"Answer {i}.", True) for i in range(20)]
    one_sided = export(tmp / "ups.jsonl", ups).model_copy(update={"method": "kto"})
    with pytest.raises(OrchardError, match=r"not_one_sided .*100% of judgements positive"):
        feedback.run(one_sided, [], settings)
