"""orchard.documents: the one reader of a step's documents/*.jsonl.gz."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from orchard.documents import document_shards, iter_documents, read_shard
from orchard.errors import OrchardError


def write_shard(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(lines)
    return path


def test_documents_come_shard_by_shard_with_their_lines_as_written(tmp_path):
    first = json.dumps({"id": "b", "text": "two", "metadata": {"category": "code"}}) + "\n"
    write_shard(tmp_path / "documents" / "00001.jsonl.gz", [first])
    no_id = json.dumps({"text": "one"})  # last line without its newline
    write_shard(tmp_path / "documents" / "00000.jsonl.gz", ["\n", no_id])
    write_shard(tmp_path / "dropped" / "00000.jsonl.gz", [json.dumps({"text": "gone"}) + "\n"])

    docs = list(iter_documents(tmp_path))
    assert [doc.text for doc in docs] == ["one", "two"]  # not dropped/, shards in order
    assert [(doc.shard.name, doc.line) for doc in docs] == [
        ("00000.jsonl.gz", 2),
        ("00001.jsonl.gz", 1),
    ]
    assert docs[0].key.startswith("sha256:") and docs[1].key == "b"
    assert docs[0].metadata == {} and docs[1].metadata == {"category": "code"}
    assert docs[0].raw == (no_id + "\n").encode() and docs[1].raw == first.encode()


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("[1, 2]\n", "not a JSON object"),
        ('{"text": "x", "metadata": "web"}\n', '"metadata" is not an object'),
        ('{"id": "x", "body": "no text field"}\n', 'no "text" string'),
        ("{not json\n", "line 2"),
    ],
)
def test_a_bad_line_names_the_shard_the_line_and_the_fix(tmp_path, line, problem):
    shard = write_shard(tmp_path / "documents" / "00000.jsonl.gz", ['{"text": "ok"}\n', line])
    with pytest.raises(
        OrchardError, match=r"corrupt corpus shard .*00000.jsonl.gz \(line 2\)"
    ) as err:
        list(iter_documents(tmp_path))
    assert problem in str(err.value) and "--force" in str(err.value)
    assert next(read_shard(shard)).text == "ok"  # the good line before it still reads


def test_a_truncated_shard_is_refused_and_null_text_only_when_asked(tmp_path):
    shard = write_shard(tmp_path / "documents" / "00000.jsonl.gz", ['{"text": null}\n'])
    with pytest.raises(OrchardError, match='no "text" string'):
        list(read_shard(shard))
    assert [doc.text for doc in read_shard(shard, allow_null_text=True)] == [None]
    shard.write_bytes(shard.read_bytes()[:-6])
    with pytest.raises(OrchardError, match="corrupt corpus shard"):
        list(read_shard(shard, allow_null_text=True))


def test_no_shards_is_an_error_only_where_the_caller_needs_them(tmp_path):
    assert document_shards(tmp_path) == []
    with pytest.raises(OrchardError, match=r"no documents/\*.jsonl.gz under .*: pass .* mix"):
        document_shards(tmp_path, needed_from="mix")
