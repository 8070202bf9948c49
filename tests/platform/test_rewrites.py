"""Regenerate the last answer and edit-and-resend a question: the replaced messages are
kept in the database but hidden everywhere the chat shows (its messages, the history sent
to serving, search, export, share views); the user's data export still has them."""

from __future__ import annotations

import json
import uuid

import pytest

from testkit.serving_stub import Reply
from tests.platform.test_messages import _events, _iter_events, _messages, _send, _settled


def _post(api, account, chat, message_id: str, action: str, **body):
    return api.http.stream(
        "POST",
        f"/chats/{chat['id']}/messages/{message_id}/{action}",
        json=body or None,
        headers=account.headers,
    )


def _turns(api, account, chat, *questions: str) -> list[dict]:
    for question in questions:
        with _send(api, account, chat, question) as response:
            _events(response)
    return _messages(api, account, chat)


def test_regenerate_hides_the_old_answer_and_answers_the_same_history(api, serving):
    alice, root = api.user("alice"), api.admin()
    chat = api.chat(alice, title="Fruit", system_prompt="Be brief.")
    serving.script(Reply(pieces=["Apples."]), Reply(pieces=["Pears", " are", " sweeter."]))
    q1, a1, q2, old = _turns(api, alice, chat, "Name a fruit", "Which is sweetest?")
    rated = api.http.put(
        f"/chats/{chat['id']}/messages/{old['id']}/feedback",
        json={"rating": "down", "comment": "no"},
        headers=alice.headers,
    )
    assert rated.status_code == 200
    asked_before = serving.requests[-1]

    serving.script(Reply(pieces=["Mangoes", " are", " sweetest."]))
    with _post(api, alice, chat, old["id"], "regenerate") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _events(response)
    assert [kind for kind, _ in events] == ["start", "delta", "delta", "delta", "done"]
    start, done = events[0][1], events[-1][1]
    assert start["user_message"] == q2  # the same question, answered again
    assert done["id"] == start["assistant_message"]["id"] != old["id"]
    assert (done["status"], done["content"]) == ("complete", "Mangoes are sweetest.")
    assert (done["prompt_tokens"], done["completion_tokens"]) == (12, 3)
    # serving was asked exactly what it was asked the first time
    assert serving.requests[-1]["messages"] == asked_before["messages"]
    assert serving.requests[-1]["messages"][1:] == [
        {"role": "user", "content": "Name a fruit"},
        {"role": "assistant", "content": "Apples."},
        {"role": "user", "content": "Which is sweetest?"},
    ]

    shown = _messages(api, alice, chat)
    assert [m["id"] for m in shown] == [q1["id"], a1["id"], q2["id"], done["id"]]
    assert all(m["superseded_at"] is None for m in shown)
    # the next question's history is the one the chat shows
    _turns(api, alice, chat, "And the sourest?")
    assert [m["content"] for m in serving.requests[-1]["messages"][1:]] == [
        "Name a fruit",
        "Apples.",
        "Which is sweetest?",
        "Mangoes are sweetest.",
        "And the sourest?",
    ]

    # hidden from search, the chat's export and its share view
    search = api.http.get("/chats/search", params={"q": "pears"}, headers=alice.headers)
    assert search.json() == []
    assert api.http.get("/chats/search", params={"q": "mangoes"}, headers=alice.headers).json()
    document = api.http.get(
        f"/chats/{chat['id']}/export", params={"format": "json"}, headers=alice.headers
    ).json()
    assert old["id"] not in [m["id"] for m in document["messages"]]
    markdown = api.http.get(f"/chats/{chat['id']}/export", headers=alice.headers).text
    assert "Pears" not in markdown and "Mangoes are sweetest." in markdown
    share = api.http.post(f"/chats/{chat['id']}/shares", headers=alice.headers).json()
    shared = api.http.get(f"/shared/{share['token']}").json()
    assert "Pears are sweeter." not in [m["content"] for m in shared["messages"]]

    # kept: the data export marks it, its feedback stays with what the model saw then
    mine = api.http.get("/users/me/export", headers=alice.headers).json()
    exported = {m["id"]: m for m in mine["chats"][0]["messages"]}
    assert exported[old["id"]]["content"] == "Pears are sweeter."
    assert exported[old["id"]]["superseded_at"] is not None
    assert exported[done["id"]]["superseded_at"] is None
    assert [f["message_id"] for f in mine["feedback"]] == [old["id"]]
    lines = api.http.get("/admin/feedback/export", headers=root.headers).text.splitlines()
    records = [json.loads(line) for line in lines]
    (record,) = [r for r in records if r["kind"] == "rating"]
    (regenerated,) = [r for r in records if r["kind"] == "regeneration"]
    assert regenerated["rejected"]["content"] == "Pears are sweeter."  # the replaced answer
    assert regenerated["chosen"]["content"] == "Mangoes are sweetest."
    assert record["completion"] == [{"role": "assistant", "content": "Pears are sweeter."}]
    assert record["prompt"] == asked_before["messages"]


def test_a_failed_answer_can_be_regenerated(api, serving):
    alice = api.user("alice")
    chat = api.chat(alice)
    serving.script(Reply(status=500))
    failed = api.http.post(
        f"/chats/{chat['id']}/messages", json={"content": "Hello?"}, headers=alice.headers
    )
    assert failed.status_code == 502
    with _post(api, alice, chat, failed.json()["message"]["id"], "regenerate") as response:
        done = _events(response)[-1]
    assert done[0] == "done" and done[1]["status"] == "complete"
    assert [(m["role"], m["status"]) for m in _messages(api, alice, chat)] == [
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert serving.requests[-1]["messages"] == [{"role": "user", "content": "Hello?"}]


def test_regenerate_refuses_anything_but_the_last_finished_answer(api, serving):
    alice = api.user("alice")
    chat = api.chat(alice)
    q1, a1, q2, a2 = _turns(api, alice, chat, "one", "two")
    asked = len(serving.requests)
    for message in (a1, q1, q2):
        with _post(api, alice, chat, message["id"], "regenerate") as response:
            response.read()
            assert response.status_code == 409
            assert response.json()["code"] == "not_last_answer"
    with _post(api, alice, chat, a2["id"], "regenerate") as response:
        a2_new = _events(response)[-1][1]
    with _post(api, alice, chat, a2["id"], "regenerate") as response:  # replaced already
        response.read()
        assert response.status_code == 409 and response.json()["code"] == "message_superseded"

    serving.script(Reply(hold_after=1))
    with _post(api, alice, chat, a2_new["id"], "regenerate") as response:
        stream = _iter_events(response)
        streaming = next(stream)[1]["assistant_message"]
        with _post(api, alice, chat, streaming["id"], "regenerate") as busy:
            busy.read()
            assert busy.status_code == 409 and busy.json()["code"] == "chat_busy"
        serving.release()
        assert [kind for kind, _ in stream][-1] == "done"
    assert len(serving.requests) == asked + 2
    assert [m["content"] for m in _messages(api, alice, chat)] == [
        "one",
        "Hello, world!",
        "two",
        "Hello, world!",
    ]


def test_a_regenerated_answer_cut_short_by_the_client_is_saved_partial(api, serving):
    alice = api.user("alice")
    chat = api.chat(alice)
    _, answer = _turns(api, alice, chat, "Tell me a story")
    serving.script(Reply(pieces=["Once", " upon", " a", " time"], hold_after=2))
    with _post(api, alice, chat, answer["id"], "regenerate") as response:
        received = []
        for kind, data in _iter_events(response):
            if kind == "delta":
                received.append(data["content"])
            if len(received) == 2:
                break
    question, again = _settled(api, alice, chat)
    assert (again["status"], again["content"]) == ("partial", "Once upon")
    assert again["id"] != answer["id"]
    serving.release()


def test_edit_supersedes_the_question_and_everything_after_it(api, serving):
    alice = api.user("alice")
    chat = api.chat(alice)
    q1, a1, q2, a2 = _turns(api, alice, chat, "What is 2+2?", "And 3+3?")

    serving.script(Reply(pieces=["7"]))
    with _post(api, alice, chat, q2["id"], "edit", content="And 3+4?") as response:
        assert response.status_code == 200
        events = _events(response)
    start, done = events[0][1], events[-1][1]
    assert start["user_message"]["content"] == "And 3+4?"
    assert start["user_message"]["id"] != q2["id"]
    assert done["content"] == "7"
    assert serving.requests[-1]["messages"] == [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "Hello, world!"},
        {"role": "user", "content": "And 3+4?"},
    ]
    assert [m["content"] for m in _messages(api, alice, chat)] == [
        "What is 2+2?",
        "Hello, world!",
        "And 3+4?",
        "7",
    ]

    serving.script(Reply(pieces=["5"]))
    with _post(api, alice, chat, q1["id"], "edit", content="What is 2+3?") as response:
        _events(response)
    assert serving.requests[-1]["messages"] == [{"role": "user", "content": "What is 2+3?"}]
    shown = _messages(api, alice, chat)
    assert [(m["role"], m["content"]) for m in shown] == [
        ("user", "What is 2+3?"),
        ("assistant", "5"),
    ]
    assert [m["seq"] for m in shown] == [7, 8]  # nothing was renumbered or rewritten
    held = api.http.get("/users/me/export", headers=alice.headers).json()["chats"][0]
    assert len(held["messages"]) == 8
    assert sum(m["superseded_at"] is not None for m in held["messages"]) == 6


def test_edit_validates_like_sending_and_only_takes_a_current_question(api, serving):
    alice = api.user("alice")
    chat = api.chat(alice)
    question, answer = _turns(api, alice, chat, "Hi")
    for content in ("", "x" * 32_001):
        with _post(api, alice, chat, question["id"], "edit", content=content) as response:
            response.read()
            assert response.status_code == 422 and "content" in response.json()["detail"]
    with _post(api, alice, chat, answer["id"], "edit", content="Hey") as response:
        response.read()
        assert response.status_code == 409 and response.json()["code"] == "not_a_question"
    with _post(api, alice, chat, question["id"], "edit", content="Hey") as response:
        _events(response)
    with _post(api, alice, chat, question["id"], "edit", content="Hello") as response:
        response.read()
        assert response.status_code == 409 and response.json()["code"] == "message_superseded"
    assert [m["content"] for m in _messages(api, alice, chat)] == ["Hey", "Hello, world!"]


@pytest.mark.parametrize("action", ["regenerate", "edit"])
def test_another_users_chat_or_message_is_not_found_like_a_missing_one(api, serving, action):
    alice, mallory = api.user("alice"), api.user("mallory")
    chat = api.chat(alice)
    question, answer = _turns(api, alice, chat, "secret")
    target = answer if action == "regenerate" else question
    body = {"content": "mine now"} if action == "edit" else {}
    own = api.chat(mallory)
    _turns(api, mallory, own, "hello")
    asked = len(serving.requests)

    def refused(account, in_chat, message_id) -> dict:
        with _post(api, account, in_chat, message_id, action, **body) as response:
            response.read()
            assert response.status_code == 404
            return response.json()

    missing_chat = refused(mallory, {"id": uuid.uuid4().hex}, target["id"])
    assert refused(mallory, chat, target["id"]) == missing_chat
    missing_message = refused(mallory, own, uuid.uuid4().hex)
    assert refused(mallory, own, target["id"]) == missing_message
    assert missing_message["detail"] == "message not found"
    assert len(serving.requests) == asked
    assert _messages(api, alice, chat) == [question, answer]
