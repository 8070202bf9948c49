"""Chat search: the full-text index (platform_api/search.py) against a substring scan.

    .venv/bin/python bench/search.py [--messages 50000] [--queries 50]

Builds a migrated platform database (SQLite in a temporary directory, and PostgreSQL too
when its binaries are installed: a throwaway server, as in the tests) holding `--messages`
messages of generated prose in chats of 100 users, then times the query behind
`GET /chats/search` for one user and the administrators' search across every user, with
the full-text index and with the ILIKE '%q%' substring scan it replaced (the baseline, in
the same process on the same data): p50/p99 per query and the ratio. Prints figures,
never fails on time.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from sqlalchemy import func, insert, text  # noqa: E402
from sqlmodel import Session, select  # noqa: E402

from platform_api import search  # noqa: E402
from platform_api.db import make_engine, migrate  # noqa: E402
from platform_api.models import Chat, Message, User  # noqa: E402

USERS = 100
MESSAGES_PER_CHAT = 20
VOCABULARY = 20_000  # generated words, drawn with Zipf's law as in real text


def vocabulary(rng: random.Random) -> list[str]:
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choices(syllables, k=rng.randint(1, 4))))
    return sorted(words, key=lambda w: (len(w), w))  # short words are the frequent ones


def queries(words: list[str]) -> list[str]:
    """Two words of middling frequency, one rarer word, a prefix as typed, a common word."""
    return [
        f"{words[300]} {words[900]}",
        words[2_000],
        f"{words[150]} {words[5_000][:4]}",
        words[40],
        f'"{words[10]} {words[20]}"',
    ]


def fill(url: str, messages: int, seed: int = 0) -> str:
    """Generated users, chats and messages; returns the id of the first user."""
    rng = random.Random(seed)
    words = vocabulary(rng)
    weights = [1 / rank for rank in range(1, len(words) + 1)]
    migrate(url)
    engine = make_engine(url)
    users = [User(email=f"u{i}@bench.test", password_hash="x") for i in range(USERS)]
    with Session(engine) as session:
        session.add_all(users)
        session.commit()
        user_ids = [u.id for u in users]
    chats = messages // MESSAGES_PER_CHAT
    with engine.begin() as connection:
        for c in range(chats):
            chat = Chat(
                user_id=user_ids[c % USERS],
                title=" ".join(rng.choices(words, weights, k=3)),
                model_alias="champion",
            )
            connection.execute(insert(Chat).values(chat.model_dump()))
            rows = [
                Message(
                    chat_id=chat.id,
                    seq=s,
                    role="user" if s % 2 else "assistant",
                    content=" ".join(rng.choices(words, weights, k=rng.randint(20, 80))),
                ).model_dump()
                for s in range(MESSAGES_PER_CHAT)
            ]
            connection.execute(insert(Message), rows)
        if engine.dialect.name == "postgresql":
            connection.execute(text("ANALYZE"))
    engine.dispose()
    return user_ids[0]


def substring(q: str):
    pattern = f"%{q.strip(chr(34))}%"
    in_messages = select(Message.chat_id).where(
        Message.superseded_at.is_(None), Message.content.ilike(pattern)
    )
    return Chat.title.ilike(pattern) | Chat.id.in_(in_messages)


def timed(url: str, user_id: str | None, where, runs: int) -> list[float]:
    engine = make_engine(url)
    asked = queries(vocabulary(random.Random(0)))
    took = []
    with Session(engine) as session:
        session.exec(select(func.count()).select_from(User)).one()  # connect first
        for i in range(runs):
            query = select(func.count()).select_from(Chat).where(where(asked[i % len(asked)]))
            if user_id is not None:
                query = query.where(Chat.user_id == user_id)
            start = time.perf_counter()
            session.exec(query).one()
            took.append(time.perf_counter() - start)
    engine.dispose()
    return took


def report(name: str, url: str, user_id: str, queries: int) -> None:
    dialect = make_engine(url).dialect.name

    def fulltext(q: str):
        return search.chat_matches(dialect, search.SearchQuery.parse(q))

    for scope, owner in (("one user's chats", user_id), ("every user's chats", None)):
        indexed = timed(url, owner, fulltext, queries)
        scan = timed(url, owner, substring, queries)
        p50, base = statistics.median(indexed), statistics.median(scan)
        p99 = sorted(indexed)[int(len(indexed) * 0.99) - 1]
        print(
            f"{name:>10} | {scope:<18} | full-text p50/p99 {p50 * 1e3:7.2f}/{p99 * 1e3:7.2f} ms"
            f" | substring p50 {base * 1e3:8.2f} ms | {base / p50:6.1f}x faster"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="orchard-bench-search-"))
    chats = args.messages // MESSAGES_PER_CHAT
    print(f"{args.messages} messages in {chats} chats of {USERS} users, {VOCABULARY} words")
    try:
        url = f"sqlite:///{root / 'platform.db'}"
        report("SQLite", url, fill(url, args.messages), args.queries)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    from testkit.postgres import PostgresUnavailable, find_bindir, start_postgres

    if find_bindir() is None:
        print("PostgreSQL: no binaries installed, skipped")
        return
    try:
        server = start_postgres()
    except PostgresUnavailable as error:
        print(f"PostgreSQL: {error}")
        return
    try:
        url = server.url(server.create_database())
        report("PostgreSQL", url, fill(url, args.messages), args.queries)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
