"""The chat_data step: questions grounded in the documented entries of the curated pages
(found back through the crawl's WARC), a held-out split of entries that never reaches
training, preference pairs with three kinds of hard negatives, validated uploads, and
byte-identical output for the same input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchard.decontamination import words
from orchard.errors import OrchardError
from orchard.safety import REFUSAL, TRAIN
from orchard.settings import Settings
from orchard.steps import MANIFEST, Manifest, run_step
from ray_jobs import chat_data
from ray_jobs.chat_data import ChatDataConfig
from tests.chat_corpus import SITE, Fixture, tiny_model, upstream

pytestmark = pytest.mark.slow  # Great Expectations validates two sets per run


def settings(root: Path) -> Settings:
    return Settings(home=root / "home", data_root=str(root), mlflow_tracking_uri=None)


@pytest.fixture(autouse=True)
def no_mlflow(monkeypatch):
    monkeypatch.setattr(Settings, "mlflow_uri", property(lambda self: None))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Manifest]:
    root = tmp_path_factory.mktemp("chat")
    return root, upstream(root)


@pytest.fixture(scope="module")
def model(corpus) -> Manifest:
    root, _ = corpus
    return run_step(
        step="pretrain", name="tiny", config=Fixture(label="m"), data_root=root, body=tiny_model
    )


def rows(done: Manifest, name: str) -> list[dict]:
    return [json.loads(line) for line in (Path(done.path) / name).read_text().splitlines()]


def answers_by_question(done: Manifest) -> dict[str, dict]:
    found = {}
    for name in ("sft/train.jsonl", "sft/heldout.jsonl"):
        for row in rows(done, name):
            found[row["messages"][0]["content"]] = row
    return found


def test_questions_are_grounded_in_the_entries_of_the_surviving_pages(corpus):
    root, curate = corpus
    done = chat_data.run(ChatDataConfig(), curate, settings(root))
    asked = answers_by_question(done)
    by_entry: dict[str, list[dict]] = {}
    for row in asked.values():
        by_entry.setdefault(row["entry"], []).append(row)

    dumps = {row["messages"][-1]["content"] for row in by_entry["json.dumps"]}
    description = (
        "Serialize obj to a JSON formatted str using this conversion table.\n\n"
        "Keys in key/value pairs of JSON are always of the type str."
    )
    assert description in dumps  # its own first paragraphs, not what follows the example
    assert "json.dumps(obj, *, indent=None)" in dumps  # the signature question
    assert any(a.startswith("The `json` module provides `json.dumps`") for a in dumps)
    assert {"json.loads", "json.JSONDecodeError", "json.JSONDecodeError.msg"} <= set(by_entry)
    assert {"json.JSONEncoder", "json.JSONEncoder.encode", "textwrap.wrap"} <= set(by_entry)
    assert by_entry["json.JSONDecodeError.msg"][0]["messages"][-1]["content"] == (
        "The unformatted error message of the failed decoding."
    )
    sections = {row["entry"]: row for row in asked.values() if row["source"] == "section"}
    usage = sections[f"{SITE}/library/json.html#basic-usage"]
    assert usage["messages"][0]["content"] in (
        "What does the `json` documentation say about Basic Usage?",
        "In the `json` documentation, what is said about Basic Usage?",
    )
    assert usage["messages"][-1]["content"] == (
        "The json module exposes an API familiar to users of the marshal and pickle modules."
    )
    pruning = sections[f"{SITE}/handbook.html#pruning"]  # a plain, non-Sphinx page
    assert "“Orchard handbook”" in pruning["messages"][0]["content"]
    assert pruning["messages"][-1]["content"].startswith("Prune apple trees in late winter")
    assert by_entry["book-1#text"][0]["messages"][-1]["content"].startswith("Pear trees prefer")
    # Nothing from the page curation dropped, the sidebars, permalinks or raw e-mails.
    everything = json.dumps(list(asked.values()), ensure_ascii=False)
    assert "secret" not in everything and "Navigation" not in everything
    assert "¶" not in everything and "docs@python.org" not in everything
    assert "@example." in everything  # the address replaced as curate replaces it
    train = rows(done, "sft/train.jsonl")
    refusals = [row for row in train if row["source"] == "safety"]
    assert [row["messages"][0]["content"] for row in refusals] == list(TRAIN)
    assert all(row["messages"][-1]["content"] == REFUSAL for row in refusals)
    assert all(row["source"] != "safety" for row in rows(done, "sft/heldout.jsonl"))
    assert len({q.casefold() for q in asked}) == len(asked)  # no question twice
    counts = done.counts
    assert counts["entries"] == len(set(by_entry) - {None}) == 16
    assert counts["sft_train"] + counts["sft_heldout"] == len(asked)  # safety included
    assert counts["sft_train.safety"] == len(TRAIN)
    report = json.loads((Path(done.path) / "validation.json").read_text())
    assert report["sft"]["success"] and report["preference"]["success"]
    assert (Path(done.path) / "data_docs" / "sft" / "index.html").is_file()
    assert (Path(done.path) / "data_docs" / "preference" / "index.html").is_file()


def test_heldout_entries_never_reach_a_training_file(corpus):
    root, curate = corpus
    done = chat_data.run(ChatDataConfig(heldout_fraction=0.5, seed=7), curate, settings(root))
    heldout = rows(done, "sft/heldout.jsonl")
    held = {row["entry"] for row in heldout}
    assert held and done.counts["entries_heldout"] == len(held)
    held_answers = {row["messages"][-1]["content"] for row in heldout}
    train = rows(done, "sft/train.jsonl")
    assert train and not held & {row["entry"] for row in train}
    training_texts = {row["messages"][-1]["content"] for row in train}
    for row in rows(done, "preference/train.jsonl"):
        training_texts |= {row["chosen"][0]["content"], row["rejected"][0]["content"]}
        training_texts |= {message["content"] for message in row["prompt"]}
    assert not held_answers & training_texts
    questions = {row["messages"][0]["content"] for row in heldout}
    assert not questions & {row["messages"][0]["content"] for row in train}


def test_preference_pairs_have_three_kinds_of_hard_negatives(corpus, model):
    root, curate = corpus
    config = ChatDataConfig(base_samples=12, max_new_tokens=8, batch_size=4)
    done = chat_data.run(config, [curate, model], settings(root))
    pairs = rows(done, "preference/train.jsonl") + rows(done, "preference/heldout.jsonl")
    assert {row["negative"] for row in pairs} == {"same_module", "truncated", "base_sample"}
    for row in pairs:
        assert set(row) == {"id", "prompt", "chosen", "rejected", "negative"}
        assert row["prompt"][-1]["role"] == "user"
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert chosen.strip() and rejected.strip() and chosen != rejected
        if row["negative"] == "truncated":
            assert chosen.startswith(rejected) and len(rejected) < 0.6 * len(chosen)
    assert 0 < done.counts.get("base_samples", 0) <= 12
    assert len({row["id"] for row in pairs}) == len(pairs)
    # A same-module negative answers the same kind of question about another entry:
    # a signature question gets another object's signature, not a description.
    signature = ("What is the signature of", "How is `", "What arguments does")
    asked = [row for row in pairs if row["negative"] == "same_module"]
    signatures = [row for row in asked if row["prompt"][-1]["content"].startswith(signature)]
    assert signatures and all("(" in row["rejected"][0]["content"] for row in signatures)


def test_uploads_go_to_training_and_a_bad_row_names_its_line(corpus, tmp_path):
    root, curate = corpus
    good = tmp_path / "good.jsonl"
    conversation = [
        {"role": "system", "content": "You answer about orchards."},
        {"role": "user", "content": "When do pears ripen?"},
        {"role": "assistant", "content": "Most pears ripen off the tree in late summer."},
    ]
    good.write_text(json.dumps({"messages": conversation}) + "\n\n")
    done = chat_data.run(ChatDataConfig(uploads=[str(good)]), curate, settings(root))
    uploaded = [row for row in rows(done, "sft/train.jsonl") if row["source"] == "upload"]
    assert [row["messages"] for row in uploaded] == [conversation]
    assert done.config["uploads_sha256"] and done.counts["sft_train.upload"] == 1
    assert all(row["source"] != "upload" for row in rows(done, "sft/heldout.jsonl"))

    bad = tmp_path / "bad.jsonl"
    ok = json.dumps({"messages": conversation})
    cases = {
        json.dumps({"messages": conversation[:2]}): "last message is 'user'",
        json.dumps({"messages": [{"role": "bot", "content": "hi"}]}): "role 'bot'",
        json.dumps({"messages": [*conversation[:2], {"role": "assistant", "content": " "}]}): (
            "no text content"
        ),
        json.dumps({"text": "no messages"}): 'no "messages"',
        "{not json": "not a JSON line",
    }
    for line, problem in cases.items():
        bad.write_text(f"{ok}\n{line}\n")
        with pytest.raises(OrchardError, match=rf"bad\.jsonl:2: .*{problem}"):
            chat_data.run(ChatDataConfig(uploads=[str(bad)]), curate, settings(root))
    with pytest.raises(OrchardError, match="cannot read upload"):
        chat_data.run(
            ChatDataConfig(uploads=[str(tmp_path / "gone.jsonl")]), curate, settings(root)
        )


def test_an_eval_question_planted_in_the_training_data_is_removed_and_counted(corpus, tmp_path):
    root, curate = corpus
    config = ChatDataConfig(heldout_fraction=0.5, seed=7)
    clean = chat_data.run(config, curate, settings(root))
    assert clean.counts["decontamination.sft.removed"] == 0  # held out by entry already
    assert clean.counts["decontamination.sft.checked"] == clean.counts["sft_train"]
    assert clean.counts["decontamination.preference.checked"] == clean.counts["preference_train"]
    question, answer = next(
        (row["messages"][-2]["content"], row["messages"][-1]["content"])
        for row in rows(clean, "sft/heldout.jsonl")
        if len(words(row["messages"][-1]["content"])) >= 20
    )
    # An uploaded conversation carrying an evaluation answer, re-cased and re-spaced
    # (normalised away), and one that merely shares 12 consecutive words with it.
    cut = words(answer)
    planted = [
        {"role": "user", "content": "Tell me something."},
        {"role": "assistant", "content": "  ".join(cut[2:16]).upper() + "!"},
    ]
    near = [
        {"role": "user", "content": "Tell me something else."},
        {"role": "assistant", "content": " ".join(cut[:12]) + " and then something different."},
    ]
    upload = tmp_path / "planted.jsonl"
    upload.write_text("".join(json.dumps({"messages": m}) + "\n" for m in (planted, near)))
    done = chat_data.run(
        config.model_copy(update={"uploads": [str(upload)]}), curate, settings(root)
    )
    train = [row["messages"] for row in rows(done, "sft/train.jsonl")]
    assert planted not in train and near in train
    assert done.counts["decontamination.sft.checked"] == clean.counts["sft_train"] + 2
    assert done.counts["decontamination.sft.removed"] == 1
    assert done.counts["sft_train"] == clean.counts["sft_train"] + 1
    report = json.loads((Path(done.path) / "decontamination.json").read_text())
    assert report["sft"]["removed_ids"] == ["upload-0-planted-1"]
    assert report["n"] == 13 and question  # the held-out row it came from had a question


def test_a_failing_suite_fails_the_step_with_one_line(corpus, tmp_path, capsys, monkeypatch):
    root, curate = corpus
    monkeypatch.setenv("ORCHARD_HOME", str(tmp_path / "home"))  # the command line's settings
    monkeypatch.setenv("ORCHARD_DATA_ROOT", str(root))
    leaky = tmp_path / "leaky.jsonl"
    conversation = [
        {"role": "user", "content": "Who runs the orchard?"},
        {"role": "assistant", "content": "Write to alice.smith@orchard.io for details."},
    ]
    leaky.write_text(json.dumps({"messages": conversation}) + "\n")
    config = json.dumps({"uploads": [str(leaky)]})
    manifest = str(Path(curate.path) / MANIFEST)
    assert chat_data.main(["--config", config, "--input", manifest]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "the chat data's sft set failed 1 of" in error
    assert "no_email" in error and "upload-0-leaky-1" in error
    assert list((root / "chat_data").glob("failed-*/data_docs/sft/index.html"))


def test_inputs_are_checked(corpus):
    root, curate = corpus
    crawl = Manifest.read(Path(curate.inputs[0].path))
    with pytest.raises(OrchardError, match="one or more curate manifests"):
        chat_data.run(ChatDataConfig(), [], settings(root))
    with pytest.raises(OrchardError, match="has no hf/ model directory"):
        chat_data.run(ChatDataConfig(), [curate, crawl], settings(root))


def test_same_input_gives_identical_files_and_a_rerun_is_skipped(tmp_path):
    outputs = []
    for name in ("one", "two"):
        root = tmp_path / name
        curate = upstream(root)
        done = chat_data.run(ChatDataConfig(), curate, settings(root))
        again = chat_data.run(ChatDataConfig(), curate, settings(root))
        assert again == done  # the same manifest: skipped, not rebuilt
        outputs.append(done)
    one, two = outputs
    assert one.key == two.key and one.counts == two.counts
    for name in (
        "sft/train.jsonl",
        "sft/heldout.jsonl",
        "preference/train.jsonl",
        "preference/heldout.jsonl",
    ):
        assert (Path(one.path) / name).read_bytes() == (Path(two.path) / name).read_bytes()
