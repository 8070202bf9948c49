"""Thumbs up/down with a comment on answers, and their export as preference data (TRL's
unpaired prompt/completion/label format) for post-training."""

from __future__ import annotations

import json

from testkit.serving_stub import Reply
from tests.platform.conftest import Account, Api
from tests.platform.test_messages import _events, _messages, _send


def answered_chat(api: Api, account: Account, question: str, **settings) -> tuple[dict, dict]:
    chat = api.chat(account, **settings)
    with _send(api, account, chat, question) as response:
        assert [kind for kind, _ in _events(response)][-1] == "done"
    return chat, _messages(api, account, chat)[-1]


def feedback_url(chat: dict, message: dict) -> str:
    return f"/chats/{chat['id']}/messages/{message['id']}/feedback"


def test_an_answer_takes_one_rating_that_can_change_and_be_removed(api, serving):
    alice = api.user("alice")
    chat, answer = answered_chat(api, alice, "Hi there")
    url = feedback_url(chat, answer)
    first = api.http.put(
        url, json={"rating": "down", "comment": "  too vague "}, headers=alice.headers
    )
    assert first.status_code == 200, first.text
    assert (first.json()["rating"], first.json()["comment"]) == ("down", "too vague")
    again = api.http.put(url, json={"rating": "up"}, headers=alice.headers)
    assert (again.json()["rating"], again.json()["comment"]) == ("up", "")
    assert again.json()["created_at"] == first.json()["created_at"]
    assert api.http.delete(url, headers=alice.headers).status_code == 204
    assert api.http.delete(url, headers=alice.headers).status_code == 404


def test_listing_the_messages_shows_the_callers_rating_on_each_answer(api, serving):
    alice = api.user("alice")
    chat, first = answered_chat(api, alice, "Hi there")
    with _send(api, alice, chat, "And again?") as response:
        _events(response)
    second = _messages(api, alice, chat)[-1]
    api.http.put(
        feedback_url(chat, first),
        json={"rating": "down", "comment": "vague"},
        headers=alice.headers,
    )
    listed = _messages(api, alice, chat)
    assert [m["role"] for m in listed] == ["user", "assistant", "user", "assistant"]
    assert [m["feedback"] for m in listed] == [
        None,
        {"rating": "down", "comment": "vague"},
        None,
        None,
    ]
    api.http.put(feedback_url(chat, second), json={"rating": "up"}, headers=alice.headers)
    api.http.put(feedback_url(chat, first), json={"rating": "up"}, headers=alice.headers)
    assert [m["feedback"] for m in _messages(api, alice, chat)][1::2] == [
        {"rating": "up", "comment": ""},
        {"rating": "up", "comment": ""},
    ]
    api.http.delete(feedback_url(chat, second), headers=alice.headers)
    assert _messages(api, alice, chat)[3]["feedback"] is None


def test_feedback_is_refused_on_questions_on_others_chats_and_with_bad_values(api, serving):
    alice, mallory = api.user("alice"), api.user("mallory")
    chat, answer = answered_chat(api, alice, "Hi there")
    question = _messages(api, alice, chat)[0]
    bad = api.http.put(feedback_url(chat, question), json={"rating": "up"}, headers=alice.headers)
    assert (bad.status_code, bad.json()["code"]) == (400, "not_an_answer")
    theirs = api.http.put(
        feedback_url(chat, answer), json={"rating": "down"}, headers=mallory.headers
    )
    assert theirs.status_code == 404  # exactly like a chat that does not exist
    for body in (
        {"rating": "meh"},
        {"rating": "up", "comment": "x" * 2001},
        {"rating": "up", "user_id": "x"},
    ):
        assert (
            api.http.put(feedback_url(chat, answer), json=body, headers=alice.headers).status_code
            == 422
        )


def test_admins_export_rated_answers_as_preference_data(api, serving):
    alice = api.user("alice")
    serving.script(Reply(pieces=["Paris", "."]), Reply(pieces=["I", " forget"]))
    chat, good = answered_chat(api, alice, "Capital of France?", system_prompt="Be brief.")
    with _send(api, alice, chat, "And of Peru?") as response:
        _events(response)
    bad = _messages(api, alice, chat)[-1]
    api.http.put(feedback_url(chat, good), json={"rating": "up"}, headers=alice.headers)
    api.http.put(
        feedback_url(chat, bad), json={"rating": "down", "comment": "wrong"}, headers=alice.headers
    )
    assert api.http.get("/admin/feedback/export", headers=alice.headers).status_code == 403

    root = api.admin()
    response = api.http.get("/admin/feedback/export", headers=root.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in response.text.splitlines()]
    assert [(r["label"], r["completion"][0]["content"]) for r in records] == [
        (True, "Paris."),
        (False, "I forget"),
    ]
    # The prompt is what the model saw: the system prompt and the conversation before.
    assert records[1]["prompt"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Peru?"},
    ]
    assert records[1]["comment"] == "wrong" and records[1]["model_version"] == "orchard-chat/3"
    only_down = api.http.get(
        "/admin/feedback/export", params={"rating": "down"}, headers=root.headers
    )
    assert len(only_down.text.splitlines()) == 1


def test_deleting_a_chat_deletes_its_feedback(api, serving):
    alice = api.user("alice")
    chat, answer = answered_chat(api, alice, "Hi there")
    api.http.put(feedback_url(chat, answer), json={"rating": "up"}, headers=alice.headers)
    assert api.http.delete(f"/chats/{chat['id']}", headers=alice.headers).status_code == 204
    root = api.admin()
    assert api.http.get("/admin/feedback/export", headers=root.headers).text == ""


def _stream(api: Api, account: Account, path: str, body: dict | None = None) -> None:
    with api.http.stream("POST", path, json=body, headers=account.headers) as response:
        assert response.status_code == 200, response.read()
        assert [kind for kind, _ in _events(response)][-1] == "done"


def test_the_export_has_regenerations_and_edits_with_version_variant_and_pseudonym(api, serving):
    alice = api.user("alice")
    serving.script(
        Reply(pieces=["A long ", "rambling answer."]),
        Reply(pieces=["Short."]),
        Reply(pieces=["Old answer."]),
        Reply(pieces=["A follow-up answer."]),
        Reply(pieces=["New answer."]),
    )
    chat, long = answered_chat(api, alice, "Explain sort_keys")
    _stream(api, alice, f"/chats/{chat['id']}/messages/{long['id']}/regenerate")
    short = _messages(api, alice, chat)[-1]
    api.http.put(feedback_url(chat, short), json={"rating": "up"}, headers=alice.headers)
    other, _ = answered_chat(api, alice, "What is indnet?")
    with _send(api, alice, other, "And a follow-up?") as response:
        _events(response)
    question = _messages(api, alice, other)[0]  # edited: the follow-up goes too
    _stream(
        api,
        alice,
        f"/chats/{other['id']}/messages/{question['id']}/edit",
        {"content": "What is indent?"},
    )

    root = api.admin()
    response = api.http.get("/admin/feedback/export", headers=root.headers)
    assert response.headers["x-orchard-opted-out"] == "0"
    records = [json.loads(line) for line in response.text.splitlines()]
    assert [r["kind"] for r in records] == ["rating", "regeneration", "edit"]
    rating, regeneration, edit = records
    assert rating["completion"][0]["content"] == "Short." and rating["label"] is True
    assert regeneration["prompt"] == [{"role": "user", "content": "Explain sort_keys"}]
    assert regeneration["rejected"]["content"] == "A long rambling answer."
    assert (regeneration["chosen"]["content"], regeneration["chosen"]["rating"]) == ("Short.", "up")
    assert regeneration["chosen"]["model_version"] == "orchard-chat/3"
    assert edit["prompt"] == [{"role": "user", "content": "What is indnet?"}]
    assert (edit["completion"][0]["content"], edit["label"]) == ("Old answer.", False)
    assert edit["edited_question"] == "What is indent?"
    # One pseudonym per person, never the account id or e-mail.
    assert {r["user"] for r in records} == {rating["user"]}
    assert alice.id not in response.text and alice.email not in response.text
    assert all("variant" in r for r in records)


def test_an_opted_out_user_is_absent_from_the_export(api, serving):
    alice, bob = api.user("alice"), api.user("bob")
    assert api.http.get("/users/me", headers=alice.headers).json()["feedback_for_training"]
    for account in (alice, bob):
        chat, answer = answered_chat(api, account, f"Hi, I am {account.email}")
        api.http.put(feedback_url(chat, answer), json={"rating": "up"}, headers=account.headers)
    off = api.http.put(
        "/users/me/feedback-consent", json={"feedback_for_training": False}, headers=bob.headers
    )
    assert off.status_code == 200 and off.json()["feedback_for_training"] is False
    root = api.admin()
    response = api.http.get("/admin/feedback/export", headers=root.headers)
    assert response.headers["x-orchard-opted-out"] == "1"
    assert [r["prompt"][-1]["content"] for r in map(json.loads, response.text.splitlines())] == [
        f"Hi, I am {alice.email}"
    ]
    api.http.put(
        "/users/me/feedback-consent", json={"feedback_for_training": True}, headers=bob.headers
    )
    again = api.http.get("/admin/feedback/export", headers=root.headers)
    assert len(again.text.splitlines()) == 2


def test_the_export_takes_an_admins_key_with_the_feedback_export_scope(api, serving):
    alice, root = api.user("alice"), api.admin()
    chat, answer = answered_chat(api, alice, "Hi there")
    api.http.put(feedback_url(chat, answer), json={"rating": "up"}, headers=alice.headers)
    refused = api.http.post(
        "/api-keys", json={"name": "dag", "scopes": ["feedback:export"]}, headers=alice.headers
    )
    assert (refused.status_code, refused.json()["code"]) == (403, "admin_scope")
    key = api.http.post(
        "/api-keys", json={"name": "dag", "scopes": ["feedback:export"]}, headers=root.headers
    ).json()["key"]
    bearer = {"Authorization": f"Bearer {key}"}
    exported = api.http.get("/admin/feedback/export", headers=bearer)
    assert exported.status_code == 200 and len(exported.text.splitlines()) == 1
    # The key does nothing else an administrator could.
    assert api.http.get("/admin/users", headers=bearer).status_code == 403
    reader = api.http.post(
        "/api-keys", json={"name": "r", "scopes": ["chats:read"]}, headers=root.headers
    ).json()["key"]
    no_scope = api.http.get("/admin/feedback/export", headers={"Authorization": f"Bearer {reader}"})
    assert (no_scope.status_code, no_scope.json()["code"]) == (403, "insufficient_scope")
