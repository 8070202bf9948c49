"""The one reader of a corpus: the datatrove JSONL shards a step publishes under
`<its output>/documents/` (curate and mix write them; tokenizer, tokenize, mix, validate
and chat_data read them through here).

A shard is a gzipped JSONL file, one document a line: `{"id", "text", "metadata", ...}`.
Every reader gets the same checks and the same error: a line that is not a JSON object,
whose `metadata` is not an object or whose `text` is not a string (validation may allow
a null text, which its own rule then reports), and a truncated or unreadable file, are an
`OrchardError` naming the shard and the line.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from orchard.errors import OrchardError

DOCUMENTS = "documents"


@dataclass(frozen=True)
class Document:
    """One line of a shard: where it is, the parsed record and the line as written."""

    shard: Path
    line: int  # 1-based, blank lines counted
    record: dict[str, Any]
    raw: bytes  # the JSON line, ending in a newline

    @property
    def text(self) -> str:
        """The text (None only when read with `allow_null_text`)."""
        return self.record.get("text")  # type: ignore[return-value]

    @property
    def metadata(self) -> dict[str, Any]:
        return self.record.get("metadata") or {}

    @property
    def id(self) -> Any:
        """The id as written (None when the document has none)."""
        return self.record.get("id")

    @property
    def key(self) -> str:
        """The id as a string, or for a document without one a hash of its text: what
        the tokenizer and tokenize steps split train/held-out by."""
        if self.id not in (None, ""):
            return str(self.id)
        return "sha256:" + hashlib.sha256((self.text or "").encode()).hexdigest()


def document_shards(corpus: Path, *, needed_from: str | None = None) -> list[Path]:
    """The shards of a step output (`documents/**/*.jsonl.gz`) in a fixed order. None
    is an OrchardError when `needed_from` names the step(s) that should have written
    them ("mix (or curate)"), else an empty list (validation reports an empty corpus)."""
    shards = sorted((corpus / DOCUMENTS).rglob("*.jsonl.gz"))
    if not shards and needed_from:
        raise OrchardError(
            f"no {DOCUMENTS}/*.jsonl.gz under {corpus}: pass the manifest of a finished "
            f"{needed_from} step as --input"
        )
    return shards


def read_shard(path: Path, *, allow_null_text: bool = False) -> Iterator[Document]:
    """The documents of one shard, in order; a corrupt line or file is an OrchardError."""
    line = 0
    try:
        with gzip.open(path, "rb") as handle:
            for line, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                record = orjson.loads(raw)
                if not isinstance(record, dict):
                    raise ValueError("not a document: not a JSON object")
                if not isinstance(record.get("metadata", {}), dict):
                    raise ValueError('not a document: "metadata" is not an object')
                text = record.get("text")
                if not (isinstance(text, str) or (allow_null_text and text is None)):
                    raise ValueError('not a document: no "text" string')
                yield Document(path, line, record, raw if raw.endswith(b"\n") else raw + b"\n")
    except (OSError, EOFError, ValueError, zlib.error) as error:
        raise OrchardError(
            f"corrupt corpus shard {path} (line {line}): {error}; rebuild the step that "
            "wrote it (with --force, or the DAG's Rebuild Param), or remove the file"
        ) from None


def iter_documents(corpus: Path, *, allow_null_text: bool = False) -> Iterator[Document]:
    """Every document of the step output `corpus`, shard by shard in a fixed order."""
    for shard in document_shards(corpus):
        yield from read_shard(shard, allow_null_text=allow_null_text)
