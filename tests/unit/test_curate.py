"""The curate step on a planted corpus: what a data engineer checks in the output."""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from orchard.pii import PHONE_PLACEHOLDER
from orchard.steps import run_step
from ray_jobs.curate import CurateConfig, curate
from testkit.corpus import article, planted_corpus

pytestmark = pytest.mark.slow

CONFIG = CurateConfig(tasks=2, workers=1)
PAGE = """<html><head><title>{title}</title></head><body>
<nav><a href="/">Home</a> | <a href="/about">About</a> | <a href="/login">Log in</a></nav>
<main><h1>{title}</h1>{paragraphs}</main>
<footer>Copyright 2026 Example Site. All rights reserved. Cookie settings.</footer>
</body></html>"""


def write_warc(path: Path, pages: dict[str, str]) -> None:
    with open(path, "wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        for url, html in pages.items():
            headers = StatusAndHeaders(
                "200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1"
            )
            record = writer.create_warc_record(
                url, "response", payload=io.BytesIO(html.encode()), http_headers=headers
            )
            writer.write_record(record)


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    import random

    root = tmp_path_factory.mktemp("curate")
    corpus = planted_corpus()
    text = root / "import" / "text"
    text.mkdir(parents=True)
    with gzip.open(text / "00000.jsonl.gz", "wt") as handle:
        for doc_id, body in sorted(corpus.documents.items()):
            body += "\n\nVisitors enjoy the cafe\u0301 by the river."  # decomposed é
            meta = {"url": f"https://site.test/{doc_id}", "source": "fixture"}
            handle.write(json.dumps({"text": body, "id": doc_id, "metadata": meta}) + "\n")
    # A shard cut in the middle of its gzip stream, as a killed writer leaves it.
    whole = gzip.compress(
        b"".join(json.dumps({"text": "x", "id": str(i)}).encode() + b"\n" for i in range(3))
    )
    (text / "00001.jsonl.gz").write_bytes(whole[: len(whole) // 2])

    rng = random.Random(7)
    pages = {
        f"https://site.test/page-{i}": PAGE.format(
            title=f"Page {i}",
            paragraphs="".join(f"<p>{p}</p>" for p in article(rng).split("\n\n")),
        )
        for i in range(3)
    }
    html = root / "crawl"
    html.mkdir()
    write_warc(html / "crawl-00000.warc.gz", pages)
    (html / "crawl-00001.warc.gz").write_bytes(b"\x1f\x8b\x08\x00garbage that is not a warc")

    manifest = run_step(
        step="curate",
        name="corpus",
        config=CONFIG,
        data_root=root / "data",
        body=lambda ctx: curate(CONFIG, [root / "import", root / "crawl"], ctx),
    )
    docs = {}
    for shard in sorted(Path(manifest.path, "documents").glob("*.jsonl.gz")):
        with gzip.open(shard, "rt") as handle:
            for line in handle:
                doc = json.loads(line)
                docs[doc["id"]] = doc
    return corpus, manifest, docs, pages


def test_planted_near_duplicates_go_and_distinct_documents_stay(curated):
    corpus, _, docs, _ = curated
    kept = set(docs)
    pairs = list(corpus.near_duplicates.items()) + list(corpus.exact_duplicates.items())
    removed_one = sum(1 for copy, original in pairs if (copy in kept) != (original in kept))
    recall = removed_one / len(pairs)
    distinct_removed = (
        {d for d in corpus.distinct if d not in kept}
        - set(corpus.near_duplicates.values())
        - set(corpus.exact_duplicates.values())
    )
    precision = 1 - len(distinct_removed) / len(corpus.distinct)
    assert recall >= 0.95, recall
    assert precision >= 0.99, distinct_removed


def test_pii_is_replaced(curated):
    corpus, _, docs, _ = curated
    for doc_id in corpus.with_pii:
        text = docs[doc_id]["text"] if doc_id in docs else ""
        assert "jane.doe@example-corp.com" not in text
        assert "415-555-0132" not in text
        assert "93.184.216.34" not in text
    everything = " ".join(doc["text"] for doc in docs.values())
    assert not re.search(r"[\w.]+@example-corp\.com", everything)
    assert PHONE_PLACEHOLDER in everything and "@example.com" in everything
    assert f"{PHONE_PLACEHOLDER}." not in everything  # IP placeholders stay whole


def test_unicode_is_composed(curated):
    _, _, docs, _ = curated
    texts = [doc["text"] for doc in docs.values() if "Visitors enjoy" in doc["text"]]
    assert texts and all("the café by" in text and "\u0301" not in text for text in texts)


def test_other_languages_are_dropped_with_a_reason(curated):
    corpus, manifest, docs, _ = curated
    assert not corpus.foreign & set(docs)
    counts = manifest.counts
    assert counts["filter.filter_language_id.dropped_language_fr"] == 2
    assert counts["filter.filter_language_id.dropped_language_de"] == 2
    assert {doc["metadata"]["language"] for doc in docs.values()} == {"en"}
    sample = Path(manifest.path, "dropped", "language.jsonl").read_text().splitlines()
    assert corpus.foreign <= {json.loads(line)["id"] for line in sample}


def test_html_pages_are_extracted_without_boilerplate(curated):
    _, _, docs, pages = curated
    from_html = [
        doc
        for doc in docs.values()
        if doc["metadata"].get("url", "").startswith("https://site.test/page-")
    ]
    assert len(from_html) == len(pages)
    for doc in from_html:
        assert "<p>" not in doc["text"] and "All rights reserved" not in doc["text"]
        assert len(doc["text"].split()) > 100


def test_corrupt_inputs_are_skipped_and_counted(curated):
    _, manifest, _, _ = curated
    corrupt = sum(v for k, v in manifest.counts.items() if k.endswith(".corrupt_files"))
    assert corrupt == 2


def test_every_drop_is_counted_and_sampled(curated):
    corpus, manifest, docs, _ = curated
    counts = manifest.counts
    dropped = sum(v for k, v in counts.items() if re.fullmatch(r"[^.]+\.[^.]+\.dropped", k))
    assert counts["documents"] == len(docs)
    samples = {p.stem for p in Path(manifest.path, "dropped").glob("*.jsonl")}
    assert {"language", "exact_duplicate", "near_duplicate"} <= samples
    # Everything that entered the filters either survived or was dropped by one step.
    entered = counts["filter.filter_url_filter.total"]
    assert entered - dropped == len(docs)


def test_a_second_run_is_skipped(curated, tmp_path):
    _, manifest, _, _ = curated
    root = Path(manifest.path).parent.parent.parent
    again = run_step(
        step="curate",
        name="corpus",
        config=CurateConfig(tasks=1, workers=2),  # parallelism is not part of the key
        data_root=root / "data",
        body=lambda ctx: pytest.fail("should have been skipped"),
    )
    assert again == manifest


def test_the_ray_executor_curates_the_same_corpus(curated, tmp_path):
    import ray
    from datatrove.pipeline.readers import JsonlReader

    from orchard.datatrove_workspace import Workspace
    from orchard.errors import OrchardError
    from ray_jobs.curate import _execute

    _, local, docs, _ = curated
    sources = [Path(local.path).parents[2] / name for name in ("import", "crawl")]
    config = CurateConfig(executor="ray", tasks=2)
    # The step joins the Ray it finds, as a Ray job joins its cluster: here a local one
    # without the dashboard, which would only cost start-up time.
    temp = tempfile.mkdtemp(prefix="orc-", dir="/tmp")  # Ray's socket paths must stay short
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=temp,
    )
    try:
        on_ray = run_step(
            step="curate",
            name="corpus",
            config=config,
            data_root=tmp_path,
            body=lambda ctx: curate(config, sources, ctx),
        )
        # A task that fails (a reader with no input) fails the stage, with the task's log:
        # datatrove's Ray executor itself only logs it and returns.
        (tmp_path / "empty").mkdir()
        with pytest.raises(OrchardError, match=r"(?s)tasks \[0\] of 1 did not.*No files found"):
            reader = [JsonlReader(str(tmp_path / "empty"))]
            _execute("ray", config, "read", reader, Workspace(tmp_path / "failing"), 1)
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    assert on_ray.key == local.key  # the executor is not part of the result's address
    # The manifest records where each task of the filter stage ran (here: this machine).
    assert [(w["stage"], w["rank"]) for w in on_ray.workers] == [("filter", "0"), ("filter", "1")]
    assert {w["hostname"] for w in on_ray.workers} == {socket.gethostname()}
    ray_ids = set()
    for shard in Path(on_ray.path, "documents").glob("*.jsonl.gz"):
        with gzip.open(shard, "rt") as handle:
            ray_ids |= {json.loads(line)["id"] for line in handle}
    assert ray_ids == set(docs)


def test_with_its_files_in_the_bucket_curate_makes_the_same_corpus(curated, tmp_path):
    """On a Ray cluster of several hosts datatrove's files live in the step's work prefix
    in the bucket, every node reaching them, and the inputs are read from where they are
    published. Run here by datatrove's local executor on that shared workspace (moto
    stands in for the bucket): the same documents, counts and dropped samples as on disk."""
    import uuid

    import boto3

    from orchard.datatrove_workspace import Workspace
    from orchard.steps import localize
    from orchard.storage import S3Options, Storage
    from testkit.s3 import moto_s3

    _, local, docs, _ = curated
    root = Path(local.path).parents[2]
    sources = [root / name for name in ("import", "crawl")]
    with moto_s3() as endpoint:
        keys = {"access_key": "testing", "secret_key": "testing"}
        bucket = f"orchard-{uuid.uuid4().hex[:8]}"
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket=bucket)
        for source in sources:  # published where a crawl and an import step put them
            for path in source.rglob("*"):
                if path.is_file():
                    key = f"src/{source.name}/{path.relative_to(source).as_posix()}"
                    s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        store = Storage(
            f"s3://{bucket}/data", s3=S3Options(endpoint=endpoint, **keys), cache=tmp_path
        )
        published = [f"s3://{bucket}/src/{source.name}" for source in sources]

        def body(ctx):
            shared, filesystem = ctx.durable("datatrove")
            workspace = Workspace(ctx.work, shared=shared, filesystem=filesystem)
            return curate(CONFIG, sources, ctx, published, ("local", workspace))

        done = run_step(step="curate", name="corpus", config=CONFIG, data_root=store, body=body)
        assert done.path.startswith(f"s3://{bucket}/data/curate/")
        # datatrove's stages wrote into the work prefix, which is gone once published.
        assert not [k for k in objects(s3, bucket) if ".work/" in k]
        copy = Path(localize(done, store).path)
    shared_docs = {}
    for shard in sorted((copy / "documents").glob("*.jsonl.gz")):
        with gzip.open(shard, "rt") as handle:
            shared_docs |= {doc["id"]: doc for doc in map(json.loads, handle)}
    assert without_file_path(shared_docs) == without_file_path(docs)
    # datatrove records the file a document came from: here its object in the bucket.
    assert {d["metadata"]["file_path"].split("/src/")[0] for d in shared_docs.values()} == {
        f"s3://{bucket}"
    }
    assert done.counts == local.counts
    samples = sorted((Path(local.path) / "dropped").glob("*.jsonl"))
    assert samples
    for sample in samples:
        ours, theirs = ((p / "dropped" / sample.name) for p in (copy, Path(local.path)))
        assert dropped_rows(ours) == dropped_rows(theirs), sample.name


def dropped_rows(path: Path) -> dict[str, dict]:
    return without_file_path({row["id"]: row for row in map(json.loads, path.open())})


def without_file_path(docs: dict[str, dict]) -> dict[str, dict]:
    return {
        key: {**doc, "metadata": {k: v for k, v in doc["metadata"].items() if k != "file_path"}}
        for key, doc in docs.items()
    }


def objects(s3, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_code_heavy_documentation_is_kept_with_a_lower_alpha_ratio(tmp_path):
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter

    from orchard.datatrove_workspace import Workspace
    from ray_jobs.curate import _filter_pipeline

    # About 70 % of datatrove's words (punctuation marks count as words) have a letter.
    rows = "\n".join(
        f"Calling append with {i} adds item {i} and the length becomes {i + 1}." for i in range(30)
    )
    doc = Document(
        text="The array module stores numbers compactly. Example of its use:\n" + rows,
        id="array",
    )

    def verdict(config: CurateConfig):
        (gopher,) = [
            step
            for step in _filter_pipeline(config, [], Workspace(tmp_path))
            if isinstance(step, GopherQualityFilter)
        ]
        return gopher.filter(doc)

    assert verdict(CONFIG) == (False, "gopher_below_alpha_threshold")
    assert verdict(CONFIG.model_copy(update={"min_alpha_words_ratio": 0.6})) is True
