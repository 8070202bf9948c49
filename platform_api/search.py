"""Full-text search over chats: a user's own (`GET /chats/search`) and, for
administrators, everyone's (`GET /admin/conversations?q=`).

What a query means, on both databases: the words of `q` must all occur in one chat title
or in one shown message (any order, case-insensitive); the last word also matches as a
prefix, so results appear while the user is still typing ("prun" finds "pruned"); a
"quoted phrase" matches those words next to each other, in order. Punctuation only
separates words, so `q` is never query syntax: `100%`, `e_c`, `a AND b` or a stray quote
are words to look for, never an error. A `q` without a letter or digit finds nothing.

Where the index lives:
- PostgreSQL: a GIN index on `messages.search_vector`, a stored generated column
  `to_tsvector('simple', content)` (migration 0009: a phrase or prefix match is checked
  against the stored vector, not by tokenizing the message again), and a GIN expression
  index on `to_tsvector('simple', chats.title)` (0008; titles are short). The `simple`
  configuration lowercases and keeps every word (no stemming, no stop words: chats are
  in any language). The title query spells that expression exactly, or the planner would
  not use the index.
- SQLite: an FTS5 index (`search_fts`, unicode61 tokenizer, diacritics folded) over a
  plain table `search_docs` (one row per chat title and per shown message), both kept up to
  date by triggers on `chats` and `messages` (migration 0008). `search_docs` has an
  INTEGER PRIMARY KEY for FTS5's rowid: `messages` has text ids, and the implicit rowid of
  such a table may change on VACUUM. A message is indexed once it is no longer streaming
  and dropped when superseded, so a streamed answer is not re-indexed at every save.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import ColumnElement, column, func, literal_column, or_, table
from sqlmodel import select

from platform_api.models import Chat, Message

QUERY_TERMS_MAX = 16
SNIPPET_CHARS = 80

# The SQLite side of the index (migration 0008); not in the models' metadata.
SEARCH_TABLES = ("search_docs", "search_fts")
_docs = table("search_docs", column("id"), column("kind"), column("source_id"))
_fts = table("search_fts", column("rowid"), column("body"))

_TERM = re.compile(r'"([^"]*)"?|(\S+)')
_WORD = re.compile(r"[^\W_]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # NUL is no text to PostgreSQL
_SIMPLE = literal_column("'simple'::regconfig")
# PostgreSQL's stored vector of messages.content (migration 0009); not in the models.
MESSAGE_VECTOR = "search_vector"
_message_vector = literal_column(f"messages.{MESSAGE_VECTOR}")


@dataclass(frozen=True)
class SearchQuery:
    """`q` parsed: terms (a word, or a quoted phrase, as typed) that each hold a letter or
    digit; the last one matches as a prefix."""

    terms: tuple[str, ...]

    @classmethod
    def parse(cls, q: str) -> SearchQuery | None:
        """None when `q` has no word to look for."""
        terms = []
        for phrase, word in _TERM.findall(_CONTROL.sub(" ", q)):
            term = " ".join((phrase or word).split())
            if _WORD.search(term):
                terms.append(term)
        return cls(tuple(terms[:QUERY_TERMS_MAX])) if terms else None

    def words(self) -> list[str]:
        return [w for term in self.terms for w in _WORD.findall(term)]

    def tsquery(self) -> str:
        """For PostgreSQL's `to_tsquery`: each term quoted, so its parser splits it as it
        splits the text (a quoted term of several words is a phrase), joined with AND."""
        quoted = ["'" + t.replace("\\", "\\\\").replace("'", "''") + "'" for t in self.terms]
        quoted[-1] += ":*"
        return " & ".join(quoted)

    def fts5(self) -> str:
        """For SQLite's FTS5 MATCH: each term a quoted string (tokenized into a phrase),
        the last a prefix; terms side by side are ANDed."""
        quoted = ['"' + t.replace('"', '""') + '"' for t in self.terms]
        quoted[-1] += "*"
        return " ".join(quoted)


def _ts_match(query: SearchQuery, vector) -> ColumnElement[bool]:
    return vector.op("@@")(func.to_tsquery(_SIMPLE, query.tsquery()))


def _indexed(kind: str, query: SearchQuery):
    """SQLite: the ids (chat ids for titles, message ids) whose text matches."""
    matching = select(_fts.c.rowid).where(_fts.c.body.op("MATCH")(query.fts5()))
    return select(_docs.c.source_id).where(_docs.c.kind == kind, _docs.c.id.in_(matching))


def title_matches(dialect: str, query: SearchQuery) -> ColumnElement[bool]:
    """A WHERE clause on `Chat`: its title matches."""
    if dialect == "postgresql":
        return _ts_match(query, func.to_tsvector(_SIMPLE, Chat.title))
    return Chat.id.in_(_indexed("title", query))


def message_matches(dialect: str, query: SearchQuery) -> ColumnElement[bool]:
    """A WHERE clause on `Message`: a shown (not superseded, not streaming) message whose
    text matches."""
    if dialect == "postgresql":
        return (
            _ts_match(query, _message_vector)
            & Message.superseded_at.is_(None)
            & (Message.status != "streaming")
        )
    return Message.id.in_(_indexed("message", query))


def chat_matches(dialect: str, query: SearchQuery) -> ColumnElement[bool]:
    """A WHERE clause on `Chat`: its title or one of its shown messages matches."""
    in_messages = select(Message.chat_id).where(message_matches(dialect, query))
    return or_(title_matches(dialect, query), Chat.id.in_(in_messages))


def snippet(text: str, query: SearchQuery) -> str:
    """The part of `text` around the first of the query's words found in it (at the
    start of a word, case-insensitive), with ellipses where it was cut."""
    at, length = 0, 0
    for word in query.words():
        found = re.search(r"(?<![^\W_])" + re.escape(word), text, re.IGNORECASE)
        if found and (not length or found.start() < at):
            at, length = found.start(), len(word)
    start = max(at - SNIPPET_CHARS // 2, 0)
    piece = text[start : start + SNIPPET_CHARS + length]
    return ("…" if start else "") + piece + ("…" if start + len(piece) < len(text) else "")


def include_object(_object, name: str | None, type_: str, _reflected, _compare_to) -> bool:
    """Alembic's `include_object`: leave out the search objects of migrations 0008 and
    0009, which the models do not declare: SQLite's tables (FTS5 adds shadow tables
    `search_fts_*`), PostgreSQL's indexes (`ix_*_search`) and its stored vector column."""
    if type_ == "table":
        return not (name or "").startswith(SEARCH_TABLES)
    if type_ == "column":
        return name != MESSAGE_VECTOR
    return not (type_ == "index" and (name or "").endswith("_search"))
