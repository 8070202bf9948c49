"""The tokenize step writes the corpus as Megatron indexed datasets that read back as
exactly the tokenizer's encoding of each document plus <|endoftext|>, split by id hash."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy
import pytest

from orchard.errors import OrchardError
from orchard.steps import Manifest, locate, run_step
from ray_jobs.tokenize import (
    SPLITS,
    Shard,
    TokenizeConfig,
    inputs_of,
    main,
    split_point,
    tokenize,
    tokenize_shipped,
    vocab_dtype,
)
from ray_jobs.tokenizer import TokenizerConfig, load, train_tokenizer
from testkit.corpus import article
from tests.unit.test_tokenizer import write_corpus

VALID = 0.25
LITERAL = "A page that shows <|endoftext|> and <|user|> as text. "


def shards() -> list[list[dict]]:
    """Two input shards; one document spells the control tokens out as plain text."""
    rng = random.Random(11)
    first = [{"id": f"a-{i:02d}", "text": article(rng, paragraphs=2)} for i in range(12)]
    second = [{"id": f"b-{i:02d}", "text": article(rng, paragraphs=2)} for i in range(9)]
    second.insert(4, {"id": "literal", "text": LITERAL + article(rng, paragraphs=1)})
    return [first, second]


def indexed_dataset(prefix: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset
    return IndexedDataset(str(prefix))


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[Manifest, Manifest]:
    """(tokenizer manifest, corpus manifest): the real tokenizer step on a small corpus."""
    root = tmp_path_factory.mktemp("sources")
    corpus = write_corpus(root, "corpus", shards())
    config = TokenizerConfig(vocab_size=512)
    tokenizer = run_step(
        step="tokenizer",
        name="bpe",
        config=config,
        data_root=root,
        inputs=[corpus],
        body=lambda ctx: train_tokenizer(config, Path(corpus.path), ctx),
    )
    return tokenizer, corpus


def tokenized(root: Path, sources, **config) -> Manifest:
    tokenizer, corpus = sources
    config = TokenizeConfig(**({"valid_fraction": VALID} | config))
    return run_step(
        step="tokenize",
        name="corpus",
        config=config,
        data_root=root,
        inputs=[tokenizer, corpus],
        body=lambda ctx: tokenize(
            config, Path(tokenizer.path, "tokenizer"), Path(corpus.path), ctx
        ),
    )


def expected_stream(sources, is_valid) -> dict[str, list[list[int]]]:
    """Per shard and split, each document's ids as the published tokenizer encodes its
    text (control-token spellings as text) followed by <|endoftext|>, in corpus order."""
    hf = load(Path(sources[0].path, "tokenizer"))
    eod = hf.convert_tokens_to_ids("<|endoftext|>")
    stream: dict[str, list[list[int]]] = {}
    for index, docs in enumerate(shards()):
        for doc in docs:
            ids = hf(doc["text"], add_special_tokens=False, split_special_tokens=True)
            split = "valid" if is_valid(doc["id"]) else "train"
            stream.setdefault(f"{split}/{index:05d}", []).append(ids["input_ids"] + [eod])
    return stream


def read_back(done: Manifest) -> dict[str, list[list[int]]]:
    datasets = json.loads(Path(done.path, "datasets.json").read_text())
    found = {}
    for split in ("train", "valid"):
        for entry in datasets[split]:
            dataset = indexed_dataset(Path(done.path, entry["prefix"]))
            assert dataset.index.dtype == numpy.uint16
            docs = [dataset[i].tolist() for i in range(len(dataset))]
            assert len(dataset.document_indices) == len(docs) + 1  # one item per document
            assert entry["documents"] == len(docs)
            assert entry["tokens"] == sum(map(len, docs))
            found[entry["prefix"]] = docs
    return found


def test_bin_idx_read_back_is_the_token_stream_in_order_with_the_split(tmp_path, sources):
    done = tokenized(tmp_path, sources, executor="local")
    expected = expected_stream(sources, lambda doc_id: split_point(doc_id) < VALID)
    assert {prefix.split("/")[0] for prefix in expected} == {"train", "valid"}
    assert read_back(done) == expected
    # <|endoftext|> only where a document ends, also after the page that spells it out.
    for docs in read_back(done).values():
        for ids in docs:
            assert [i for i, token in enumerate(ids) if token == 0] == [len(ids) - 1]
    datasets = json.loads(Path(done.path, "datasets.json").read_text())
    assert datasets["tokenizer"] == "tokenizer"  # its own copy, beside datasets.json
    copy, original = Path(done.path, "tokenizer"), Path(sources[0].path, "tokenizer")
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in original.iterdir())
    assert (copy / "tokenizer.json").read_bytes() == (original / "tokenizer.json").read_bytes()
    assert (datasets["vocab_size"], datasets["eod_id"], datasets["pad_id"]) == (512, 0, 4)
    assert datasets["dtype"] == "uint16"
    assert [e["source"] for e in datasets["train"]] == [
        "documents/00000.jsonl.gz",
        "documents/00001.jsonl.gz",
    ]
    for split in ("train", "valid"):
        docs = [d for prefix, ds in expected.items() if prefix.startswith(split) for d in ds]
        total = {"tokens": sum(map(len, docs)), "documents": len(docs)}
        assert datasets["totals"][split] == total
        assert done.counts[f"tokens.{split}"] == total["tokens"]
        assert done.metrics[f"documents.{split}"] == total["documents"]
    assert done.metrics["tokens_per_s"] > 0


def remote_datasets(done: Manifest) -> dict:
    return json.loads(Path(done.path, "datasets.json").read_text())


def test_ray_tasks_write_the_same_datasets(tmp_path, sources, caplog):
    import ray

    local = tokenized(tmp_path / "local", sources, executor="local")
    temp = tempfile.mkdtemp(prefix="ort-", dir="/tmp")  # Ray's socket paths must stay short
    ray.init(
        address="local",
        num_cpus=1,  # one worker takes both shards in turn: one megatron import
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=temp,
    )
    try:
        with caplog.at_level(logging.INFO, logger="orchard.tokenize"):
            remote = tokenized(tmp_path / "ray", sources, executor="auto")
        # A task on another host of a cluster sees none of the driver's files: the shard
        # and tokenizer go as arguments, the .bin/.idx come back as its result.
        shipped = ray.remote(tokenize_shipped)
        tokenizer_json = Path(sources[0].path, "tokenizer", "tokenizer.json").read_bytes()
        gone = tmp_path / "not-on-that-host"
        for index, source in enumerate(sorted(Path(sources[1].path).rglob("*.jsonl.gz"))):
            shard = Shard(
                name=f"{index:05d}",
                source=str(gone / source.name),
                out=str(gone / "out"),
                tokenizer_file=str(gone / "tokenizer.json"),
                eod_id=remote_datasets(remote)["eod_id"],
                dtype=remote_datasets(remote)["dtype"],
                valid_fraction=VALID,
                batch_documents=256,
            )
            result, files = ray.get(shipped.remote(shard, source.read_bytes(), tokenizer_json, 1))
            assert result.error is None and sum(result.documents.values()) > 0
            assert sorted(files) == [
                f"{s}/{shard.name}.{x}" for s in SPLITS for x in ("bin", "idx")
            ]
            for name, data in files.items():
                assert Path(remote.path, name).read_bytes() == data, name
        assert not gone.exists()
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    assert "2 shards as Ray tasks" in caplog.text
    assert local.key == remote.key  # where the work ran is not part of the result
    files = sorted(p.relative_to(local.path) for p in Path(local.path).rglob("*.[bi][id][nx]"))
    assert len(files) == 8  # train and valid .bin/.idx for both shards
    for name in files:
        assert Path(remote.path, name).read_bytes() == Path(local.path, name).read_bytes()


def test_without_a_document_under_the_fraction_the_lowest_hash_validates(tmp_path, sources, caplog):
    done = tokenized(tmp_path, sources, valid_fraction=1e-12, executor="local")
    ids = [doc["id"] for docs in shards() for doc in docs]
    lowest = min(ids, key=split_point)
    assert done.counts["documents.valid"] == 1
    assert read_back(done) == expected_stream(sources, lambda doc_id: doc_id == lowest)
    assert "lowest id hash" in caplog.text


def test_the_token_dtype_follows_the_vocabulary_size():
    assert vocab_dtype(512) == vocab_dtype(65_499) == "uint16"
    assert vocab_dtype(65_500) == vocab_dtype(100_352) == vocab_dtype(256_000) == "int32"


def test_bad_inputs_are_refused_clearly_and_publish_nothing(tmp_path, sources):
    tokenizer, corpus = sources
    with pytest.raises(OrchardError, match="needs two --input manifests"):
        inputs_of([corpus])
    broken = write_corpus(tmp_path, "broken", shards())
    second = Path(broken.path, "documents", "00001.jsonl.gz")
    second.write_bytes(second.read_bytes()[:-25])
    with pytest.raises(OrchardError, match=r"corrupt corpus shard .*00001.jsonl.gz"):
        tokenized(tmp_path, (tokenizer, broken), executor="local")
    config = TokenizeConfig(valid_fraction=VALID)
    assert not locate(tmp_path, "tokenize", "corpus", config, [tokenizer, broken]).exists()
    empty = write_corpus(tmp_path, "empty", [[]])
    with pytest.raises(OrchardError, match="has no documents"):
        tokenized(tmp_path, (tokenizer, empty), executor="local")
    with pytest.raises(OrchardError, match="no tokenizer.json in"):
        tokenized(tmp_path, (corpus, corpus), executor="local")
    with pytest.raises(OrchardError, match="has no <\\|eot\\|> token"):
        tokenized(tmp_path, sources, eod_token="<|eot|>")
    assert not list((tmp_path / "tokenize").glob("corpus-*"))


def test_command_line_records_both_inputs_and_logs_to_mlflow(
    tmp_path, sources, monkeypatch, capsys
):
    import mlflow

    for key in [k for k in os.environ if k.startswith("ORCHARD_")]:
        monkeypatch.delenv(key)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # executor auto: this process
    monkeypatch.chdir(tmp_path)  # MLflow's local artifact root is ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("ORCHARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORCHARD_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("ORCHARD_MLFLOW_TRACKING_URI", uri)
    tokenizer, corpus = sources
    args = ["--config", json.dumps({"valid_fraction": VALID})]
    args += ["--input", str(Path(tokenizer.path, "manifest.json"))]
    args += ["--input", str(Path(corpus.path, "manifest.json"))]
    assert main(args) == 0
    printed = capsys.readouterr().out.strip().removeprefix("manifest: ")
    done = Manifest.model_validate_json(Path(printed).read_text())
    assert {(ref.step, ref.key) for ref in done.inputs} == {
        ("tokenizer", tokenizer.key),
        ("mix", corpus.key),
    }
    run = mlflow.MlflowClient(tracking_uri=uri).get_run(done.mlflow_run_id)
    for name in ("tokens.train", "tokens.valid", "documents.train", "documents.valid"):
        assert run.data.metrics[name] == done.metrics[name] > 0
    assert run.data.metrics["tokens_per_s"] == done.metrics["tokens_per_s"] > 0
    # What pretraining loads: Megatron's tokenizer from the recorded directory.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.tokenizers import MegatronTokenizer
    datasets = json.loads(Path(done.path, "datasets.json").read_text())
    megatron = MegatronTokenizer.from_pretrained(str(Path(done.path, datasets["tokenizer"])))
    assert (megatron.eod, megatron.vocab_size) == (datasets["eod_id"], datasets["vocab_size"])
    assert main(args) == 0  # done: skipped, same manifest
    assert capsys.readouterr().out.strip().removeprefix("manifest: ") == printed
