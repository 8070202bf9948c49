"""Full-text search over chat titles and messages (platform_api/search.py).

PostgreSQL: GIN expression indexes on `to_tsvector('simple', …)`. SQLite: `search_docs`
(one row per chat title and per shown message, kept by triggers) and an FTS5 index over
it, `search_fts`, kept by the external-content triggers of SQLite's FTS5 documentation.
Existing chats and messages are indexed here.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-20
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POSTGRES_INDEXES = {
    "ix_messages_content_search": ("messages", "content"),
    "ix_chats_title_search": ("chats", "title"),
}

# A message is indexed when it is shown: finished (not streaming) and not superseded.
SHOWN = "{row}.status <> 'streaming' AND {row}.superseded_at IS NULL"

SQLITE_UP = [
    """CREATE TABLE search_docs (
        id INTEGER PRIMARY KEY,
        kind VARCHAR(8) NOT NULL CHECK (kind IN ('title', 'message')),
        source_id VARCHAR(32) NOT NULL,
        body TEXT NOT NULL,
        UNIQUE (kind, source_id)
    )""",
    """CREATE VIRTUAL TABLE search_fts USING fts5(
        body, content='search_docs', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2'
    )""",
    # search_docs -> search_fts
    """CREATE TRIGGER search_docs_insert AFTER INSERT ON search_docs BEGIN
        INSERT INTO search_fts(rowid, body) VALUES (new.id, new.body);
    END""",
    """CREATE TRIGGER search_docs_delete AFTER DELETE ON search_docs BEGIN
        INSERT INTO search_fts(search_fts, rowid, body) VALUES ('delete', old.id, old.body);
    END""",
    """CREATE TRIGGER search_docs_update AFTER UPDATE ON search_docs BEGIN
        INSERT INTO search_fts(search_fts, rowid, body) VALUES ('delete', old.id, old.body);
        INSERT INTO search_fts(rowid, body) VALUES (new.id, new.body);
    END""",
    # chats -> search_docs
    """CREATE TRIGGER search_chat_insert AFTER INSERT ON chats BEGIN
        INSERT INTO search_docs(kind, source_id, body) VALUES ('title', new.id, new.title);
    END""",
    """CREATE TRIGGER search_chat_title AFTER UPDATE OF title ON chats BEGIN
        UPDATE search_docs SET body = new.title WHERE kind = 'title' AND source_id = old.id;
    END""",
    """CREATE TRIGGER search_chat_delete AFTER DELETE ON chats BEGIN
        DELETE FROM search_docs WHERE kind = 'title' AND source_id = old.id;
    END""",
    # messages -> search_docs
    f"""CREATE TRIGGER search_message_insert AFTER INSERT ON messages
    WHEN {SHOWN.format(row="new")} BEGIN
        INSERT INTO search_docs(kind, source_id, body) VALUES ('message', new.id, new.content);
    END""",
    f"""CREATE TRIGGER search_message_update
    AFTER UPDATE OF content, status, superseded_at ON messages BEGIN
        DELETE FROM search_docs WHERE kind = 'message' AND source_id = old.id;
        INSERT INTO search_docs(kind, source_id, body)
            SELECT 'message', new.id, new.content WHERE {SHOWN.format(row="new")};
    END""",
    """CREATE TRIGGER search_message_delete AFTER DELETE ON messages BEGIN
        DELETE FROM search_docs WHERE kind = 'message' AND source_id = old.id;
    END""",
    # what is there already
    "INSERT INTO search_docs(kind, source_id, body) SELECT 'title', id, title FROM chats",
    "INSERT INTO search_docs(kind, source_id, body) SELECT 'message', id, content"
    f" FROM messages WHERE {SHOWN.format(row='messages')}",
]

SQLITE_TRIGGERS = [
    "search_docs_insert",
    "search_docs_delete",
    "search_docs_update",
    "search_chat_insert",
    "search_chat_title",
    "search_chat_delete",
    "search_message_insert",
    "search_message_update",
    "search_message_delete",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, (table, column) in POSTGRES_INDEXES.items():
            op.execute(
                f"CREATE INDEX {name} ON {table} "
                f"USING gin (to_tsvector('simple'::regconfig, {column}))"
            )
        return
    for statement in SQLITE_UP:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in POSTGRES_INDEXES:
            op.execute(f"DROP INDEX {name}")
        return
    for trigger in SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER {trigger}")
    op.execute("DROP TABLE search_fts")
    op.execute("DROP TABLE search_docs")
