"""Uploaded files: what they are (sniffed from their bytes, never from their name), the
limits they must keep, and their text as sections (heading, page).

Formats: PDF (pypdf: text per page; a page without a text layer, a scan, is read by OCR
of its images), DOCX (python-docx: paragraphs, `Heading N` styles),
HTML (trafilatura: the main content, headings kept; scripts, styles and event handlers
never reach the text), Markdown (`#` headings), plain text, and PNG/JPEG images (OCR by
Debian's `tesseract`). Every refusal is a `FileRejected` whose message tells the uploader
what is wrong; nothing here writes anything.

Limits (`FileLimits`, from the settings): the upload's size; a PDF's pages; and what a
file may unpack to (`max_decompressed_bytes`): the sum of a DOCX's zip members (and their
compression ratio), each PDF stream (pypdf's own limits, lowered to ours) and the text
they give, an image's pixels × 4 bytes (Pillow's bomb check, lowered to ours).
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

from orchard.errors import OrchardError

if TYPE_CHECKING:
    from orchard.settings import Settings

DOCX_MEDIA = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
MEDIA_TYPES = {
    "pdf": "application/pdf",
    "docx": DOCX_MEDIA,
    "html": "text/html",
    "markdown": "text/markdown",
    "text": "text/plain",
    "png": "image/png",
    "jpeg": "image/jpeg",
}
SUPPORTED = "PDF, DOCX, HTML, Markdown, plain text, PNG or JPEG"
MARKDOWN_SUFFIXES = (".md", ".markdown", ".mdown", ".mkd")
MAX_ZIP_RATIO = 100  # a DOCX member compressed more than 100:1 is a bomb, not a document
OCR_TIMEOUT_S = 120
OCR_MAX_PAGES = 50  # pages of one PDF read by OCR (each takes seconds of a core)
FILENAME_MAX = 200


class FileRejected(OrchardError, ValueError):
    """The file cannot be indexed; the message says why and what to do."""


@dataclass(frozen=True)
class FileLimits:
    max_bytes: int = 25 * 1024 * 1024
    max_pages: int = 500
    max_decompressed_bytes: int = 100 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> FileLimits:
        return cls(
            max_bytes=settings.knowledge_max_file_bytes,
            max_pages=settings.knowledge_max_pages,
            max_decompressed_bytes=settings.knowledge_max_decompressed_bytes,
        )


@dataclass(frozen=True)
class Section:
    """A run of text under one heading on one page."""

    text: str
    heading: str = ""
    page: int | None = None


@dataclass(frozen=True)
class ParsedFile:
    kind: str  # a key of MEDIA_TYPES
    sections: list[Section]
    pages: int | None = None

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.kind]


def safe_filename(name: str) -> str:
    """The name to show and cite: the last path component (either slash), printable,
    at most 200 characters; never a path, never hidden, never empty."""
    name = unicodedata.normalize("NFKC", name or "")
    name = PureWindowsPath(PurePosixPath(name).name).name  # drops ../ and C:\ parts
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '<>:"/\\|?*')
    name = name.strip().lstrip(".").strip()
    if len(name) > FILENAME_MAX:
        stem, dot, suffix = name.rpartition(".")
        keep = FILENAME_MAX - len(suffix) - 1
        name = f"{stem[:keep]}.{suffix}" if dot and 0 < len(suffix) < 16 else name[:FILENAME_MAX]
    return name or "upload"


def sniff(data: bytes, filename: str) -> str:
    """The kind of `data`, from its content (libmagic). The name only tells Markdown from
    plain text, which are the same bytes."""
    import magic

    if not data:
        raise FileRejected("the file is empty")
    media = magic.from_buffer(data[: 1024 * 1024], mime=True)
    if media == "application/pdf":
        return "pdf"
    if media in (DOCX_MEDIA, "application/zip") and _is_docx(data):
        return "docx"
    if media == "image/png":
        return "png"
    if media == "image/jpeg":
        return "jpeg"
    if media in ("text/html", "application/xhtml+xml"):
        return "html"
    if media.startswith("text/") or media in ("application/json", "application/csv"):
        return "markdown" if filename.lower().endswith(MARKDOWN_SUFFIXES) else "text"
    raise FileRejected(
        f"this file is {media} (read from its content, whatever its name says): upload {SUPPORTED}"
    )


def _is_docx(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "word/document.xml" in archive.namelist()
    except zipfile.BadZipFile:
        return False


def parse_file(data: bytes, filename: str, limits: FileLimits) -> ParsedFile:
    """Sniff, check and parse an upload; `FileRejected` says why one cannot be used."""
    if len(data) > limits.max_bytes:
        raise FileRejected(
            f"the file has {len(data):,} bytes, more than the {limits.max_bytes:,} allowed: "
            "upload a smaller file or split it"
        )
    kind = sniff(data, filename)
    parser = {
        "pdf": _parse_pdf,
        "docx": _parse_docx,
        "html": _parse_html,
        "markdown": _parse_markdown,
        "text": _parse_text,
        "png": _parse_image,
        "jpeg": _parse_image,
    }[kind]
    parsed = parser(data, limits)
    sections = [s for s in parsed.sections if s.text.strip()]
    if not sections:
        raise FileRejected(f"no text found in this {kind.upper()} file: nothing to index")
    if sum(len(s.text) for s in sections) > limits.max_decompressed_bytes:
        raise FileRejected(_unpacks_too_much(limits))
    return ParsedFile(kind=kind, sections=sections, pages=parsed.pages)


def _unpacks_too_much(limits: FileLimits) -> str:
    return (
        f"the file unpacks to more than {limits.max_decompressed_bytes:,} bytes (a "
        "compression bomb, or simply too large): upload a smaller file"
    )


# -- formats -------------------------------------------------------------------------
def _parse_pdf(data: bytes, limits: FileLimits) -> ParsedFile:
    import pypdf
    from pypdf.errors import LimitReachedError, PyPdfError

    cap = limits.max_decompressed_bytes
    overrides = {
        "zlib_maximum_output_length": cap,
        "lzw_maximum_output_length": cap,
        "run_length_maximum_output_length": cap,
        "jbig2_maximum_output_length": cap,
        "array_based_stream_maximum_output_length": cap,
    }
    try:
        with pypdf.apply_configuration(**overrides):
            reader = pypdf.PdfReader(io.BytesIO(data))
            if reader.is_encrypted:
                raise FileRejected("the PDF is encrypted: upload it without a password")
            count = len(reader.pages)
            if count > limits.max_pages:
                raise FileRejected(
                    f"the PDF has {count} pages, more than the {limits.max_pages} allowed: split it"
                )
            sections, total, scanned = [], 0, 0
            for number, page in enumerate(reader.pages, start=1):
                contents = page.get_contents()  # decoded (and cached) here, so a stream
                if contents is not None:  # past the limit raises, which extract_text hides
                    contents.get_data()
                text = page.extract_text() or ""
                if not text.strip():  # no text layer: a scanned page
                    scanned += 1
                    if scanned > OCR_MAX_PAGES:
                        raise FileRejected(
                            f"the PDF has more than {OCR_MAX_PAGES} pages without a text "
                            "layer (scans, read by OCR): split it, or upload it with its "
                            "text layer"
                        )
                    text = _ocr_page(page, limits)
                total += len(text)
                if total > cap:
                    raise FileRejected(_unpacks_too_much(limits))
                sections.append(Section(text=_tidy(text), page=number))
    except LimitReachedError:
        raise FileRejected(_unpacks_too_much(limits)) from None
    except PyPdfError as error:
        raise FileRejected(f"the PDF cannot be read ({error}): is it damaged?") from None
    if not any(s.text for s in sections):
        raise FileRejected(
            "no text found in the PDF: it has no text layer, and OCR read nothing in its "
            "images; upload a PDF with text, or clearer scans"
        )
    return ParsedFile("pdf", sections, pages=count)


def _ocr_page(page, limits: FileLimits) -> str:
    """The text of a PDF page without a text layer: its images (a scan), read by OCR.
    Each image's size is checked from its dictionary before anything is decoded."""
    resources = page.get("/Resources")
    xobjects = resources.get_object().get("/XObject") if resources is not None else None
    for xobject in (xobjects.get_object() if xobjects is not None else {}).values():
        image = xobject.get_object()
        if image.get("/Subtype") != "/Image":
            continue
        width, height = int(image.get("/Width", 0)), int(image.get("/Height", 0))
        if width * height * 4 > limits.max_decompressed_bytes:
            raise FileRejected(
                f"a page of the PDF is a {width}×{height} pixel image, more than "
                f"{limits.max_decompressed_bytes:,} bytes unpacked: upload smaller scans"
            )
    texts = []
    for found in page.images:
        png = io.BytesIO()
        found.image.save(png, "PNG")
        texts.append(ocr(png.getvalue()))
    return "\n\n".join(text for text in texts if text)


def _parse_docx(data: bytes, limits: FileLimits) -> ParsedFile:
    import docx

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        total = 0
        for member in archive.infolist():
            total += member.file_size
            ratio = member.file_size / max(member.compress_size, 1)
            if total > limits.max_decompressed_bytes or (
                member.file_size > 1024 * 1024 and ratio > MAX_ZIP_RATIO
            ):
                raise FileRejected(_unpacks_too_much(limits))
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as error:  # python-docx raises lxml, zip and key errors alike
        raise FileRejected(f"the DOCX cannot be read ({error}): is it damaged?") from None
    sections: list[Section] = []
    heading, lines = "", []
    for paragraph in document.paragraphs:
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        if style.startswith("Heading") or style == "Title":
            sections.append(Section("\n\n".join(lines), heading))
            heading, lines = paragraph.text.strip(), []
        elif paragraph.text.strip():
            lines.append(paragraph.text.strip())
    for table in document.tables:
        for row in table.rows:
            lines.append(" | ".join(cell.text.strip() for cell in row.cells))
    sections.append(Section("\n\n".join(lines), heading))
    return ParsedFile("docx", sections)


def _parse_html(data: bytes, limits: FileLimits) -> ParsedFile:
    import trafilatura
    from lxml import etree

    xml = trafilatura.extract(
        _decode(data), output_format="xml", include_formatting=True, include_tables=True
    )
    if not xml:
        return ParsedFile("html", [])
    root = etree.fromstring(xml.encode())
    sections: list[Section] = []
    heading, lines, seen = "", [], set()
    for element in root.iter("head", "p", "list", "code", "quote", "table"):
        if any(a.tag in ("list", "table", "quote") for a in element.iterancestors()):
            continue  # its text is part of the enclosing block
        text = _tidy(" ".join(element.itertext()) if element.tag != "code" else element.text)
        if text in seen and element.tag != "head":
            continue  # trafilatura may repeat a short page's blocks; keep each once
        seen.add(text)
        if element.tag == "head":
            sections.append(Section("\n\n".join(lines), heading))
            heading, lines = text.replace("¶", "").strip(), []
        elif text:
            lines.append(text)
    sections.append(Section("\n\n".join(lines), heading))
    return ParsedFile("html", sections)


HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def _parse_markdown(data: bytes, limits: FileLimits) -> ParsedFile:
    sections: list[Section] = []
    heading, lines, fenced = "", [], False
    for line in _decode(data).splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        match = None if fenced else HEADING.match(line)
        if match:
            sections.append(Section(_tidy("\n".join(lines)), heading))
            heading, lines = match.group(2), []
        else:
            lines.append(line)
    sections.append(Section(_tidy("\n".join(lines)), heading))
    return ParsedFile("markdown", sections)


def _parse_text(data: bytes, limits: FileLimits) -> ParsedFile:
    return ParsedFile("text", [Section(_tidy(_decode(data)))])


def _parse_image(data: bytes, limits: FileLimits) -> ParsedFile:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height * 4 > limits.max_decompressed_bytes:
                raise FileRejected(
                    f"the image is {width}×{height} pixels, more than "
                    f"{limits.max_decompressed_bytes:,} bytes unpacked: upload a smaller one"
                )
            image.verify()
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise FileRejected(f"the image cannot be read ({error}): is it damaged?") from None
    return ParsedFile(MEDIA_KIND[data[:2] == b"\xff\xd8"], [Section(ocr(data))])


MEDIA_KIND = {True: "jpeg", False: "png"}


def ocr(image: bytes) -> str:
    """The text in an image, by Debian's tesseract (English)."""
    binary = shutil.which("tesseract")
    if binary is None:
        raise FileRejected(
            "images are read by OCR, and this server has no tesseract: ask the administrator "
            "to install Debian's tesseract-ocr package"
        )
    try:
        result = subprocess.run(
            [binary, "stdin", "stdout", "-l", "eng"],
            input=image,
            capture_output=True,
            timeout=OCR_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise FileRejected(
            f"OCR took more than {OCR_TIMEOUT_S} s: upload a smaller image"
        ) from None
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        raise FileRejected(f"OCR failed on this image: {reason[0]}")
    return _tidy(result.stdout.decode("utf-8", errors="replace"))


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        import cchardet

        encoding = cchardet.detect(data[: 1024 * 1024]).get("encoding") or "latin-1"
        return data.decode(encoding, errors="replace")


def _tidy(text: str | None) -> str:
    """NUL and other control characters out, runs of blank lines to one."""
    text = "".join(ch for ch in (text or "") if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()
