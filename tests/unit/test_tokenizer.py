"""The tokenizer step trains a lossless byte-level BPE that transformers loads with
Orchard's special tokens and chat template, and proves it on held-out documents."""

from __future__ import annotations

import gzip
import json
import os
import random
from pathlib import Path

import pytest

from orchard.errors import OrchardError
from orchard.steps import Manifest, StepConfig, StepContext, StepOutput, run_step
from ray_jobs.tokenizer import (
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    TokenizerConfig,
    evaluate,
    is_heldout,
    load,
    main,
    read_shard,
    train_tokenizer,
)
from testkit.corpus import article

VOCAB = 512
HELDOUT = 0.1
TRAINED_WORD = " Qponmlkjih"  # repeated in a training document
UNSEEN_WORD = " Zyxwvutsrq"  # repeated in a held-out document only
# Text a lossy tokenizer would change: decomposed accents (not NFC), emoji with a skin
# tone, CJK, tabs and runs of spaces, CRLF, control characters, trailing whitespace,
# and the special tokens' spelling inside ordinary text.
TRICKY = [
    "Cafe\u0301 and nai\u0308ve are not NFC; caf\u00e9 is. 👍🏽 日本語のテキスト, Ελληνικά.",
    "def f(x):\n\tif x  >  1:\r\n        return  x\x00\x1b[0m  \n\n\n   ",
    "A literal <|endoftext|> and <|user|> inside a web page, and <|pad|>. ",
]


class FixtureCorpus(StepConfig):
    label: str


def ids_where(heldout: bool, prefix: str, count: int) -> list[str]:
    """The first `count` ids `prefix-N` that the step's hash rule holds out (or trains on)."""
    found, n = [], 0
    while len(found) < count:
        if is_heldout(f"{prefix}-{n}", HELDOUT) == heldout:
            found.append(f"{prefix}-{n}")
        n += 1
    return found


def corpus_docs() -> list[dict]:
    rng = random.Random(7)
    docs = [{"id": f"doc-{i:03d}", "text": article(rng)} for i in range(40)]
    (trained,) = ids_where(False, "planted-trained", 1)
    (unseen,) = ids_where(True, "planted-unseen", 1)
    docs.append({"id": trained, "text": article(rng) + TRAINED_WORD * 200})
    docs.append({"id": unseen, "text": article(rng) + UNSEEN_WORD * 200})
    for doc_id, text in zip(ids_where(True, "tricky", len(TRICKY)), TRICKY, strict=True):
        docs.append({"id": doc_id, "text": text + article(rng)})
    return docs


def write_corpus(root: Path, label: str, shards: list[list[dict]] | None = None) -> Manifest:
    """A finished mix step holding `shards` (datatrove JSONL) under documents/."""
    shards = [corpus_docs()] if shards is None else shards

    def body(ctx: StepContext) -> StepOutput:
        (ctx.out / "documents").mkdir()
        for index, docs in enumerate(shards):
            with gzip.open(ctx.out / "documents" / f"{index:05d}.jsonl.gz", "wt") as handle:
                for doc in docs:
                    handle.write(json.dumps(doc | {"metadata": {}}) + "\n")
        return StepOutput()

    return run_step(
        step="mix", name=label, config=FixtureCorpus(label=label), data_root=root, body=body
    )


def train_on(root: Path, corpus: Manifest, **config) -> Manifest:
    config = TokenizerConfig(**({"vocab_size": VOCAB, "valid_fraction": HELDOUT} | config))
    return run_step(
        step="tokenizer",
        name="tokenizer",
        config=config,
        data_root=root,
        inputs=[corpus],
        body=lambda ctx: train_tokenizer(config, Path(corpus.path), ctx),
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Manifest, Manifest]:
    root = tmp_path_factory.mktemp("tokenizer")
    corpus = write_corpus(root, "corpus")
    return corpus, train_on(root, corpus)


@pytest.fixture(scope="module")
def tokenizer(trained):
    return load(Path(trained[1].path, "tokenizer"))


def test_held_out_documents_round_trip_and_give_the_compression(trained, tokenizer):
    corpus, done = trained
    docs = corpus_docs()
    heldout = [d for d in docs if is_heldout(d["id"], HELDOUT)]
    assert len(heldout) >= 1 + len(TRICKY)
    assert done.counts["documents.heldout"] == len(heldout)
    assert done.counts["documents.train"] == len(docs) - len(heldout)
    assert done.counts["roundtrip_failures"] == 0
    assert done.metrics["heldout.roundtrip_exact"] == 1.0
    # Compression as a user recomputes it from the published tokenizer.
    data = sum(len(d["text"].encode()) for d in heldout)
    tokens = sum(len(tokenizer(d["text"], add_special_tokens=False)["input_ids"]) for d in heldout)
    assert done.counts["bytes.heldout"] == data and done.counts["tokens.heldout"] == tokens
    assert done.metrics["heldout.bytes_per_token"] == pytest.approx(data / tokens)
    assert data / tokens > 2  # merges learned: far better than one byte per token
    for doc in heldout:  # the tricky texts come back exactly
        ids = tokenizer(doc["text"], add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == doc["text"]
    report = json.loads(Path(done.path, "report.json").read_text())
    assert report["heldout"]["bytes_per_token"] == done.metrics["heldout.bytes_per_token"]
    assert report["special_tokens"] == {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    assert report["vocab_size"] == VOCAB == len(tokenizer)


def test_held_out_documents_are_not_trained_on(tokenizer):
    def pieces(word: str) -> int:
        return len(tokenizer(word, add_special_tokens=False)["input_ids"])

    # Both words occur 200 times; only the training document's became one token.
    assert pieces(TRAINED_WORD) == 1
    assert pieces(UNSEEN_WORD) > 3


def test_autotokenizer_loads_the_output_with_the_special_tokens(trained, tokenizer):
    from transformers import AutoTokenizer

    directory = Path(trained[1].path, "tokenizer")
    assert (directory / "chat_template.jinja").read_text() == CHAT_TEMPLATE
    fresh = AutoTokenizer.from_pretrained(str(directory))  # offline: a local directory
    assert fresh.eos_token == "<|endoftext|>" and fresh.eos_token_id == 0
    assert fresh.pad_token == "<|pad|>" and fresh.pad_token_id == 4
    for index, token in enumerate(SPECIAL_TOKENS):
        assert fresh(token, add_special_tokens=False)["input_ids"] == [index]
    text = "x = {'a': 1}  # naïve  "
    assert fresh.decode(fresh(text)["input_ids"]) == text  # no BOS, no space clean-up


def test_chat_template_renders_turns_and_masks_exactly_the_assistant_tokens(tokenizer):
    chat = [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "What is a list?"},
        {"role": "assistant", "content": "An ordered, mutable sequence."},
        {"role": "user", "content": "And a tuple?"},
        {"role": "assistant", "content": " An immutable one.\n"},
    ]
    text = tokenizer.apply_chat_template(chat, tokenize=False)
    assert text == (
        "<|system|>\nYou answer briefly.<|endoftext|>\n"
        "<|user|>\nWhat is a list?<|endoftext|>\n"
        "<|assistant|>\nAn ordered, mutable sequence.<|endoftext|>\n"
        "<|user|>\nAnd a tuple?<|endoftext|>\n"
        "<|assistant|>\n An immutable one.\n<|endoftext|>\n"
    )
    out = tokenizer.apply_chat_template(
        chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = out["input_ids"], out["assistant_masks"]
    for token in ("<|system|>", "<|user|>", "<|assistant|>", "<|endoftext|>"):
        assert tokenizer.convert_tokens_to_ids(token) in ids  # one control token each
    runs, current = [], []
    for token, marked in zip(ids, mask, strict=True):
        if marked:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    # Each assistant reply, with the <|endoftext|> that ends it, and nothing else.
    assert [tokenizer.decode(run) for run in runs] == [
        "An ordered, mutable sequence.<|endoftext|>",
        " An immutable one.\n<|endoftext|>",
    ]
    prompt = tokenizer.apply_chat_template(chat[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|user|>\nWhat is a list?<|endoftext|>\n<|assistant|>\n")
    assert not tokenizer.apply_chat_template(chat[:2], tokenize=False).endswith("<|assistant|>\n")
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert tokenizer.apply_chat_template(parts, tokenize=False) == "<|user|>\nHi<|endoftext|>\n"


def test_an_unknown_chat_role_is_refused(tokenizer):
    with pytest.raises(Exception, match="chat roles are system, user and assistant, not tool"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "42"}], tokenize=False)


def test_a_lossy_tokenizer_fails_the_round_trip_with_the_place_it_broke(tokenizer, tmp_path):
    """The check catches what a normaliser would do: NFC changes decomposed accents."""
    from tokenizers import Tokenizer, normalizers
    from transformers import PreTrainedTokenizerFast

    lossy = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    lossy.normalizer = normalizers.NFC()
    wrapped = PreTrainedTokenizerFast(tokenizer_object=lossy, clean_up_tokenization_spaces=False)
    shard = tmp_path / "docs.jsonl.gz"
    with gzip.open(shard, "wt") as handle:
        for doc_id, text in (("fine", "plain text"), ("decomposed", "Cafe\u0301 time")):
            handle.write(json.dumps({"id": doc_id, "text": text}) + "\n")
    docs = list(read_shard(shard))
    assert evaluate(tokenizer, docs).documents == 2  # Orchard's tokenizer: exact
    with pytest.raises(OrchardError, match=r"does not round-trip.* 1 of 2 .*'decomposed'"):
        evaluate(wrapped, docs)


def test_a_missing_empty_or_corrupt_corpus_is_refused_clearly(tmp_path):
    nothing = run_step(
        step="mix",
        name="nothing",
        config=FixtureCorpus(label="nothing"),
        data_root=tmp_path,
        body=lambda ctx: StepOutput(),
    )
    with pytest.raises(OrchardError, match="no documents/.*jsonl.gz under .*mix"):
        train_on(tmp_path, nothing)
    empty = write_corpus(tmp_path, "empty", [[]])
    with pytest.raises(OrchardError, match="has 0 document"):
        train_on(tmp_path, empty)
    corrupt = write_corpus(tmp_path, "corrupt", [corpus_docs()[:5], corpus_docs()[5:10]])
    second = Path(corrupt.path, "documents", "00001.jsonl.gz")
    second.write_bytes(second.read_bytes()[:-30])  # cut short, as by a failed copy
    with pytest.raises(OrchardError, match=r"corrupt corpus shard .*00001.jsonl.gz"):
        train_on(tmp_path, corrupt)
    not_json = write_corpus(tmp_path, "notjson", [corpus_docs()[:5]])
    with gzip.open(Path(not_json.path, "documents", "00000.jsonl.gz"), "at") as handle:
        handle.write('{"id": "x", "body": "no text field"}\n')
    with pytest.raises(OrchardError, match=r"line 6.*no \"text\""):
        train_on(tmp_path, not_json)
    assert not list((tmp_path / "tokenizer").glob("tokenizer-*"))  # nothing published


def test_vocab_presets_and_a_vocabulary_too_small_for_the_special_tokens(trained, capsys):
    assert TokenizerConfig(vocab_size="50k").vocab_size == 50_304
    assert TokenizerConfig(vocab_size="256K").vocab_size == 256_000
    with pytest.raises(ValueError, match="vocab_size 200 is too small.* at least 262"):
        TokenizerConfig(vocab_size=200)
    manifest = str(Path(trained[0].path, "manifest.json"))
    assert main(["--config", '{"vocab_size": 100}', "--input", manifest]) == 2
    assert "vocab_size 100 is too small" in capsys.readouterr().err


def test_command_line_trains_logs_to_mlflow_and_is_deterministic(
    trained, tmp_path, monkeypatch, capsys
):
    import mlflow

    for key in [k for k in os.environ if k.startswith("ORCHARD_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # MLflow's local artifact root is ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("ORCHARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORCHARD_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("ORCHARD_MLFLOW_TRACKING_URI", uri)
    config = json.dumps({"vocab_size": VOCAB, "valid_fraction": HELDOUT})
    manifest = str(Path(trained[0].path, "manifest.json"))
    assert main(["--config", config, "--input", manifest]) == 0
    printed = capsys.readouterr().out.strip().removeprefix("manifest: ")
    done = Manifest.model_validate_json(Path(printed).read_text())
    assert [(ref.step, ref.key) for ref in done.inputs] == [("mix", trained[0].key)]
    # Same corpus and config, another data root: the very same tokenizer.
    same = Path(done.path, "tokenizer", "tokenizer.json").read_text()
    assert same == Path(trained[1].path, "tokenizer", "tokenizer.json").read_text()
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(done.mlflow_run_id)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {
        "tokenizer",
        "manifest.json",
    }
    assert run.data.metrics["heldout.bytes_per_token"] == done.metrics["heldout.bytes_per_token"]
    assert run.data.metrics["heldout.roundtrip_exact"] == 1.0
    assert run.data.tags["orchard.step"] == "tokenizer"
