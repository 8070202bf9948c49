"""The import step: data that is already on disk joins the crawl's document stream.

Sources, each `{"kind", "path", ...}` (`path`: a file, a directory or a glob):
- `warc`: WARC files (Common Crawl, another crawler): 2xx HTML responses are copied as
  WARC records into `html/`, for curate's extractor; other records are skipped, counted.
- `wet`: Common Crawl WET files: `conversion` records become text documents in `text/`.
- `jsonl` / `parquet`: one text document per row from `text_field` (id and URL from
  `id_field` / `url_field`, else a stable hash and the row's `url`); other fields are kept
  in the metadata (where the step's own `url`, `source` and `category` win).
- `folder`: `.txt`/`.md` files become text documents, `.html`/`.htm` files WARC records
  with a `file:///relative/path` URI; other files are skipped, hidden ones ignored.

Text documents are datatrove JSONL (`{"text", "id", "metadata"}`, `text/00000.jsonl.gz`,
...) with the source label and category (web, books, code, conversations, instructions)
in the metadata. A bad row, record or file is skipped, counted by reason and logged; a
truncated file keeps what came before the cut. Nothing bad in the data stops the step.
The config carries a fingerprint of the input files (path, size, mtime), so a changed
input gets a new step key and is imported again, while an unchanged one is skipped.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import logging
import os
import sys
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, ClassVar, Literal
from urllib.parse import quote

import orjson
from pydantic import BaseModel, ConfigDict, Field
from warcio.archiveiterator import WARCIterator
from warcio.recordloader import ArcWarcRecord
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from orchard.errors import OrchardError
from orchard.settings import Settings
from orchard.steps import Manifest, StepConfig, StepContext, StepOutput, StepSpec

log = logging.getLogger("orchard.ingest")

Kind = Literal["warc", "wet", "jsonl", "parquet", "folder"]
Category = Literal["web", "books", "code", "conversations", "instructions"]
# Files a directory source of each kind reads; a named file or a glob is read whatever its name.
SUFFIXES = {
    "warc": (".warc", ".warc.gz", ".warc.zst"),
    "wet": (".wet", ".wet.gz", ".wet.zst"),
    "jsonl": (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".ndjson"),
    "parquet": (".parquet",),
}
ROUTINE_SKIPS = {"request", "warcinfo", "metadata", "revisit", "not_html", "http_status"}
TEXT_SUFFIXES = {".txt", ".md"}
HTML_SUFFIXES = {".html", ".htm"}
HTML_TYPES = {"text/html", "application/xhtml+xml"}
LOG_LIMIT = 10  # warnings per skip reason; the rest are only counted


class MissingInput(OrchardError):
    """A source path that matches no file: a config mistake, not bad data."""


class Source(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Kind
    path: str = Field(min_length=1, description="A file, a directory, or a glob.")
    text_field: str = Field("text", min_length=1, description="jsonl/parquet: the text.")
    id_field: str | None = Field(None, description="jsonl/parquet: the id (default: a hash).")
    url_field: str | None = Field(None, description="jsonl/parquet: the URL (default: 'url').")
    source: str | None = Field(None, description="Label in the metadata (default: from path).")
    category: Category = "web"

    @property
    def label(self) -> str:
        if self.source:
            return self.source
        name = Path(self.root if self.is_glob else self.path).name
        return name.split(".")[0] or self.path

    @property
    def is_glob(self) -> bool:
        return not os.path.exists(self.path) and glob.has_magic(self.path)

    @property
    def root(self) -> str:
        """The directory relative paths and default labels start from."""
        if self.is_glob:
            parts = Path(self.path).parts
            return str(Path(*parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))]))
        return self.path if os.path.isdir(self.path) else os.path.dirname(self.path)

    def files(self) -> list[tuple[Path, str]]:
        """(file, path relative to `root`) of every non-hidden file, sorted; raises
        MissingInput when there is none, naming the path to fix."""
        if self.is_glob:
            found = [Path(p) for p in glob.glob(self.path, recursive=True)]
        elif os.path.isdir(self.path):
            found = [p for p in Path(self.path).rglob("*") if not _hidden(p, self.path)]
        else:
            found = [Path(self.path)] if os.path.isfile(self.path) else []
        files = sorted((p, os.path.relpath(p, self.root or ".")) for p in found if p.is_file())
        if not files:
            what = "matches no file" if os.path.exists(self.path) else "does not exist"
            raise MissingInput(
                f"{self.kind} source {self.path} {what}: fix its path in the import config "
                "(a file, a directory or a glob, as seen by the machine that runs the step)"
            )
        return files


def _hidden(path: Path, root: str) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def fingerprint(sources: Iterable[Source]) -> str:
    """Digest of every input file's path, size and mtime: cheap for terabytes of Common
    Crawl, and it changes whenever a file is replaced, appended to or touched."""
    digest = hashlib.sha256()
    for source in sources:
        for file, _ in source.files():
            stat = file.stat()
            digest.update(f"{os.path.abspath(file)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


class ImportConfig(StepConfig):
    sources: tuple[Source, ...] = Field(min_length=1, description="What to import.")
    fingerprint: str = Field("", description="Digest of the input files; filled by `run`.")
    shard_documents: int = Field(10_000, ge=1, description="Documents per output shard.")
    not_in_key: ClassVar[frozenset[str]] = frozenset({"shard_documents"})

    @classmethod
    def from_sources(cls, sources: Iterable[dict | Source], **kwargs: Any) -> ImportConfig:
        """The config with the fingerprint of the input files as they are now."""
        parsed = tuple(Source.model_validate(s) for s in sources)
        return cls(sources=parsed, fingerprint=fingerprint(parsed), **kwargs)


def _doc_id(*parts: object) -> str:
    return hashlib.sha1("\0".join(map(str, parts)).encode()).hexdigest()[:16]


def _json_default(value: object) -> object:
    return None if isinstance(value, bytes | bytearray) else str(value)


class _Shards:
    """Numbered files `00000<suffix>`, ... of at most `size` documents each; a new one
    also starts when the group changes (one source per WARC shard)."""

    def __init__(self, directory: Path, suffix: str, size: int, opener: Any):
        self.directory, self.suffix, self.size, self.opener = directory, suffix, size, opener
        self._handle: IO[bytes] | None = None
        self._files = self._count = 0
        self._group = ""

    def handle(self, group: str = "") -> IO[bytes]:
        """The file to write the next document to."""
        if self._handle is None or self._count >= self.size or group != self._group:
            self.close()
            self.directory.mkdir(exist_ok=True)
            self._handle = self.opener(self.directory / f"{self._files:05d}{self.suffix}", "wb")
            self._files, self._count, self._group = self._files + 1, 0, group
        self._count += 1
        return self._handle

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle = None


class Output:
    """Writes the document stream (`text/*.jsonl.gz`, `html/*.warc.gz`) and counts what
    went where and what was skipped, by reason."""

    def __init__(self, out: Path, shard_documents: int):
        self.counts: Counter[str] = Counter()
        self._logged: Counter[str] = Counter()
        self._text = _Shards(out / "text", ".jsonl.gz", shard_documents, gzip.open)
        self._html = _Shards(out / "html", ".warc.gz", shard_documents, open)

    def text(self, source: Source, text: str, doc_id: str, metadata: dict, where: str) -> None:
        doc = {"text": text, "id": doc_id, "metadata": metadata}
        try:
            line = orjson.dumps(doc, default=_json_default, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:  # lone surrogates from JSON escapes, odd metadata: repair, or skip
            try:
                line = json.dumps(doc, ensure_ascii=False, default=_json_default).encode(
                    "utf-8", "replace"
                )
            except (TypeError, ValueError) as error:
                return self.skip("rows_skipped", "unserializable", where, str(error))
        self._text.handle().write(line + b"\n")
        self._count_document("documents_text", source)

    def html(
        self, source: Source, headers: StatusAndHeaders, http: StatusAndHeaders | None, body: bytes
    ) -> None:
        """A response record with the type datatrove's WarcReader looks for, and the source
        and category, which curate would otherwise not know for an HTML page."""
        writer = WARCWriter(self._html.handle(group=source.label), gzip=True)
        headers.replace_header("WARC-Identified-Payload-Type", "text/html")
        headers.replace_header("Orchard-Source", source.label)
        headers.replace_header("Orchard-Category", source.category)
        headers.remove_header("WARC-Block-Digest")  # the HTTP headers are re-serialised
        uri = headers.get_header("WARC-Target-URI")
        payload = io.BytesIO(body)
        writer.write_record(
            writer.create_warc_record(
                uri, "response", payload, len(body), warc_headers=headers, http_headers=http
            )
        )
        self._count_document("documents_html", source)

    def _count_document(self, counter: str, source: Source) -> None:
        self.counts[counter] += 1
        self.counts[f"documents.{source.category}"] += 1

    def skip(
        self, counter: str, reason: str, where: str, detail: str = "", quiet: bool = False
    ) -> None:
        """Count a skipped row, record or file under `counter` and `counter.reason`; log
        the first few of each reason (a wrong text_field would log every row otherwise),
        none of the `quiet` ones (a Common Crawl WARC is two thirds requests and metadata)."""
        self.counts[counter] += 1
        self.counts[f"{counter}.{reason}"] += 1
        if not quiet:
            self._logged[f"{counter}.{reason}"] += 1
            if self._logged[f"{counter}.{reason}"] <= LOG_LIMIT:
                log.warning("skipped %s: %s%s", where, reason, f" ({detail})" if detail else "")

    def corrupt(self, file: Path, error: BaseException) -> None:
        self.counts["corrupt_files"] += 1
        log.warning("%s is corrupt or truncated, kept what came before: %r", file, error)

    def close(self) -> None:
        self._text.close()
        self._html.close()
        for reason, seen in sorted(self._logged.items()):
            if seen > LOG_LIMIT:
                log.warning("%s: %d more skipped, not logged", reason, seen - LOG_LIMIT)


class _Truncated(Exception):
    """A compressed stream that ends mid-member."""


class _ChunkReader(io.RawIOBase):
    """Reads one decompressed chunk at a time, so the records before a cut in a gzip file
    still come out, and turns its EOFError into `_Truncated`: warcio takes an EOFError
    for the end of the archive and would end a cut-off file silently."""

    def __init__(self, stream: io.BufferedIOBase):
        self._stream = stream

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read() if size < 0 else self._stream.read1(size)
        except EOFError as error:
            raise _Truncated(str(error)) from None


def _open(file: Path) -> io.BufferedIOBase:
    """The file's decompressed bytes (gzip and zstd by their magic number, else plain)."""
    with open(file, "rb") as handle:
        magic = handle.read(4)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(file, "rb")
    if magic == b"\x28\xb5\x2f\xfd":
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(file, "rb")))
    return open(file, "rb")


def _guarded(items: Iterator, file: Path, out: Output) -> Iterator:
    """Yield from a file's reader; a read error ends that file (logged, counted) while
    the items before it are kept. Errors while writing them are not caught here."""
    while True:
        try:
            item = next(items)
        except StopIteration:
            return
        except Exception as error:  # noqa: BLE001 - any way a file can be broken
            out.corrupt(file, error)
            return
        yield item


def _complete(record: ArcWarcRecord) -> bool:
    return getattr(record.raw_stream, "limit", 0) == 0


def _scan_warc(source: Source, file: Path) -> Iterator[tuple]:
    """('html', warc headers, http headers, raw payload) for each 2xx HTML response of a
    WARC, ('text', text, id, url, date) for each conversion record of a WET file, else
    ('skip', reason, uri). The raw payload keeps its HTTP encodings, like its headers."""
    wanted = "conversion" if source.kind == "wet" else "response"
    with _open(file) as stream:
        for record in WARCIterator(_ChunkReader(stream)):
            headers = record.rec_headers
            uri = headers.get_header("WARC-Target-URI")
            if record.rec_type != wanted:
                yield "skip", record.rec_type, uri
            elif not uri:
                yield "skip", "no_target_uri", uri
            elif source.kind == "wet":
                text = _decode(record.content_stream().read())
                if not _complete(record):
                    yield "skip", "truncated", uri
                elif text is None or not text.strip():
                    yield "skip", "no_text", uri
                else:
                    record_id = headers.get_header("WARC-Record-ID") or _doc_id(file, uri)
                    yield "text", text, record_id, uri, headers.get_header("WARC-Date")
            elif record.http_headers is None:
                yield "skip", "not_http", uri
            elif not record.http_headers.get_statuscode().startswith("2"):
                yield "skip", "http_status", uri
            elif _media_type(record) not in HTML_TYPES:
                yield "skip", "not_html", uri
            else:
                body = record.raw_stream.read()
                if not _complete(record):
                    yield "skip", "truncated", uri
                    continue
                yield "html", headers, record.http_headers, body


def _media_type(record: ArcWarcRecord) -> str:
    """Common Crawl's sniffed type when there is one, else what the server declared."""
    declared = record.http_headers.get_header("Content-Type") if record.http_headers else None
    found = record.rec_headers.get_header("WARC-Identified-Payload-Type") or declared or ""
    return found.split(";")[0].strip().lower()


def _read_warc(source: Source, file: Path, out: Output) -> None:
    for kind, *fields in _guarded(_scan_warc(source, file), file, out):
        if kind == "skip":
            reason, uri = fields
            out.skip("records_skipped", reason, f"{file} {uri}", quiet=reason in ROUTINE_SKIPS)
        elif kind == "html":
            out.html(source, *fields)
        else:
            text, doc_id, url, date = fields
            meta = {"url": url, "source": source.label, "category": source.category}
            out.text(source, text, doc_id, meta | {"date": date}, f"{file} {url}")


def _rows(source: Source, file: Path, out: Output) -> Iterator[tuple[int, Any]]:
    """(row number, row) of a JSONL (1-based line numbers) or Parquet (0-based) file; a
    malformed line is skipped and counted here, with file:line in the log."""
    if source.kind == "parquet":
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(file).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                yield number, row
                number += 1
        return
    with _open(file) as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                try:  # orjson refuses lone surrogates ("\\ud800"), which json reads
                    row = json.loads(line)
                except ValueError:
                    out.skip("rows_skipped", "malformed_json", f"{file}:{number}", str(error))
                    continue
            yield number, row


def _read_rows(source: Source, file: Path, relative: str, out: Output) -> None:
    for number, row in _guarded(_rows(source, file, out), file, out):
        where = f"{file}:{number}"
        if not isinstance(row, dict):
            out.skip("rows_skipped", "not_an_object", where, type(row).__name__)
            continue
        text = row.get(source.text_field)
        if not isinstance(text, str):
            reason = "no_text" if text is None else "text_not_a_string"
            out.skip("rows_skipped", reason, where, f"field {source.text_field!r}")
            continue
        if not text.strip():
            out.skip("rows_skipped", "empty_text", where, f"field {source.text_field!r}")
            continue
        given_id = row.get(source.id_field) if source.id_field else None
        doc_id = (
            str(given_id) if given_id not in (None, "") else _doc_id(source.label, relative, number)
        )
        url = row.get(source.url_field or "url")
        used = {source.text_field, source.id_field, source.url_field or "url"}
        meta = {k: v for k, v in row.items() if k not in used}
        meta |= {"url": url if isinstance(url, str) else None, "source": source.label}
        out.text(source, text, doc_id, meta | {"category": source.category}, where)


def _decode(data: bytes) -> str | None:
    """UTF-8 (a BOM is dropped), else the encoding cchardet guesses; None for bytes that
    decode to nothing sensible (binary)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        import cchardet

        encoding = cchardet.detect(data).get("encoding")
        try:
            text = data.decode(encoding) if encoding else None
        except (UnicodeDecodeError, LookupError):
            text = None
    return None if text is None or "\x00" in text else text


def _read_folder_file(source: Source, file: Path, relative: str, out: Output) -> None:
    suffix = file.suffix.lower()
    if suffix not in TEXT_SUFFIXES | HTML_SUFFIXES:
        return out.skip("files_skipped", "extension", str(file), suffix or "no extension")
    try:
        data, mtime = file.read_bytes(), file.stat().st_mtime
    except OSError as error:
        return out.skip("files_skipped", "unreadable", str(file), str(error))
    out.counts["files_read"] += 1
    posix = Path(relative).as_posix()
    url = f"file:///{quote(posix)}"
    if suffix in HTML_SUFFIXES:
        if not data.strip():
            return out.skip("files_skipped", "empty", str(file))
        # No HTTP block: readers parse one only for http(s) URIs, and would take it for
        # part of the page here.
        record_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{source.label}/{posix}")
        date = datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = [
            ("WARC-Type", "response"),
            ("WARC-Record-ID", f"<urn:uuid:{record_id}>"),
            ("WARC-Target-URI", url),
            ("WARC-Date", date),
            ("Content-Type", "text/html"),
        ]
        warc_headers = StatusAndHeaders("", headers, protocol="WARC/1.1")
        return out.html(source, warc_headers, None, data)
    text = _decode(data)
    if text is None or not text.strip():
        reason = "undecodable" if text is None else "empty"
        return out.skip("files_skipped", reason, str(file))
    meta = {"url": url, "source": source.label, "category": source.category, "path": posix}
    out.text(source, text, _doc_id(source.label, posix), meta, str(file))


def import_documents(config: ImportConfig, ctx: StepContext) -> StepOutput:
    """Read every source into `ctx.out` (`text/`, `html/`); raise only when nothing at
    all was imported, which is a config mistake (wrong kind or text_field), not bad data."""
    out = Output(ctx.out, config.shard_documents)
    try:
        for source in config.sources:
            for file, relative in source.files():
                if source.kind == "folder":
                    _read_folder_file(source, file, relative, out)
                    continue
                if os.path.isdir(source.path) and not file.name.endswith(SUFFIXES[source.kind]):
                    out.skip("files_skipped", "extension", str(file), f"not a {source.kind} file")
                    continue
                out.counts["files_read"] += 1
                if source.kind in ("warc", "wet"):
                    _read_warc(source, file, out)
                else:
                    _read_rows(source, file, relative, out)
    finally:
        out.close()
    if not out.counts["documents_text"] and not out.counts["documents_html"]:
        seen = ", ".join(f"{k}: {v}" for k, v in sorted(out.counts.items()))
        raise OrchardError(
            f"no document imported ({seen or 'no input'}): check each source's kind, "
            "text_field and path"
        )
    return StepOutput(counts=dict(out.counts))


STEP = StepSpec("import", ImportConfig, default_name="sources", doc=__doc__)


def run(
    config: ImportConfig, settings: Settings, name: str = STEP.default_name, force: bool = False
) -> Manifest:
    """Import once per (config, state of the input files). A config without fingerprint
    (e.g. from the command line) gets the one of the files as they are now."""
    current = fingerprint(config.sources)  # also: every path must match a file
    if not config.fingerprint:
        config = config.model_copy(update={"fingerprint": current})
    elif config.fingerprint != current:
        log.warning(
            "the input files changed since the config's fingerprint was taken: importing "
            "them as they are now under the given one (%s, now %s)",
            config.fingerprint,
            current,
        )
    return STEP.run(settings, config, lambda ctx: import_documents(config, ctx), None, name, force)


class _UsageError(Exception):
    """A config naming inputs that are not there: exit 2, like any bad argument."""


def _cli_run(
    config: ImportConfig, inputs: list[Manifest], settings: Settings, name: str, force: bool
) -> Manifest:
    if inputs:
        raise _UsageError("the import step takes no --input: name its files in the config")
    try:
        return run(config, settings, name, force)
    except MissingInput as error:
        raise _UsageError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    try:
        return STEP.main(_cli_run, argv)
    except _UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
