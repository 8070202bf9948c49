"""Full-text search over one's own chats (platform_api/search.py), on SQLite (FTS5) and
PostgreSQL (tsvector): words in any order, the last one as a prefix, "quoted phrases";
the index follows renames, deletes and regenerated answers; no query is an error."""

from __future__ import annotations

from sqlalchemy import text

from platform_api.db import make_engine
from platform_api.search import SearchQuery
from testkit.serving_stub import Reply
from tests.platform.test_messages import _events, _messages
from tests.platform.test_monitoring import talk
from tests.platform.test_privacy import delete_me
from tests.platform.test_rewrites import _post


def found(api, account, q: str) -> list[str]:
    response = api.http.get("/chats/search", params={"q": q}, headers=account.headers)
    assert response.status_code == 200, (q, response.text)
    return [hit["chat"]["id"] for hit in response.json()]


def test_every_word_in_any_order_the_last_one_as_a_prefix_and_quoted_phrases(api):
    alice = api.user("alice")
    pie = api.chat(alice, title="Apple pie recipe")
    api.chat(alice, title="Pineapple juice")  # "apple" inside a word is not the word apple
    crumble = api.chat(alice, title="A recipe for apple crumble")
    api.chat(alice, title="Tax return")

    assert found(api, alice, "apple") == [crumble["id"], pie["id"]]  # newest first
    assert found(api, alice, "RECIPE apple") == [crumble["id"], pie["id"]]
    assert found(api, alice, "recipe app") == [crumble["id"], pie["id"]]  # typing...
    assert found(api, alice, "apple tax") == []  # every word
    assert found(api, alice, '"apple pie"') == [pie["id"]]
    assert found(api, alice, '"pie apple"') == []
    assert found(api, alice, '"apple crum') == [crumble["id"]]  # an open quote, as typed


def test_messages_are_found_by_their_words_with_a_snippet_around_them(api, serving):
    alice, mallory = api.user("alice"), api.user("mallory")
    long_question = "Some context first. " * 10 + "How do I graft a pear onto quince stock?"
    chat, _ = talk(api, alice, long_question, title="Orchard notes")
    other, _ = talk(api, mallory, "Grafting pears", title="Mallory's pears")

    hits = api.http.get("/chats/search", params={"q": "quince graft"}, headers=alice.headers)
    assert [h["chat"]["id"] for h in hits.json()] == [chat["id"]]
    snippet = hits.json()[0]["snippet"]
    assert snippet.startswith("…") and "graft a pear onto quince" in snippet
    assert found(api, mallory, "quince") == []  # nobody else's chats
    assert found(api, alice, "pears") == []
    assert found(api, mallory, "pear") == [other["id"]]


def test_the_index_follows_renames_deletes_and_regenerated_answers(api, serving):
    alice = api.user("alice")
    serving.script(Reply(pieces=["Plant ", "tulip bulbs ", "in autumn."]))
    chat, messages = talk(api, alice, "When do bulbs go in?", title="Garden")
    assert found(api, alice, "tulip") == [chat["id"]]

    renamed = api.http.patch(
        f"/chats/{chat['id']}", json={"title": "Flower beds"}, headers=alice.headers
    )
    assert renamed.status_code == 200
    assert found(api, alice, "garden") == []
    assert found(api, alice, "flower") == [chat["id"]]

    serving.script(Reply(pieces=["Daffodils go in September."]))
    answer = messages[-1]
    with _post(api, alice, chat, answer["id"], "regenerate") as response:
        assert [kind for kind, _ in _events(response)][-1] == "done"
    assert found(api, alice, "tulip") == []  # the superseded answer is not shown
    assert found(api, alice, "daffodils september") == [chat["id"]]
    assert [m["content"] for m in _messages(api, alice, chat)][-1] == "Daffodils go in September."

    assert api.http.delete(f"/chats/{chat['id']}", headers=alice.headers).status_code == 204
    assert found(api, alice, "daffodils") == []
    assert found(api, alice, "flower") == []


def test_no_query_is_an_error_and_punctuation_only_separates_words(api):
    alice = api.user("alice")
    done = api.chat(alice, title="100% done")
    snake = api.chat(alice, title="snake_case names")
    mail = api.chat(alice, title="Write to ops@example.org today")
    assert found(api, alice, "100%") == [done["id"]]
    assert found(api, alice, "snake_case") == [snake["id"]]
    assert found(api, alice, "ops@example.org") == [mail["id"]]
    hostile = [
        "%",
        "_",
        '"',
        "'",
        "\\",
        "*",
        ":*",
        "!",
        "&|",
        "(",
        "a AND OR NOT",
        "NEAR(a b)",
        "title:x",
        "'; DROP TABLE chats; --",
        "a\x00b",
        '"unclosed',
        "x" * 200,
        " ".join(["w"] * 100),
    ]
    for q in hostile:
        found(api, alice, q)  # 200, whatever it finds
    for q in ["%", "_", '"', "*", "&|", "!"]:
        assert found(api, alice, q) == [], q  # no letter or digit: nothing to look for
    assert (
        api.http.get("/chats/search", params={"q": "done"}, headers=alice.headers).json()[0][
            "chat"
        ]["id"]
        == done["id"]
    )


def test_query_parsing():
    assert SearchQuery.parse("  %  ") is None
    query = SearchQuery.parse('apple "late  winter" it\'s')
    assert query.terms == ("apple", "late winter", "it's")
    assert query.tsquery() == "'apple' & 'late winter' & 'it''s':*"
    assert query.fts5() == '"apple" "late winter" "it\'s"*'
    assert SearchQuery.parse('say "hi"').fts5() == '"say" "hi"*'
    assert SearchQuery.parse('a"b').fts5() == '"a""b"*'


def test_a_deleted_account_leaves_none_of_its_text_in_the_index(api, serving, database_url):
    alice, bob = api.user("alice"), api.user("bob")
    serving.script(Reply(pieces=["Keep it under the floorboards."]))
    talk(api, alice, "Where do I hide my diary?", title="Secret diary")
    kept, _ = talk(api, bob, "Secret recipe?", title="Bob's secret")
    assert delete_me(api, alice).status_code == 204

    assert found(api, bob, "secret") == [kept["id"]]
    if not database_url.startswith("sqlite"):
        return  # PostgreSQL's indexes are on the rows themselves, gone with them
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            bodies = connection.execute(text("SELECT body FROM search_docs")).scalars().all()
            indexed = connection.execute(
                text("SELECT count(*) FROM search_fts WHERE search_fts MATCH 'diary OR floor*'")
            ).scalar()
    finally:
        engine.dispose()
    assert not any("diary" in body or "floorboards" in body for body in bodies)
    assert indexed == 0
