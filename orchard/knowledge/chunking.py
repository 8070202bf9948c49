"""Sections into chunks: passages small enough to embed and to cite.

A chunk never crosses a section (a heading or a page), so its citation names one
heading and one page. Within a section paragraphs are packed up to `max_chars`; a
paragraph longer than that is cut at sentence ends, else at spaces. Consecutive chunks
of a section overlap by up to `overlap` characters (whole words from the end of the
previous chunk), so a sentence cut in two is whole in one of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from orchard.knowledge.files import Section

MAX_CHARS = 1000
OVERLAP = 200
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class TextChunk:
    text: str
    heading: str = ""
    page: int | None = None

    @property
    def embedding_text(self) -> str:
        """What is embedded: the heading gives a passage its topic."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


def chunk_sections(
    sections: Iterable[Section], max_chars: int = MAX_CHARS, overlap: int = OVERLAP
) -> list[TextChunk]:
    if not 0 <= overlap < max_chars // 2:
        raise ValueError("overlap must be at least 0 and under half of max_chars")
    chunks: list[TextChunk] = []
    for section in sections:
        for text in _pack(_pieces(section.text, max_chars - overlap - 2), max_chars, overlap):
            chunks.append(TextChunk(text=text, heading=section.heading, page=section.page))
    return chunks


def _pieces(text: str, limit: int) -> Iterator[str]:
    """Paragraphs, each at most `limit` characters (long ones cut at sentences/words)."""
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if len(paragraph) <= limit:
            if paragraph:
                yield paragraph
            continue
        piece = ""
        for sentence in _SENTENCE_END.split(paragraph):
            for part in _cut(sentence, limit):
                if piece and len(piece) + 1 + len(part) > limit:
                    yield piece
                    piece = part
                else:
                    piece = f"{piece} {part}" if piece else part
        if piece:
            yield piece


def _cut(text: str, limit: int) -> Iterator[str]:
    while len(text) > limit:
        at = text.rfind(" ", 0, limit)
        at = at if at > limit // 2 else limit
        yield text[:at].strip()
        text = text[at:].strip()
    if text:
        yield text


def _pack(pieces: Iterable[str], max_chars: int, overlap: int) -> Iterator[str]:
    current = ""
    for piece in pieces:
        if current and len(current) + 2 + len(piece) > max_chars:
            yield current
            tail = _tail(current, overlap)
            current = f"{tail}\n\n{piece}" if tail else piece
        else:
            current = f"{current}\n\n{piece}" if current else piece
    if current:
        yield current


def _tail(text: str, size: int) -> str:
    """The last whole words of `text`, at most `size` characters."""
    if size == 0:
        return ""
    tail = text[-size:]
    space = tail.find(" ")
    return tail[space + 1 :].strip() if space >= 0 and len(text) > size else tail.strip()
