"""The step contract on object storage: an `s3://` data root, staging then publish.

moto's S3 server stands in for MinIO (no MinIO server ships in a package registry): a real
S3 endpoint on loopback that pyarrow's S3 filesystem, boto3 and the `minio` client talk to
unchanged.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import threading
import uuid
from pathlib import Path

import boto3
import pytest

from orchard.errors import OrchardError
from orchard.settings import SettingsError, load_settings
from orchard.steps import (
    MANIFEST,
    Manifest,
    StepConfig,
    StepContext,
    StepOutput,
    latest,
    localize,
    run_step,
)
from orchard.storage import S3Options, Storage, StorageError
from ray_jobs import tokenize, tokenizer
from testkit.corpus import article
from testkit.s3 import moto_s3

KEYS = {"access_key": "testing", "secret_key": "testing"}


class Fixture(StepConfig):
    label: str


@pytest.fixture(scope="module")
def endpoint():
    with moto_s3() as url:
        yield url


@pytest.fixture
def bucket(endpoint) -> str:
    name = f"orchard-{uuid.uuid4().hex[:8]}"
    client(endpoint).create_bucket(Bucket=name)
    return name


def client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def objects(endpoint: str, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """The bucket's objects, less the empty `dir/` markers pyarrow keeps for directories."""
    s3 = client(endpoint)
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if item["Key"].endswith("/"):
                continue
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            found[item["Key"]] = body
    return found


def store(endpoint: str, bucket: str, cache: Path) -> Storage:
    return Storage(f"s3://{bucket}/data", s3=S3Options(endpoint=endpoint, **KEYS), cache=cache)


def writes(files: dict[str, str], calls: list[int] | None = None):
    def body(ctx: StepContext) -> StepOutput:
        if calls is not None:
            calls.append(1)
        for name, text in files.items():
            (ctx.out / name).parent.mkdir(parents=True, exist_ok=True)
            (ctx.out / name).write_text(text)
        return StepOutput(counts={"files": len(files)})

    return body


def test_a_failed_upload_leaves_no_manifest_and_the_retry_publishes_only_its_own_files(
    endpoint, bucket, tmp_path
):
    root = store(endpoint, bucket, tmp_path / "cache")
    config = Fixture(label="a")

    def broken(ctx: StepContext) -> StepOutput:
        writes({"a.txt": "one", "b/b.txt": "two"})(ctx)
        # Sorted last: its upload fails after the others went up (a file that vanished).
        (ctx.out / "zz-gone").symlink_to(ctx.out / "nowhere")
        return StepOutput()

    with pytest.raises(StorageError, match="cannot upload"):
        run_step(step="mix", name="m", config=config, data_root=root, body=broken)
    left = objects(endpoint, bucket)
    (final,) = {key.rsplit("/", 1)[0] for key in left if key.endswith("a.txt")}
    assert sorted(left) == [f"{final}/a.txt", f"{final}/b/b.txt"]  # data went up, no manifest
    assert latest(root, "mix") is None  # readers ignore a step directory without manifest
    assert not list((tmp_path / "cache" / "steps" / "mix").glob(".m-*.staging-*"))

    done = run_step(
        step="mix", name="m", config=config, data_root=root, body=writes({"a.txt": "1"})
    )
    assert done.path == f"s3://{bucket}/{final.removeprefix(bucket + '/')}"
    published = objects(endpoint, bucket)
    # The failed attempt's b/b.txt is gone: the result is exactly what the manifest lists.
    assert sorted(published) == [f"{final}/a.txt", f"{final}/{MANIFEST}"]
    assert published[f"{final}/a.txt"] == b"1"
    assert done.files == {"a.txt": 1}
    assert Manifest.model_validate_json(published[f"{final}/{MANIFEST}"]) == done
    assert latest(root, "mix") == done


def test_republishing_is_idempotent_and_a_forced_rebuild_replaces_the_whole_result(
    endpoint, bucket, tmp_path
):
    root = store(endpoint, bucket, tmp_path / "cache")
    config, calls = Fixture(label="b"), []
    first = run_step(
        step="mix",
        name="m",
        config=config,
        data_root=root,
        body=writes({"x": "1", "y": "2"}, calls),
    )
    before = objects(endpoint, bucket)
    again = run_step(
        step="mix", name="m", config=config, data_root=root, body=writes({"x": "9"}, calls)
    )
    assert again == first and len(calls) == 1  # done: skipped, nothing rewritten
    assert objects(endpoint, bucket) == before

    rebuilt = run_step(
        step="mix",
        name="m",
        config=config,
        data_root=root,
        body=writes({"x": "3"}, calls),
        force=True,
    )
    assert rebuilt.key == first.key and rebuilt.files == {"x": 1}
    prefix = first.path.removeprefix(f"s3://{bucket}/")
    assert {k: v for k, v in objects(endpoint, bucket).items() if "/." not in k} == {
        f"{prefix}/x": b"3",
        f"{prefix}/{MANIFEST}": rebuilt.model_dump_json(indent=2).encode(),
    }
    # A reader on another host (empty cache) gets the rebuilt files, not a stale copy.
    other = localize(Manifest.read(first.path, root), store(endpoint, bucket, tmp_path / "c2"))
    assert Path(other.path, "x").read_text() == "3"
    assert other.ref.path == first.path  # lineage names the published location


def test_a_failure_report_beside_the_output_is_published_and_the_step_is_not(
    endpoint, bucket, tmp_path
):
    root = store(endpoint, bucket, tmp_path / "cache")

    def fails_its_suite(ctx: StepContext) -> StepOutput:
        # What validate and chat_data do: keep a report people open, then fail the step.
        report = ctx.out.parent / f"failed-{ctx.key}"
        report.mkdir()
        (report / "validation.json").write_text('{"success": false}')
        raise OrchardError("the corpus failed 1 rule")

    with pytest.raises(OrchardError, match="failed 1 rule"):
        run_step(
            step="validate",
            name="c",
            config=Fixture(label="d"),
            data_root=root,
            body=fails_its_suite,
        )
    (key,) = objects(endpoint, bucket)
    assert key.startswith("data/validate/failed-") and key.endswith("/validation.json")
    assert latest(root, "validate") is None


def test_a_reader_never_sees_a_manifest_before_its_data(endpoint, bucket, tmp_path):
    root = store(endpoint, bucket, tmp_path / "cache")
    files = {f"part-{i:02d}.txt": "x" * (i + 1) for i in range(30)}
    seen: list[Manifest] = []
    stop = threading.Event()

    def reader() -> None:
        other = store(endpoint, bucket, tmp_path / "reader")
        while not stop.is_set():
            found = latest(other, "mix")
            if found is not None:
                seen.append(found)
                present = other.files(found.path)
                missing = [n for n, size in found.files.items() if present.get(n) != size]
                assert not missing, f"manifest visible before {missing}"
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        done = run_step(
            step="mix", name="m", config=Fixture(label="c"), data_root=root, body=writes(files)
        )
    finally:
        thread.join(timeout=30)
        stop.set()
    assert seen == [done] and len(done.files) == 30


def test_published_files_are_stored_byte_for_byte_compressed_ones_too(endpoint, bucket, tmp_path):
    """What any S3 client (boto3, `mc`, datatrove's fsspec reader on a Ray node) reads is
    the file the step wrote: pyarrow would gzip a `.gz` name once more on the way up
    (and gunzip it on the way down) unless told not to."""
    shard = gzip.compress(b'{"id": "a", "text": "one"}\n')

    def body(ctx: StepContext) -> StepOutput:
        (ctx.out / "documents").mkdir()
        (ctx.out / "documents" / "00000.jsonl.gz").write_bytes(shard)
        return StepOutput()

    root = store(endpoint, bucket, tmp_path / "cache")
    done = run_step(step="mix", name="gz", config=Fixture(label="gz"), data_root=root, body=body)
    key = f"{done.path.removeprefix(f's3://{bucket}/')}/documents/00000.jsonl.gz"
    assert objects(endpoint, bucket)[key] == shard
    assert done.files["documents/00000.jsonl.gz"] == len(shard)
    copy = store(endpoint, bucket, tmp_path / "elsewhere")  # a reader on another host
    local = Path(localize(Manifest.read(done.path, copy), copy).path)
    assert (local / "documents" / "00000.jsonl.gz").read_bytes() == shard


def test_a_dag_task_finds_a_published_step_on_s3_without_a_ray_job(endpoint, bucket, tmp_path):
    from orchard.ray_submit import run_step_job
    from orchard.settings import Settings

    settings = Settings(
        home=tmp_path / "home",
        data_root=f"s3://{bucket}/data",
        s3_endpoint=endpoint,
        s3_access_key="testing",
        s3_secret_key="testing",
        ray_address="http://127.0.0.1:9",  # nothing listens: a job submission would fail
    )
    config = Fixture(label="e")
    done = run_step(
        step="mix",
        name="m",
        config=config,
        data_root=Storage.from_settings(settings),
        body=writes({"x": "1"}),
    )
    logged: list[str] = []
    found = run_step_job(
        settings,
        module="mix",
        step="mix",
        name="m",
        config=config,
        inputs=[],
        base_id="t",
        log=logged.append,
    )
    assert found == done and logged == [f"mix: already done, skipped: {done.path}"]
    assert not (tmp_path / "home" / "data").exists()


def corpus_body(ctx: StepContext) -> StepOutput:
    rng = random.Random(5)
    (ctx.out / "documents").mkdir()
    with gzip.open(ctx.out / "documents" / "00000.jsonl.gz", "wt") as handle:
        for i in range(24):
            doc = {"text": article(rng, paragraphs=2), "id": f"d-{i}", "metadata": {}}
            handle.write(json.dumps(doc) + "\n")
    return StepOutput(counts={"documents": 24})


def on_host(monkeypatch, tmp_path: Path, host: str, endpoint: str, data_root: str) -> Path:
    """The environment of a step job on `host`: its own home (cache) and working dir."""
    home = tmp_path / host
    home.mkdir()
    monkeypatch.chdir(home)
    for name in [k for k in os.environ if k.startswith("ORCHARD_") or k == "RAY_ADDRESS"]:
        monkeypatch.delenv(name)
    env = {
        "ORCHARD_HOME": str(home / ".orchard"),
        "ORCHARD_DATA_ROOT": data_root,
        "ORCHARD_S3_ENDPOINT": endpoint,
        "ORCHARD_S3_ACCESS_KEY": "testing",
        "ORCHARD_S3_SECRET_KEY": "testing",
        # MLflow's file store: a sqlite one costs ~25 s of migrations on first use.
        "ORCHARD_MLFLOW_TRACKING_URI": (tmp_path / "mlruns").as_uri(),
        "MLFLOW_ALLOW_FILE_STORE": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return home


def test_steps_on_an_s3_data_root_read_each_others_outputs_and_write_no_local_s3_folder(
    endpoint, bucket, tmp_path, monkeypatch, capsys
):
    data_root = f"s3://{bucket}/data"
    corpus = run_step(
        step="mix",
        name="corpus",
        config=Fixture(label="corpus"),
        data_root=store(endpoint, bucket, tmp_path / "seed-cache"),
        body=corpus_body,
    )
    # Host B trains the tokenizer from the corpus on S3 ...
    host_b = on_host(monkeypatch, tmp_path, "b", endpoint, data_root)
    config = json.dumps({"vocab_size": 300, "valid_fraction": 0.2})
    assert tokenizer.main(["--config", config, "--input", f"{corpus.path}/{MANIFEST}"]) == 0
    printed = capsys.readouterr().out.strip().removeprefix("manifest: ")
    assert printed.startswith(f"{data_root}/tokenizer/tokenizer-") and printed.endswith(MANIFEST)
    # ... host C tokenizes with it, reading both inputs from S3 (its cache starts empty).
    host_c = on_host(monkeypatch, tmp_path, "c", endpoint, data_root)
    args = ["--config", json.dumps({"valid_fraction": 0.2}), "--input", printed]
    assert tokenize.main([*args, "--input", corpus.path]) == 0
    tokenized = capsys.readouterr().out.strip().removeprefix("manifest: ")

    done = Manifest.read(tokenized.removesuffix(f"/{MANIFEST}"))
    bpe = Manifest.read(printed.removesuffix(f"/{MANIFEST}"))
    assert [ref.path for ref in done.inputs] == [bpe.path, corpus.path]  # lineage on S3
    assert done.counts["documents.train"] + done.counts["documents.valid"] == 24
    keys = objects(endpoint, bucket, "data/tokenize/")
    prefix = done.path.removeprefix(f"s3://{bucket}/")
    assert set(done.files) >= {"datasets.json", "tokenizer/tokenizer.json", "train/00000.bin"}
    assert {k.removeprefix(prefix + "/") for k in keys} == {*done.files, MANIFEST}
    datasets = json.loads(keys[f"{prefix}/datasets.json"])
    assert datasets["tokenizer"] == "tokenizer"  # self-contained: no path on host C
    # Nothing landed in a local folder named like the URI, on either host.
    for home in (host_b, host_c, tmp_path):
        assert not [p for p in home.rglob("*") if p.name.startswith("s3:")]
    assert list((host_c / ".orchard" / "cache" / "inputs" / "tokenizer").iterdir())


def test_a_bad_data_root_or_a_missing_bucket_is_one_line(
    endpoint, bucket, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("ORCHARD_DATA_ROOT", "gs://bucket/data")
    with pytest.raises(SettingsError, match="gs:// is not supported"):
        load_settings()
    corpus = run_step(
        step="mix",
        name="corpus",
        config=Fixture(label="corpus"),
        data_root=store(endpoint, bucket, tmp_path / "seed-cache"),
        body=corpus_body,
    )
    on_host(monkeypatch, tmp_path, "a", endpoint, "s3://no-such-bucket/data")
    assert tokenizer.main(["--config", "{}", "--input", corpus.path]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "bucket 'no-such-bucket' does not exist" in error
    root = Storage("s3://no-such-bucket/x", s3=S3Options(endpoint="http://127.0.0.1:9", **KEYS))
    with pytest.raises(OrchardError, match="cannot reach the data root"):
        root.check_writable()


def test_a_registered_versions_lineage_names_published_locations_not_a_hosts_copy(
    endpoint, bucket, tmp_path, monkeypatch
):
    """A step job reads its inputs from a local copy (`localize`); what it records for
    later readers on other hosts (lineage tags, the model card) is where they are on S3."""
    from ray_jobs.register import model_card, version_tags

    root = store(endpoint, bucket, tmp_path / "cache")
    corpus = run_step(
        step="curate", name="c", config=Fixture(label="c"), data_root=root, body=writes({"x": "1"})
    )
    model = run_step(
        step="sft",
        name="m",
        config=Fixture(label="m"),
        data_root=root,
        inputs=[corpus],
        body=writes({"hf/config.json": "{}"}),
    )
    on_host(monkeypatch, tmp_path, "a", endpoint, root.root)  # a job's settings
    local = localize(model, root)
    assert Path(local.path).is_dir()  # what the register step reads
    tags = version_tags(local, None)
    assert tags["orchard.lineage.sft"] == model.path
    assert tags["orchard.lineage.curate"] == corpus.path
    assert model.path.startswith(f"s3://{bucket}/data/sft/m-")
    assert f"({model.path.rsplit('/', 1)[-1]})" in model_card(local, None)
