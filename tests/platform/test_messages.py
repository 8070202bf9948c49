"""Sending a message streams the answer from serving over SSE; every outcome (finished,
client gone, stopped, serving crashed or down) leaves the answer saved and marked."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session

from platform_api.db import make_engine
from platform_api.metering import prompt_token_bound
from platform_api.models import Message
from platform_api.turns import ABANDONED_AFTER
from testkit.serving_stub import Reply


def _events(response) -> list[tuple[str, dict]]:
    return list(_iter_events(response))


def _iter_events(response):
    event = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            yield event, json.loads(line[len("data: ") :])


def _send(api, account, chat, content="Hi there"):
    return api.http.stream(
        "POST", f"/chats/{chat['id']}/messages", json={"content": content}, headers=account.headers
    )


def _messages(api, account, chat) -> list[dict]:
    response = api.http.get(f"/chats/{chat['id']}/messages", headers=account.headers)
    assert response.status_code == 200
    return response.json()


def _settled(api, account, chat) -> list[dict]:
    """The chat's messages once no answer is streaming any more (bounded wait)."""
    deadline = time.monotonic() + 30
    while True:
        messages = _messages(api, account, chat)
        if all(m["status"] != "streaming" for m in messages) or time.monotonic() > deadline:
            return messages
        time.sleep(0.05)


def test_an_answer_streams_and_is_saved_with_its_model_version_and_tokens(api, serving):
    alice = api.user("alice")
    chat = api.chat(alice, system_prompt="You are terse.", tone="friendly", temperature=0.2)
    with _send(api, alice, chat, "Hi there") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _events(response)

    kinds = [kind for kind, _ in events]
    assert kinds == ["start", "delta", "delta", "delta", "delta", "done"]
    start = events[0][1]
    assert start["user_message"]["content"] == "Hi there"
    assert start["assistant_message"]["status"] == "streaming"
    assert "".join(data["content"] for kind, data in events if kind == "delta") == "Hello, world!"
    done = events[-1][1]
    assert done["id"] == start["assistant_message"]["id"]
    assert done["status"] == "complete" and done["content"] == "Hello, world!"
    assert done["model_version"] == "orchard-chat/3"
    assert (done["prompt_tokens"], done["completion_tokens"]) == (12, 4)
    assert done["latency_ms"] >= 0

    saved = _messages(api, alice, chat)
    assert [(m["role"], m["content"], m["status"]) for m in saved] == [
        ("user", "Hi there", "complete"),
        ("assistant", "Hello, world!", "complete"),
    ]
    sent = serving.requests[-1]
    assert sent["model"] == chat["model_alias"] and sent["stream"] is True
    assert (sent["temperature"], sent["max_tokens"]) == (0.2, chat["max_tokens"])
    assert sent["messages"][0]["role"] == "system"
    assert "You are terse." in sent["messages"][0]["content"]
    assert "friendly" in sent["messages"][0]["content"]
    assert sent["messages"][1:] == [{"role": "user", "content": "Hi there"}]


def test_a_model_with_a_short_context_answers_in_the_room_left_instead_of_failing(api, serving):
    """The chat asks up to 512 tokens; serving's models list says the model takes 256 in
    all, so the answer gets what the context leaves after the prompt's upper bound."""
    for model in serving.models:
        model["max_model_len"] = 256
    alice = api.user("alice")
    chat = api.chat(alice, max_tokens=512)
    with _send(api, alice, chat, "Hi there") as response:
        assert _events(response)[-1][1]["status"] == "complete"
    sent = serving.requests[-1]
    bound = prompt_token_bound([m["content"] for m in sent["messages"]])
    assert sent["max_tokens"] == 256 - bound and 0 < sent["max_tokens"] < 256

    roomy = api.chat(alice, max_tokens=64)  # fits: sent as the chat says
    with _send(api, alice, roomy, "Hi there") as response:
        _events(response)
    assert serving.requests[-1]["max_tokens"] == 64


def test_the_next_message_carries_the_conversation(api, serving):
    alice = api.user("alice")
    chat = api.chat(alice)
    for content in ("first question", "second question"):
        with _send(api, alice, chat, content) as response:
            _events(response)
    assert serving.requests[-1]["messages"] == [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "Hello, world!"},
        {"role": "user", "content": "second question"},
    ]
    assert [m["seq"] for m in _messages(api, alice, chat)] == [1, 2, 3, 4]


def test_a_client_that_disconnects_mid_stream_leaves_the_partial_answer_saved(api, serving):
    alice = api.user("alice")
    chat = api.chat(alice)
    serving.script(Reply(pieces=["Once", " upon", " a", " time"], hold_after=2))
    with _send(api, alice, chat, "Tell me a story") as response:
        received = []
        for kind, data in _iter_events(response):
            if kind == "delta":
                received.append(data["content"])
            if len(received) == 2:
                break  # the client goes away while serving is still generating
    assert received == ["Once", " upon"]

    user_message, answer = _settled(api, alice, chat)
    assert user_message["content"] == "Tell me a story"
    assert answer["status"] == "partial"
    assert answer["content"] == "Once upon"
    assert "client disconnected" in answer["error"]
    assert answer["model_version"] == "orchard-chat/3"
    # the platform closed its stream from serving too: the rest had no reader
    serving.finished.clear()
    serving.release()
    assert serving.finished.wait(30)
    assert serving.hangups == 1


@pytest.mark.parametrize(
    "failure, reason",
    [("crash_after", "broke off"), ("error_after", "serving reported an error")],
)
def test_a_serving_failure_mid_stream_leaves_the_answer_failed_with_what_was_received(
    api, serving, failure, reason
):
    alice = api.user("alice")
    chat = api.chat(alice)
    serving.script(Reply(pieces=["The", " answer", " is", " 42"], **{failure: 3}))
    with _send(api, alice, chat) as response:
        events = _events(response)
    assert [kind for kind, _ in events] == ["start", "delta", "delta", "delta", "failed"]
    failed = events[-1][1]
    assert failed["status"] == "failed" and failed["content"] == "The answer is"
    assert reason in failed["error"]
    answer = _messages(api, alice, chat)[-1]
    assert (answer["status"], answer["content"]) == ("failed", "The answer is")


@pytest.mark.parametrize("down", ["error_status", "unreachable"])
def test_serving_failing_before_any_answer_is_a_502_with_the_failed_message_saved(
    api, serving, down
):
    alice = api.user("alice")
    chat = api.chat(alice)
    if down == "error_status":
        serving.script(Reply(status=500))
    else:
        serving.stop()
    response = api.http.post(
        f"/chats/{chat['id']}/messages", json={"content": "Anyone?"}, headers=alice.headers
    )
    assert response.status_code == 502
    body = response.json()
    assert body["code"] == "serving_failed"
    assert ("answered 500" if down == "error_status" else "unreachable") in body["detail"]
    saved = _messages(api, alice, chat)
    assert [(m["role"], m["status"]) for m in saved] == [
        ("user", "complete"),
        ("assistant", "failed"),
    ]
    assert saved[1]["id"] == body["message"]["id"]


def test_stop_keeps_what_was_received_and_ends_the_stream(api, serving):
    alice = api.user("alice")
    chat = api.chat(alice)
    serving.script(Reply(pieces=["Counting:", " one", " two"], hold_after=1))
    with _send(api, alice, chat) as response:
        stream = _iter_events(response)
        kind, start = next(stream)
        assert kind == "start"
        assert next(stream) == ("delta", {"content": "Counting:"})
        answer_id = start["assistant_message"]["id"]

        busy = api.http.post(
            f"/chats/{chat['id']}/messages", json={"content": "again"}, headers=alice.headers
        )
        assert busy.status_code == 409 and busy.json()["code"] == "chat_busy"

        stopped = api.http.post(
            f"/chats/{chat['id']}/messages/{answer_id}/stop", headers=alice.headers
        )
        assert stopped.status_code == 200
        assert stopped.json()["status"] == "partial"
        assert stopped.json()["content"] == "Counting:"
        assert "stopped by the user" in stopped.json()["error"]
        assert list(stream) == [("done", stopped.json())]
    serving.release()

    again = api.http.post(f"/chats/{chat['id']}/messages/{answer_id}/stop", headers=alice.headers)
    assert again.status_code == 409 and again.json()["code"] == "not_streaming"


def test_another_user_cannot_stop_or_read_my_messages(api, serving):
    alice, mallory = api.user("alice"), api.user("mallory")
    chat = api.chat(alice)
    with _send(api, alice, chat) as response:
        answer_id = _events(response)[0][1]["assistant_message"]["id"]
    response = api.http.post(
        f"/chats/{chat['id']}/messages/{answer_id}/stop", headers=mallory.headers
    )
    assert response.status_code == 404
    own = api.chat(mallory)
    crossed = api.http.post(
        f"/chats/{own['id']}/messages/{answer_id}/stop", headers=mallory.headers
    )
    assert crossed.status_code == 404 and crossed.json()["detail"] == "message not found"


@pytest.mark.parametrize("content", ["", "x" * 32_001])
def test_empty_or_huge_messages_are_refused(api, content):
    alice = api.user("alice")
    chat = api.chat(alice)
    response = api.http.post(
        f"/chats/{chat['id']}/messages", json={"content": content}, headers=alice.headers
    )
    assert response.status_code == 422 and "content" in response.json()["detail"]
    assert _messages(api, alice, chat) == []


def test_search_and_export_include_the_messages(api, serving):
    alice, mallory = api.user("alice"), api.user("mallory")
    chat = api.chat(alice, title="Gardening")
    serving.script(Reply(pieces=["Prune apple trees in late winter."]))
    with _send(api, alice, chat, "When should I prune?") as response:
        _events(response)
    hits = api.http.get("/chats/search", params={"q": "LATE WINTER"}, headers=alice.headers)
    assert [h["chat"]["id"] for h in hits.json()] == [chat["id"]]
    assert "late winter" in hits.json()[0]["snippet"]
    assert (
        api.http.get("/chats/search", params={"q": "winter"}, headers=mallory.headers).json() == []
    )

    markdown = api.http.get(f"/chats/{chat['id']}/export", headers=alice.headers).text
    assert "## User\n\nWhen should I prune?" in markdown
    assert "## Assistant (orchard-chat/3)\n\nPrune apple trees in late winter." in markdown
    document = api.http.get(
        f"/chats/{chat['id']}/export", params={"format": "json"}, headers=alice.headers
    ).json()
    assert [m["role"] for m in document["messages"]] == ["user", "assistant"]
    assert document["messages"][1]["completion_tokens"] == 1


def test_an_answer_abandoned_by_a_dead_api_process_does_not_block_the_chat(api, serving):
    alice = api.user("alice")
    chat = api.chat(alice)
    # what a process killed mid-stream leaves behind: an answer still marked streaming,
    # last written long ago
    long_ago = datetime.now(UTC) - ABANDONED_AFTER - timedelta(seconds=1)
    engine = make_engine(api.database_url)
    try:
        with Session(engine) as session:
            session.add(Message(chat_id=chat["id"], seq=1, role="user", content="Hello?"))
            session.add(
                Message(
                    chat_id=chat["id"],
                    seq=2,
                    role="assistant",
                    content="Half an ans",
                    status="streaming",
                    updated_at=long_ago,
                )
            )
            session.commit()
    finally:
        engine.dispose()
    with _send(api, alice, chat, "Still there?") as response:
        assert response.status_code == 200
        assert _events(response)[-1][0] == "done"
    abandoned = _messages(api, alice, chat)[1]
    assert (abandoned["status"], abandoned["content"]) == ("failed", "Half an ans")
    assert "API process stopped" in abandoned["error"]


def test_a_recent_streaming_answer_still_blocks_a_second_send(api, serving):
    alice = api.user("alice")
    chat = api.chat(alice)
    serving.script(Reply(hold_after=1))
    with _send(api, alice, chat) as response:
        stream = _iter_events(response)  # kept: dropping it would close the connection
        assert next(stream)[0] == "start"
        busy = api.http.post(
            f"/chats/{chat['id']}/messages", json={"content": "again"}, headers=alice.headers
        )
        assert busy.status_code == 409
        serving.release()
        assert [kind for kind, _ in stream] == ["delta", "delta", "delta", "delta", "done"]
