"""The import step: every kind of source arrives once in the document stream that curate
reads (checked with datatrove's own readers), bad rows, records and files are skipped and
counted instead of stopping the step, and the step key follows the input files."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datatrove.pipeline.readers import JsonlReader, WarcReader
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

import ray_jobs.ingest as ingest
from orchard import steps
from orchard.errors import OrchardError
from orchard.settings import Settings
from orchard.steps import run_step, step_key
from ray_jobs.ingest import ImportConfig, import_documents

REPO = Path(__file__).resolve().parents[2]


def page(words: str) -> bytes:
    return f"<html><body><article><p>{words}</p></article></body></html>".encode()


def write_warc(path: Path, records: list[tuple[str, str, str, bytes]]) -> list[int]:
    """(type, url, content type, body) records, gzipped one member each; returns the
    offset where each record ends."""
    ends = []
    with open(path, "wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        for rec_type, url, ctype, body in records:
            if rec_type == "request":
                http = StatusAndHeaders(
                    "GET / HTTP/1.1", [("Host", "web.test")], is_http_request=True
                )
                record = writer.create_warc_record(url, "request", http_headers=http)
            elif rec_type == "conversion":
                record = writer.create_warc_record(
                    url, "conversion", payload=io.BytesIO(body), warc_content_type=ctype
                )
            else:
                status = "404 Not Found" if url.endswith("/missing") else "200 OK"
                http = StatusAndHeaders(status, [("Content-Type", ctype)], protocol="HTTP/1.1")
                record = writer.create_warc_record(
                    url, "response", payload=io.BytesIO(body), http_headers=http
                )
            writer.write_record(record)
            ends.append(handle.tell())
    return ends


WEB = [
    (
        "response",
        "https://web.test/a",
        "text/html; charset=utf-8",
        page("The harbor opens at dawn."),
    ),
    ("request", "https://web.test/a", "", b""),
    ("response", "https://web.test/logo.png", "image/png", b"\x89PNG\r\n"),
    ("response", "https://web.test/missing", "text/html", page("Not found.")),
    ("response", "https://web.test/b", "text/html", page("Boats leave at noon.")),
]


@pytest.fixture
def sources(tmp_path: Path) -> list[dict]:
    write_warc(tmp_path / "web.warc.gz", WEB)
    write_warc(
        tmp_path / "cc.warc.wet.gz",
        [
            ("conversion", f"https://cc.test/{i}", "text/plain", f"Plain text {i}.".encode())
            for i in range(2)
        ],
    )
    rows = [
        json.dumps({"body": "Chapter one begins.", "isbn": "978-1", "author": "Ann"}),
        json.dumps({"body": "", "isbn": "978-2"}),
        "{not json",
        json.dumps({"body": ["a", "list"]}),
        json.dumps({"body": "Chapter two.", "url": "https://books.test/2"}),
    ]
    (tmp_path / "books.jsonl").write_text("\n".join(rows) + "\n")
    table = pa.table({"text": ["def f(): pass", None, "x = 1"], "repo": ["a", "b", "c"]})
    pq.write_table(table, tmp_path / "code.parquet")
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "a.txt").write_text("A note about rivers.")
    (notes / "sub" / "b.md").write_text("# Title\n\nMarkdown text.")
    (notes / "c.html").write_bytes(page("A saved page about tides."))
    (notes / "d.png").write_bytes(b"\x89PNG\r\n")
    (notes / "e.txt").write_bytes(
        "Le café est très chaud, la crème brûlée aussi.".encode("latin-1")
    )
    return [
        {"kind": "warc", "path": str(tmp_path / "web.warc.gz")},
        {"kind": "wet", "path": str(tmp_path / "*.wet.gz")},
        {
            "kind": "jsonl",
            "path": str(tmp_path / "books.jsonl"),
            "text_field": "body",
            "id_field": "isbn",
            "category": "books",
            "source": "library",
        },
        {"kind": "parquet", "path": str(tmp_path / "code.parquet"), "category": "code"},
        {"kind": "folder", "path": str(notes)},
    ]


def run_import(data_root: Path, sources: list[dict], **kwargs):
    config = ImportConfig.from_sources(sources, **kwargs)
    return run_step(
        step="import",
        name="sources",
        config=config,
        data_root=data_root,
        body=lambda ctx: import_documents(config, ctx),
    )


def texts(done) -> dict:
    docs = list(JsonlReader(str(Path(done.path) / "text")).run())
    assert len(docs) == len({d.text for d in docs}), "a document arrived twice"
    return {d.text: d for d in docs}


def html_docs(done) -> list:
    return list(WarcReader(str(Path(done.path) / "html")).run())


def test_every_good_document_arrives_once_with_its_metadata(tmp_path, sources):
    done = run_import(tmp_path / "data", sources)
    docs = texts(done)
    assert set(docs) == {
        "Plain text 0.",
        "Plain text 1.",
        "Chapter one begins.",
        "Chapter two.",
        "def f(): pass",
        "x = 1",
        "A note about rivers.",
        "# Title\n\nMarkdown text.",
        "Le café est très chaud, la crème brûlée aussi.",
    }
    book = docs["Chapter one begins."]
    assert book.id == "978-1"
    assert book.metadata | {"file_path": None} == {
        "url": None,
        "source": "library",
        "category": "books",
        "author": "Ann",
        "file_path": None,
    }
    assert docs["Chapter two."].metadata["url"] == "https://books.test/2"
    code = docs["def f(): pass"]
    assert (code.metadata["source"], code.metadata["category"], code.metadata["repo"]) == (
        "code",
        "code",
        "a",
    )
    wet = docs["Plain text 1."]
    assert wet.metadata["url"] == "https://cc.test/1" and wet.id.startswith("<urn:uuid:")
    assert wet.metadata["category"] == "web"
    note = docs["# Title\n\nMarkdown text."]
    assert note.metadata["url"] == "file:///sub/b.md" and note.metadata["path"] == "sub/b.md"
    assert note.metadata["source"] == "notes"

    pages = {d.metadata["url"]: d.text for d in html_docs(done)}
    assert all(text.startswith("<html>") for text in pages.values())
    assert set(pages) == {"https://web.test/a", "https://web.test/b", "file:///c.html"}
    assert "harbor opens at dawn" in pages["https://web.test/a"]
    assert "saved page about tides" in pages["file:///c.html"]
    assert done.counts["documents_html"] == 3 and done.counts["documents_text"] == 9
    assert done.counts["documents.books"] == 2 and done.counts["documents.code"] == 2


def test_ids_are_stable_across_runs(tmp_path, sources):
    first = texts(run_import(tmp_path / "one", sources))
    second = texts(run_import(tmp_path / "two", sources))
    assert {t: d.id for t, d in first.items()} == {t: d.id for t, d in second.items()}
    assert len({d.id for d in first.values()}) == len(first)


def test_html_records_carry_what_curate_needs(tmp_path, sources):
    done = run_import(tmp_path / "data", sources)
    shards = sorted((Path(done.path) / "html").glob("*.warc.gz"))
    seen = []
    for shard in shards:
        with open(shard, "rb") as handle:
            for record in ArchiveIterator(handle):
                headers = record.rec_headers
                seen.append((headers.get_header("WARC-Target-URI"), record.rec_type))
                assert headers.get_header("WARC-Identified-Payload-Type") == "text/html"
                assert headers.get_header("Orchard-Category") == "web"
                if record.http_headers:  # a copied HTTP response
                    assert record.http_headers.get_statuscode() == "200"
                else:  # a file: just the page, no HTTP block to mistake for part of it
                    assert record.content_stream().read().startswith(b"<html>")
    assert sorted(seen) == [
        ("file:///c.html", "response"),
        ("https://web.test/a", "response"),
        ("https://web.test/b", "response"),
    ]
    assert len(shards) == 2, "one source per WARC shard: the crawl copy and the folder"


def test_bad_rows_records_and_files_are_skipped_and_counted(tmp_path, sources, caplog):
    caplog.set_level(logging.WARNING, "orchard.ingest")
    counts = run_import(tmp_path / "data", sources).counts
    assert counts["rows_skipped"] == 4  # empty body, malformed line, a list, null parquet text
    assert counts["rows_skipped.empty_text"] == 1
    assert counts["rows_skipped.malformed_json"] == 1
    assert counts["rows_skipped.text_not_a_string"] == 1
    assert counts["rows_skipped.no_text"] == 1
    assert counts["records_skipped.request"] == 1
    assert counts["records_skipped.not_html"] == 1
    assert counts["records_skipped.http_status"] == 1
    assert counts["files_skipped.extension"] == 1  # the png
    assert counts["files_read"] == 4 + 4  # warc, wet, jsonl, parquet + 4 folder files
    assert counts.get("corrupt_files", 0) == 0
    assert f"{tmp_path / 'books.jsonl'}:3" in caplog.text  # the malformed line, file:line


def test_a_truncated_warc_keeps_the_records_before_the_cut(tmp_path, caplog):
    pages = [
        (
            "response",
            f"https://web.test/{i}",
            "text/html",
            page(f"Page {i}. " + os.urandom(3000).hex()),
        )
        for i in range(4)
    ]
    ends = write_warc(tmp_path / "cut.warc.gz", pages)
    whole = (tmp_path / "cut.warc.gz").read_bytes()
    (tmp_path / "cut.warc.gz").write_bytes(whole[: (ends[1] + ends[2]) // 2])  # inside record 3
    caplog.set_level(logging.WARNING, "orchard.ingest")
    done = run_import(tmp_path / "data", [{"kind": "warc", "path": str(tmp_path / "cut.warc.gz")}])
    assert sorted(d.metadata["url"] for d in html_docs(done)) == [
        "https://web.test/0",
        "https://web.test/1",
    ]
    assert done.counts["corrupt_files"] == 1 and done.counts["documents_html"] == 2
    assert "cut.warc.gz" in caplog.text and "truncated" in caplog.text


def test_a_truncated_gzip_jsonl_keeps_the_rows_before_the_cut(tmp_path):
    rows = "".join(
        json.dumps({"text": f"Row {i} " + os.urandom(500).hex()}) + "\n" for i in range(200)
    )
    data = gzip.compress(rows.encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    done = run_import(
        tmp_path / "data", [{"kind": "jsonl", "path": str(tmp_path / "cut.jsonl.gz")}]
    )
    got = sorted(int(t.split()[1]) for t in texts(done))
    assert got == list(range(len(got))) and 0 < len(got) < 200
    assert done.counts["corrupt_files"] == 1


def test_a_file_that_is_no_warc_is_counted_not_fatal(tmp_path, sources):
    (tmp_path / "junk.warc.gz").write_bytes(gzip.compress(b"this is not a WARC file\n" * 10))
    done = run_import(
        tmp_path / "data", [*sources, {"kind": "warc", "path": str(tmp_path / "junk.warc.gz")}]
    )
    assert done.counts["corrupt_files"] == 1 and done.counts["documents_html"] == 3


def test_text_shards_hold_at_most_shard_documents(tmp_path, sources):
    done = run_import(tmp_path / "data", sources, shard_documents=4)
    shards = sorted(p.name for p in (Path(done.path) / "text").iterdir())
    assert shards == ["00000.jsonl.gz", "00001.jsonl.gz", "00002.jsonl.gz"]
    sizes = [len(gzip.open(Path(done.path) / "text" / s).readlines()) for s in shards]
    assert sizes == [4, 4, 1]


def test_only_bad_input_is_an_error_that_says_what_to_check(tmp_path):
    (tmp_path / "rows.jsonl").write_text(json.dumps({"content": "text under another name"}) + "\n")
    with pytest.raises(OrchardError, match="rows_skipped.no_text: 1.*text_field"):
        run_import(tmp_path / "data", [{"kind": "jsonl", "path": str(tmp_path / "rows.jsonl")}])


def test_a_second_run_is_skipped_and_a_changed_input_imported_again(tmp_path, sources, monkeypatch):
    monkeypatch.setattr(steps, "_log_to_mlflow", lambda *_, **__: "run-1")
    calls = []
    real = ingest.import_documents
    monkeypatch.setattr(ingest, "import_documents", lambda c, ctx: calls.append(1) or real(c, ctx))
    settings = Settings(data_root=str(tmp_path / "data"), mlflow_tracking_uri="http://mlflow:1")
    config = ImportConfig(sources=sources)  # no fingerprint: `run` takes it from the files

    first = ingest.run(config, settings)
    assert ingest.run(config, settings) == first and len(calls) == 1
    assert first.config["fingerprint"] and first.path.endswith(f"sources-{first.key}")

    books = Path(sources[2]["path"])
    books.write_text(books.read_text() + json.dumps({"body": "Chapter three."}) + "\n")
    again = ingest.run(config, settings)
    assert again.key != first.key and len(calls) == 2
    assert "Chapter three." in texts(again) and "Chapter three." not in texts(first)


def test_touching_an_input_changes_the_step_key(tmp_path, sources):
    before = ImportConfig.from_sources(sources)
    notes = Path(sources[-1]["path"])
    stat = (notes / "a.txt").stat()
    assert ImportConfig.from_sources(sources) == before
    os.utime(notes / "a.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    after = ImportConfig.from_sources(sources)
    assert step_key("import", after, []) != step_key("import", before, [])
    (notes / "new.txt").write_text("A new note.")
    assert ImportConfig.from_sources(sources).fingerprint not in (
        before.fingerprint,
        after.fingerprint,
    )


def test_the_cli_refuses_a_missing_path_in_one_line_exit_2(tmp_path):
    missing = tmp_path / "nope.jsonl"
    config = json.dumps({"sources": [{"kind": "jsonl", "path": str(missing)}]})
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHARD_")}
    env |= {"ORCHARD_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "ray_jobs.ingest", "--config", config],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and str(missing) in line
    assert "does not exist: fix its path" in line
    assert not (tmp_path / "home" / "data" / "import").exists()


def test_the_cli_refuses_a_bad_config_in_one_line_exit_2(capsys):
    assert ingest.main(["--config", json.dumps({"sources": [{"kind": "csv", "path": "x"}]})]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: bad sources.0.kind in --config")
