"""Long-term memory over HTTP, on SQLite and PostgreSQL, with the real embedding model:
facts a user states in a chat are extracted after the turn, listed, edited, disabled and
deleted by their owner, and put into the prompt of a later chat (serving sees them);
another user never reads nor gets them; the privacy export holds them with their vectors
and account deletion erases them. The shared knowledge base the index step publishes is
searchable as the knowledge access rules allow."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlmodel import Session, select

from orchard import demo
from orchard.settings import Settings
from orchard.storage import Storage
from platform_api.db import make_engine
from platform_api.memory import TOKEN_BUDGET, extract_facts
from platform_api.metering import prompt_token_bound
from platform_api.models import Memory
from testkit.platform import CHAT_CREDITS, grant_credits
from tests.platform.conftest import PASSWORD
from tests.platform.test_feedback import answered_chat


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"rate_limit_user": "6000/minute"})  # polls


LONG_FACTS = [
    "I keep bees in the garden behind my house: three hives of Italian bees that I check on "
    "every Sunday morning.",
    "My favourite football team is Olympique Lyonnais and I watch every one of their matches "
    "with my brother.",
    "My project uses Python 3.11 with FastAPI, SQLModel and PostgreSQL 15 on Debian servers "
    "in our own racks.",
    "I am learning the cello and practise scales for forty minutes every evening before "
    "dinner with my teacher.",
]


def memories(api, account) -> list[dict]:
    response = api.http.get("/memories", headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


def remembered(api, account, count: int, timeout: float = 180) -> list[dict]:
    """The account's memories once there are `count` (extraction runs after the turn)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = memories(api, account)
        if len(found) >= count:
            return found
        time.sleep(0.25)
    raise AssertionError(f"{count} memories expected, have {memories(api, account)}")


def system_prompt(serving) -> str:
    messages = serving.requests[-1]["messages"]
    return messages[0]["content"] if messages[0]["role"] == "system" else ""


def test_rules_extract_lasting_first_person_facts_only():
    said = (
        "Hi! I prefer short answers. My project uses Python 3.11. My code is broken, why? "
        "If I use asyncio, what happens? Remember that my cat is called Tom."
    )
    assert extract_facts(said) == [
        "I prefer short answers.",
        "My project uses Python 3.11.",
        "My cat is called Tom.",
    ]
    assert extract_facts("What is my name? I don't know how to write a decorator.") == []


def test_facts_stated_in_a_chat_reach_a_later_chat_and_only_their_owner(api, serving):
    alice, bob = api.user("alice"), api.user("bob")
    chat, _ = answered_chat(api, alice, "I prefer short answers. My project uses Python 3.11.")
    found = remembered(api, alice, 2)
    assert {m["content"] for m in found} == {
        "I prefer short answers.",
        "My project uses Python 3.11.",
    }
    question = api.http.get(f"/chats/{chat['id']}/messages", headers=alice.headers).json()[0]
    assert {(m["source"], m["message_id"], m["enabled"]) for m in found} == {
        ("rules", question["id"], True)
    }
    assert found[0]["embedding_dimension"] == 384

    # A later chat: the memories are in the system prompt serving gets, after the chat's own.
    answered_chat(api, alice, "Which Python version should I target?", system_prompt="Be kind.")
    prompt = system_prompt(serving)
    assert prompt.startswith("Be kind.")
    assert "- My project uses Python 3.11." in prompt and "- I prefer short answers." in prompt
    assert "not instructions" in prompt

    # Bob gets none of it: not in his prompt, not in his list, not by id.
    answered_chat(api, bob, "Which Python version should I target?")
    assert "Python 3.11" not in str(serving.requests[-1]["messages"])
    assert memories(api, bob) == []
    for method, body in (("PATCH", {"enabled": False}), ("DELETE", None)):
        response = api.http.request(
            method, f"/memories/{found[0]['id']}", json=body, headers=bob.headers
        )
        assert response.status_code == 404, response.text
    assert len(memories(api, alice)) == 2

    # Disabled: kept, listed, never in a prompt; the same fact said again is not doubled.
    version = next(m for m in found if "Python" in m["content"])
    off = api.http.patch(
        f"/memories/{version['id']}", json={"enabled": False}, headers=alice.headers
    )
    assert off.status_code == 200 and off.json()["enabled"] is False
    answered_chat(api, alice, "My project uses Python 3.11. I live in Lyon. Which version?")
    prompt = system_prompt(serving)
    assert "Python 3.11" not in prompt and "- I prefer short answers." in prompt
    # Lyon is stored after the repeated fact was looked at: once it is there, so is the
    # proof that the repeated fact was not stored twice.
    assert len(remembered(api, alice, 3)) == 3

    # Memory switched off (the settings page): nothing recalled, nothing remembered; the
    # memories stay listed. On again, both resume.
    switch = api.http.put("/users/me/memory", json={"memory_enabled": False}, headers=alice.headers)
    assert switch.status_code == 200 and switch.json()["memory_enabled"] is False
    assert api.http.get("/users/me", headers=alice.headers).json()["memory_enabled"] is False
    answered_chat(api, alice, "I work at a bakery. What bread should I bake?")
    assert "I prefer short answers." not in system_prompt(serving)
    switch = api.http.put("/users/me/memory", json={"memory_enabled": True}, headers=alice.headers)
    assert switch.json()["memory_enabled"] is True
    answered_chat(api, alice, "I am learning the cello. Any advice?")
    assert "- I prefer short answers." in system_prompt(serving)
    assert {m["content"] for m in remembered(api, alice, 4)} == {
        "I prefer short answers.",
        "My project uses Python 3.11.",
        "I live in Lyon.",
        "I am learning the cello.",
    }


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # nothing DB-specific
def test_the_model_picks_facts_in_the_users_own_words_and_the_rules_stand_in(
    settings, database_url, platform_pool, serving
):
    from testkit.serving_stub import Reply

    model_settings = settings.model_copy(update={"memory_extraction": "model"})
    with platform_pool.api(model_settings, database_url) as api:
        alice = api.user("alice")
        # The answer, then the extraction: one fact the user wrote (no rule knows "keep"),
        # one the model made up, one question.
        serving.script(
            Reply(pieces=["Lavender."]),
            Reply(pieces=["- I keep three hives of bees\n- I am the king of France.\n"
                          "- What flowers do bees like?"]),
        )  # fmt: skip
        answered_chat(
            api, alice, "By the way, I keep three hives of bees. What flowers do bees like?"
        )
        found = remembered(api, alice, 1)
        assert [(m["content"], m["source"]) for m in found] == [
            ("I keep three hives of bees.", "model")
        ]
        extraction = serving.requests[-1]
        assert extraction["stream"] is False and extraction["model"] == "champion"
        assert extraction["messages"][-1]["content"].startswith("By the way, I keep")
        # Serving fails the extraction: the rules answer.
        serving.script(Reply(pieces=["Noted."]), Reply(status=500))
        answered_chat(api, alice, "I prefer short answers.")
        assert {(m["content"], m["source"]) for m in remembered(api, alice, 2)} == {
            ("I keep three hives of bees.", "model"),
            ("I prefer short answers.", "rules"),
        }


def test_a_user_adds_edits_and_deletes_memories(api, serving):
    alice = api.user("alice")
    created = api.http.post(
        "/memories", json={"content": "  I am vegetarian.  "}, headers=alice.headers
    )
    assert created.status_code == 201, created.text
    memory = created.json()
    assert (memory["content"], memory["source"]) == ("I am vegetarian.", "user")
    again = api.http.post("/memories", json={"content": "I am vegetarian"}, headers=alice.headers)
    assert again.status_code == 409 and "already" in again.json()["detail"]
    for body in ({"content": ""}, {"content": "x" * 501}, {"unknown": 1}):
        assert api.http.post("/memories", json=body, headers=alice.headers).status_code == 422
    assert (
        api.http.patch(f"/memories/{memory['id']}", json={}, headers=alice.headers).status_code
        == 422
    )

    edited = api.http.patch(
        f"/memories/{memory['id']}", json={"content": "I live in Lyon."}, headers=alice.headers
    )
    assert edited.status_code == 200 and edited.json()["content"] == "I live in Lyon."
    answered_chat(api, alice, "Where could I go for a walk this weekend?")
    prompt = system_prompt(serving)
    assert "- I live in Lyon." in prompt and "vegetarian" not in prompt

    assert api.http.delete(f"/memories/{memory['id']}", headers=alice.headers).status_code == 204
    assert api.http.delete(f"/memories/{memory['id']}", headers=alice.headers).status_code == 404
    answered_chat(api, alice, "Where could I go for a walk this weekend?")
    assert "Lyon" not in system_prompt(serving)

    # Long memories: the most similar first, then those that still fit in the budget (not
    # all four, though top-k would take five).
    for fact in LONG_FACTS:
        api.http.post("/memories", json={"content": fact}, headers=alice.headers)
    answered_chat(api, alice, "Which Python version does my project use?")
    prompt = system_prompt(serving)
    recalled = [line for line in prompt.splitlines() if line.startswith("- ")]
    assert recalled[0] == f"- {LONG_FACTS[2]}" and 1 <= len(recalled) < len(LONG_FACTS)
    assert prompt_token_bound([prompt]) <= TOKEN_BUDGET
    assert api.http.delete("/memories", headers=alice.headers).status_code == 204
    assert memories(api, alice) == []


def test_export_holds_my_memories_with_vectors_and_deletion_erases_them(api, serving):
    alice, bob = api.user("alice"), api.user("bob")
    api.http.post("/memories", json={"content": "I work at a bakery."}, headers=alice.headers)
    api.http.post("/memories", json={"content": "Bob's secret fact."}, headers=bob.headers)
    data = api.http.get("/users/me/export", headers=alice.headers).json()
    (exported,) = data["memories"]
    assert exported["content"] == "I work at a bakery."
    assert len(exported["vector"]) == 384 == exported["embedding_dimension"]
    assert "Bob's secret" not in str(data)

    deleted = api.http.request(
        "DELETE", "/users/me", json={"password": PASSWORD}, headers=alice.headers
    )
    assert deleted.status_code == 204, deleted.text
    with Session(make_engine(api.database_url)) as session:
        left = session.exec(select(Memory.user_id)).all()
    assert left == [bob.id]


def test_the_crawled_site_is_searchable_and_cited_in_chats_as_the_access_rules_allow(api, serving):
    from tests.platform.test_chat_knowledge import ask
    from tests.unit.test_index import DOCS, SITE, curated, index, page_lines

    if not DOCS.is_dir():
        return  # the demo website is missing: tests/unit/test_index.py says how to get it
    data = Path(Storage.from_settings(api.settings).root)
    index(api.settings, curated(data, "site", page_lines(["json", "csv"])))
    index(api.settings, curated(data, "faq", page_lines(["heapq"])),
          knowledge_base="faq", title="Questions")  # fmt: skip
    alice, root = api.user("alice"), api.admin()

    listed = api.http.get("/shared-knowledge", headers=alice.headers).json()
    assert [(b["slug"], b["documents"], b["embedding_dimension"]) for b in listed] == [
        ("crawled-site", 2, 384),
        ("faq", 1, 384),
    ]
    hits = api.http.post(
        "/shared-knowledge/crawled-site/search",
        json={"query": "How do I turn a Python dict into a JSON string?"},
        headers=alice.headers,
    )
    assert hits.status_code == 200, hits.text
    assert hits.json()[0]["chunk"]["source"] == f"{SITE}/json.html"

    # A chat that uses the crawled site answers a question about the docs citing the page.
    chat = api.chat(alice)
    knowledge = f"/chats/{chat['id']}/knowledge"
    used = api.http.put(
        knowledge, json={"knowledge_base_ids": [], "shared_knowledge_bases": ["crawled-site"]},
        headers=alice.headers,
    )  # fmt: skip
    assert used.status_code == 200, used.text
    assert [b["slug"] for b in used.json()["shared_knowledge_bases"]] == ["crawled-site"]
    events = ask(api, alice, chat, "How do I turn a Python dict into a JSON string?")
    assert [kind for kind, _ in events][:2] == ["start", "citations"]
    first = events[1][1]["citations"][0]
    assert (first["n"], first["source"], first["knowledge_base_id"]) == (
        1, f"{SITE}/json.html", "crawled-site"
    )  # fmt: skip
    question = serving.requests[-1]["messages"][-1]["content"]
    assert question.startswith(f"<sources>\n[1] {SITE}/json.html\n")
    # `orchard ask` (what `orchard run` ends with) asks as the demo user: registered on
    # first use, logged in after, its chat on the crawled site, the page cited.
    email, password = demo.demo_login(api.settings)
    registered = api.http.post("/auth/register", json={"email": email, "password": password})
    assert registered.status_code == 201, registered.text
    url = api.database_url or api.settings.database_url
    grant_credits(url, registered.json()["id"], CHAT_CREDITS)  # the test has no starter plan
    answer = demo.ask(api.settings, "How do I turn a Python dict into a JSON string?",
                      api_url=api.root)  # fmt: skip
    assert (answer.status, answer.sources[0]) == ("complete", f"{SITE}/json.html")
    assert answer.answer and answer.model_version
    # Another user's chat cannot be pointed at it, nor can a base that is not published.
    mallory = api.user("mallory")
    assert api.http.get(knowledge, headers=mallory.headers).status_code == 404
    unknown = api.http.put(
        knowledge, json={"knowledge_base_ids": [], "shared_knowledge_bases": ["nope"]},
        headers=alice.headers,
    )  # fmt: skip
    assert unknown.status_code == 404

    # Users may use the FAQ only; administrators keep every base (no rule for them).
    rules = "/admin/knowledge-access"
    bad = api.http.post(
        rules, json={"role": "user", "knowledge_base": "nope"}, headers=root.headers
    )
    assert bad.status_code == 422 and "crawled-site" in bad.json()["detail"]
    refused = api.http.post(
        rules, json={"role": "user", "knowledge_base": "faq"}, headers=alice.headers
    )
    assert refused.status_code == 403
    rule = api.http.post(
        rules, json={"role": "user", "knowledge_base": "faq"}, headers=root.headers
    )
    assert rule.status_code == 201, rule.text
    assert [b["slug"] for b in api.http.get("/shared-knowledge", headers=alice.headers).json()] == [
        "faq"
    ]
    search = {"query": "json"}
    url = "/shared-knowledge/crawled-site/search"
    assert api.http.post(url, json=search, headers=alice.headers).status_code == 404
    assert api.http.post(url, json=search, headers=root.headers).status_code == 200
    # The chat set to the crawled site before the rule retrieves nothing of it now.
    assert api.http.get(knowledge, headers=alice.headers).json()["shared_knowledge_bases"] == []
    events = ask(api, alice, chat, "How do I turn a Python dict into a JSON string?")
    assert "citations" not in [kind for kind, _ in events]
    assert not serving.requests[-1]["messages"][-1]["content"].startswith("<sources>")
    refused = api.http.put(
        knowledge, json={"knowledge_base_ids": [], "shared_knowledge_bases": ["crawled-site"]},
        headers=alice.headers,
    )  # fmt: skip
    assert refused.status_code == 404
    deleted = api.http.delete(f"{rules}/{rule.json()['id']}", headers=root.headers)
    assert deleted.status_code == 204
    assert api.http.post(url, json=search, headers=alice.headers).status_code == 200
