"""Entries of documentation pages: what the chat_data step asks questions about.

An entry is one thing a page documents with its reference answer in the page's own words
(PII replaced as curate does, Sphinx "¶" permalinks removed):
- a Sphinx object (`<dl class="py function|class|method|...">`, also the C domain): `dt[id]`
  is its qualified name, `dt`'s text its signature, the first paragraph(s) of its `dd`
  (at most `answer_chars`, cut at a sentence end) its answer;
- a section (an h1/h2/h3 and the paragraphs that follow it, also on non-Sphinx pages);
- a document without HTML: its title line and first paragraph, when it has them.

The HTML of a curated page comes from the WARC files of the crawl/import steps behind the
curate manifest (`raw_html`, through the manifests' recorded inputs).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from orchard.pii import replace_phone_numbers
from orchard.steps import Manifest, ancestors

log = logging.getLogger("orchard.chat_data")

_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_SECTION_NUMBER = re.compile(r"^(?:\d+\.)+\d*\s+")
_MAIN = ('//*[@role="main"]', "//main", "//article", '//div[@class="body"]', "//body")


class AnswerLimits(Protocol):
    """How long a reference answer may be, and must be (the chat_data config)."""

    answer_chars: int
    min_answer_chars: int


@dataclass
class Entry:
    """One thing the corpus documents, with its reference answer in its own words."""

    id: str
    source: str  # sphinx | section | text
    group: str  # the page: same_module negatives come from the same group
    kind: str
    name: str
    answer: str
    page: str  # how a question names the page: `module` or “title”
    level: int = 0
    signature: str | None = None
    module: str | None = None


# -- text --------------------------------------------------------------------------------


class Cleaner:
    """Page text as curate leaves it: NFC, one space, no permalinks, PII replaced."""

    def __init__(self) -> None:
        from datatrove.pipeline.formatters import PIIFormatter

        self._pii = PIIFormatter()  # cycles through its placeholders: one per run

    def __call__(self, text: str) -> str:
        text = unicodedata.normalize("NFC", text.replace("¶", ""))
        text = " ".join(text.split())
        return replace_phone_numbers(self._pii.format(text))


def cut(paragraphs: Iterable[str], limit: int) -> str:
    """The first paragraph(s), at most `limit` characters, ending at a sentence end; a
    closing paragraph that only introduces what follows it ("...as follows:") goes."""
    kept: list[str] = []
    for paragraph in paragraphs:
        if len("\n\n".join([*kept, paragraph])) <= limit:
            kept.append(paragraph)
            continue
        if not kept:
            ends = [m.end() for m in _SENTENCE_END.finditer(paragraph, 0, limit)]
            if ends and ends[-1] >= limit // 4:
                kept.append(paragraph[: ends[-1]])
            else:
                kept.append(paragraph[:limit].rsplit(" ", 1)[0] + "…")
        break
    while kept and kept[-1].endswith(":"):
        kept.pop()
    return "\n\n".join(kept)


def first_sentence(text: str) -> str:
    found = _SENTENCE_END.search(text)
    return text[: found.end()] if found else text


# -- HTML --------------------------------------------------------------------------------


def _classes(element) -> list[str]:
    return (element.get("class") or "").split()


def _has_heading(element) -> bool:
    return element.tag in _HEADINGS or bool(element.xpath(".//h1|.//h2|.//h3|.//h4|.//h5|.//h6"))


def _paragraphs(elements: Iterable, clean: Cleaner, min_chars: int) -> Iterator[str]:
    """The leading paragraphs among `elements` (siblings after a heading, children of a
    `dd`): what comes before them (a version note, a rule) is skipped; a heading, an
    object description or anything else after them ends them."""
    started = False
    for element in elements:
        if not isinstance(element.tag, str):  # comments, processing instructions
            continue
        if _has_heading(element) or element.tag == "dl":
            return
        if element.tag == "p":
            text = clean(element.text_content())
            if len(text) < min_chars or text.startswith("Source code:"):
                if started:
                    return
                continue
            started = True
            yield text
        elif element.tag == "div" and not _classes(element) and element.xpath("./p"):
            yield from _paragraphs(element, clean, min_chars)
            return
        elif started:
            return


def quote_title(title: str) -> str:
    return title if any(mark in title for mark in '“”"') else f"“{title}”"


def _page_module(root, title: str) -> str | None:
    """The module a Sphinx page documents: `module-<name>` with a title naming it (a
    section about "Module contents" has the id module-contents too)."""
    for ident in root.xpath('//*[starts-with(@id, "module-")]/@id'):
        name = ident.removeprefix("module-")
        if name and re.split(r"\s|—|–", title, maxsplit=1)[0] == name:
            return name
    return None


def parse_page(data: str, url: str, limits: AnswerLimits, clean: Cleaner) -> list[Entry]:
    """Entries of one HTML page, in document order: Sphinx objects, then sections."""
    from lxml import etree
    from lxml import html as lhtml

    data = re.sub(r"^\s*<\?xml[^>]*\?>", "", data)
    try:
        root = lhtml.document_fromstring(data)
    except (ValueError, etree.ParserError) as error:
        log.warning("skipped %s: not parsable as HTML (%s)", url, error)
        return []
    for junk in root.xpath('//script|//style|//a[contains(@class, "headerlink")]'):
        junk.drop_tree()
    main = next((found[0] for path in _MAIN if (found := root.xpath(path))), root)
    h1 = main.xpath(".//h1")
    title = clean(h1[0].text_content()) if h1 else ""
    if not title:
        titles = root.xpath("//title")
        title = clean(titles[0].text_content()).split(" — ")[0] if titles else url
    title = _SECTION_NUMBER.sub("", title) or url
    module = _page_module(main, title)
    page = f"`{module}`" if module else quote_title(title)
    entries: list[Entry] = []

    for dl in main.xpath(".//dl"):
        classes = _classes(dl)
        if not classes or classes[0] not in ("py", "c") or not dl.xpath("./dt[@id]|./dd"):
            continue
        kind = classes[1] if len(classes) > 1 else "object"
        dts, dds = dl.xpath("./dt[@id]"), dl.xpath("./dd")
        if not dts or not dds:
            continue
        name = dts[0].get("id")
        if classes[0] == "c":
            name = name.removeprefix("c.")
        answer = cut(_paragraphs(dds[0], clean, 1), limits.answer_chars)
        if len(answer) < limits.min_answer_chars:
            continue
        entries.append(
            Entry(
                id=name,
                source="sphinx",
                group=url,
                kind=kind,
                name=name,
                answer=answer,
                page=page,
                signature=clean(dts[0].text_content()),
                module=module if module and name.startswith(f"{module}.") else None,
            )
        )

    for heading in main.xpath(".//h1|.//h2|.//h3"):
        text = _SECTION_NUMBER.sub("", clean(heading.text_content()))
        if not text:
            continue
        answer = cut(
            _paragraphs(heading.itersiblings(), clean, limits.min_answer_chars),
            limits.answer_chars,
        )
        if len(answer) < limits.min_answer_chars:
            continue
        parent = heading.getparent()
        section = parent.get("id") if parent is not None and parent.tag == "section" else None
        anchor = section or heading.get("id") or re.sub(r"\W+", "-", text.lower()).strip("-")
        entries.append(
            Entry(
                id=f"{url}#{anchor}",
                source="section",
                group=url,
                kind="page" if heading.tag == "h1" else "section",
                name=text,
                answer=answer,
                page=page,
                level=int(heading.tag[1]),
            )
        )
    return entries


def text_entry(doc: dict, limits: AnswerLimits, clean: Cleaner) -> Entry | None:
    """A document without HTML: its title (metadata, or a short first line) and its first
    paragraph; None when it has neither."""
    lines = [line.strip() for line in doc["text"].splitlines() if line.strip()]
    title = doc["metadata"].get("title")
    if not isinstance(title, str) or not title.strip():
        if len(lines) < 2 or len(lines[0]) > 100 or lines[0][-1] in ".!?:;,":
            return None
        title, lines = lines[0], lines[1:]
    paragraphs: list[str] = []
    for line in lines:
        good = len(line) >= 40 and "|" not in line and line != title
        if good:
            paragraphs.append(clean(line))
        elif paragraphs:
            break
    answer = cut(paragraphs, limits.answer_chars)
    title = clean(title)
    if len(answer) < limits.min_answer_chars or not title:
        return None
    ident = f"{doc['metadata'].get('url') or doc['id']}#text"
    return Entry(
        id=ident, source="text", group=ident, kind="text", name=title, answer=answer, page=title
    )


def raw_html(corpus: Manifest, urls: set[str]) -> dict[str, str]:
    """URL -> decoded HTML of the pages behind `corpus` whose URL is in `urls` (the first
    copy of a URL wins), from the `*.warc.gz` of the steps it was curated from."""
    from warcio.archiveiterator import ArchiveIterator

    found: dict[str, str] = {}
    for upstream in ancestors([corpus])[1:]:
        root = Path(upstream.path)
        if not root.is_dir():
            continue
        for warc in sorted(root.rglob("*.warc.gz")):
            try:
                with warc.open("rb") as handle:
                    for record in ArchiveIterator(handle):
                        if record.rec_type != "response":
                            continue
                        uri = record.rec_headers.get_header("WARC-Target-URI")
                        if uri not in urls or uri in found:
                            continue
                        http = record.http_headers
                        if http is not None and not http.get_statuscode().startswith("2"):
                            continue
                        media = (
                            (http.get_header("Content-Type") if http is not None else None)
                            or record.rec_headers.get_header("Content-Type")
                            or ""
                        )
                        payload = record.rec_headers.get_header("WARC-Identified-Payload-Type")
                        if "html" not in (payload or media).lower():
                            continue
                        found[uri] = _decode(record.content_stream().read(), media)
            except Exception as error:  # noqa: BLE001 - one bad WARC loses its pages only
                log.warning("stopped reading %s: %s (its pages fall back to text)", warc, error)
    return found


def _decode(data: bytes, media: str) -> str:
    charset = re.search(r"charset=[\"']?([\w.:-]+)", media or "", re.IGNORECASE)
    for encoding in (charset.group(1) if charset else None, "utf-8"):
        if encoding:
            try:
                return data.decode(encoding)
            except (LookupError, UnicodeDecodeError):
                continue
    return data.decode("cp1252", errors="replace")
