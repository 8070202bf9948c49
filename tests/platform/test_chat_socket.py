"""The chat over a WebSocket (`/api/v1/chats/{id}/ws`): the same turns as over SSE, the
credential in the first frame, and every action checked like an HTTP request (bans,
ownership, rate limits)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from orchard.settings import Settings
from platform_api.app import create_app
from platform_api.routes import chat_socket
from testkit.serving_stub import Reply
from tests.platform.conftest import FAST_ARGON2, Api, LiveServer
from tests.platform.test_messages import _messages, _settled

TIMEOUT_S = 30


class Socket:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    def send(self, **frame) -> None:
        self.connection.send(json.dumps(frame))

    def recv(self) -> dict:
        return json.loads(self.connection.recv(timeout=TIMEOUT_S))

    def auth(self, token: str) -> dict:
        self.send(type="auth", token=token)
        return self.recv()

    def turn(self) -> list[dict]:
        """The frames of one answer, `start` to `done` or `failed`."""
        frames = [self.recv()]
        while frames[-1]["type"] not in ("done", "failed", "error"):
            frames.append(self.recv())
        return frames

    def closed(self) -> tuple[int, str]:
        """Waits for the server to close; the close code and reason."""
        with pytest.raises(ConnectionClosed) as closed:
            self.recv()
        return closed.value.rcvd.code, closed.value.rcvd.reason


@contextmanager
def socket(api: Api, chat: dict | str, token: str | None = None) -> Iterator[Socket]:
    chat_id = chat if isinstance(chat, str) else chat["id"]
    url = api.root.replace("http://", "ws://") + f"/api/v1/chats/{chat_id}/ws"
    with connect(url, open_timeout=TIMEOUT_S, close_timeout=5) as connection:
        ws = Socket(connection)
        if token is not None:
            assert ws.auth(token) == {"type": "ready", "chat_id": chat_id}
        yield ws


def test_send_streams_deltas_and_done_and_saves_the_answer(api, serving):
    alice = api.user("alice")
    chat = api.chat(alice, system_prompt="Be brief.")
    with socket(api, chat, alice.tokens["access_token"]) as ws:
        ws.send(type="send", content="Hi there")
        frames = ws.turn()
        ws.send(type="send", content="Again")
        second = ws.turn()
    assert [f["type"] for f in frames] == ["start", "delta", "delta", "delta", "delta", "done"]
    start, done = frames[0], frames[-1]
    assert start["user_message"]["content"] == "Hi there"
    assert start["assistant_message"]["status"] == "streaming"
    assert "".join(f["content"] for f in frames if f["type"] == "delta") == "Hello, world!"
    assert done["id"] == start["assistant_message"]["id"]
    assert (done["status"], done["content"], done["model_version"]) == (
        "complete",
        "Hello, world!",
        "orchard-chat/3",
    )
    saved = _messages(api, alice, chat)
    assert {k: v for k, v in done.items() if k != "type"} == saved[1]
    assert second[-1] == {"type": "done", **saved[3]}
    assert serving.requests[-1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello, world!"},
        {"role": "user", "content": "Again"},
    ]


def test_a_client_that_disconnects_mid_answer_leaves_it_saved_partial(api, serving):
    alice = api.user("alice")
    chat = api.chat(alice)
    serving.script(Reply(pieces=["Once", " upon", " a", " time"], hold_after=2))
    with socket(api, chat, alice.tokens["access_token"]) as ws:
        ws.send(type="send", content="Tell me a story")
        assert [ws.recv()["type"] for _ in range(3)] == ["start", "delta", "delta"]
    question, answer = _settled(api, alice, chat)
    assert question["content"] == "Tell me a story"
    assert (answer["status"], answer["content"]) == ("partial", "Once upon")
    assert "client disconnected" in answer["error"]
    serving.finished.clear()
    serving.release()
    assert serving.finished.wait(30)
    assert serving.hangups == 1  # the platform stopped reading serving too


def test_stop_regenerate_and_edit_over_the_socket(api, serving):
    alice = api.user("alice")
    chat = api.chat(alice)
    serving.script(Reply(pieces=["Counting:", " one", " two"], hold_after=1))
    with socket(api, chat, alice.tokens["access_token"]) as ws:
        ws.send(type="send", content="Count")
        assert [ws.recv()["type"] for _ in range(2)] == ["start", "delta"]
        ws.send(type="send", content="Too soon")  # one answer per chat at a time
        busy = ws.recv()
        assert (busy["type"], busy["status"], busy["code"]) == ("error", 409, "chat_busy")
        ws.send(type="stop")
        stopped = ws.recv()
        assert (stopped["type"], stopped["status"], stopped["content"]) == (
            "done",
            "partial",
            "Counting:",
        )
        serving.release()
        ws.send(type="stop")
        assert ws.recv()["code"] == "not_streaming"

        ws.send(type="regenerate", message_id=stopped["id"])
        regenerated = ws.turn()
        assert regenerated[0]["user_message"]["content"] == "Count"
        assert regenerated[-1]["content"] == "Hello, world!"
        assert serving.requests[-1]["messages"] == serving.requests[-2]["messages"]

        question = regenerated[0]["user_message"]
        ws.send(type="edit", message_id=question["id"], content="Count to two")
        edited = ws.turn()
        assert edited[-1]["type"] == "done"
    assert serving.requests[-1]["messages"] == [{"role": "user", "content": "Count to two"}]
    assert [m["content"] for m in _messages(api, alice, chat)] == ["Count to two", "Hello, world!"]


def test_bad_frames_and_failures_are_answered_and_the_socket_stays_open(api, serving):
    alice = api.user("alice")
    chat = api.chat(alice)
    with socket(api, chat, alice.tokens["access_token"]) as ws:
        for frame in ("not json", json.dumps([1]), json.dumps({"type": "dance"})):
            ws.connection.send(frame)
            error = ws.recv()
            assert (error["type"], error["code"]) == ("error", "invalid_request")
        ws.send(type="send", content="")
        error = ws.recv()
        assert error["status"] == 422 and error["errors"][0]["field"] == "content"
        ws.send(type="send", content="hi", role="admin")
        assert "unknown field 'role'" in ws.recv()["detail"]
        ws.send(type="regenerate", message_id="0" * 32)
        assert ws.recv()["code"] == "not_found"
        ws.send(type="send", content="still here?")
        assert ws.turn()[-1]["type"] == "done"
        serving.script(Reply(status=500))  # serving refuses: start, then failed (no 502)
        ws.send(type="send", content="and now?")
        start, failed = ws.turn()
        assert (start["type"], failed["type"], failed["status"]) == ("start", "failed", "failed")
        assert "answered 500" in failed["error"]
        assert failed["id"] == start["assistant_message"]["id"]


@pytest.mark.parametrize(
    "first, code",
    [
        ({"type": "send", "content": "no credential"}, "not_authenticated"),
        ({"type": "auth", "token": "not-a-token"}, "invalid_token"),
        ({"type": "auth", "token": "orch_not-a-key"}, "invalid_api_key"),
    ],
)
def test_a_missing_or_bad_credential_closes_with_a_clear_error(api, serving, first, code):
    alice = api.user("alice")
    chat = api.chat(alice)
    with socket(api, chat) as ws:
        ws.send(**first)
        error = ws.recv()
        assert (error["type"], error["status"], error["code"]) == ("error", 401, code)
        assert ws.closed() == (4401, code)
    assert _messages(api, alice, chat) == [] and serving.requests == []


def test_a_socket_that_never_authenticates_is_closed(api, monkeypatch):
    alice = api.user("alice")
    chat = api.chat(alice)
    monkeypatch.setattr(chat_socket, "AUTH_TIMEOUT_S", 0.2)
    with socket(api, chat) as ws:
        assert ws.recv()["code"] == "not_authenticated"
        assert ws.closed() == (4401, "not_authenticated")


def test_an_api_key_works_and_another_users_chat_is_not_found(api, serving):
    alice, mallory = api.user("alice"), api.user("mallory")
    chat = api.chat(alice)
    body = {"name": "bot", "scopes": ["chats:write"]}
    key = api.http.post("/api-keys", json=body, headers=alice.headers).json()["key"]
    with socket(api, chat, key) as ws:
        ws.send(type="send", content="via a key")
        assert ws.turn()[-1]["status"] == "complete"
    for chat_id in (chat["id"], "0" * 32):
        with socket(api, chat_id) as ws:
            error = ws.auth(mallory.tokens["access_token"])
            assert (error["code"], error["detail"]) == ("not_found", "chat not found")
            assert ws.closed() == (4404, "not_found")


@pytest.mark.parametrize("when", ["before", "while connected"])
def test_a_banned_user_is_refused(api, serving, when):
    root, alice = api.admin(), api.user("alice")
    chat = api.chat(alice)

    def ban() -> None:
        response = api.http.patch(
            f"/admin/users/{alice.id}", json={"status": "banned"}, headers=root.headers
        )
        assert response.status_code == 200

    if when == "before":
        ban()
        with socket(api, chat) as ws:
            error = ws.auth(alice.tokens["access_token"])
            assert (error["status"], error["code"]) == (403, "account_banned")
            assert ws.closed() == (4403, "account_banned")
    else:
        with socket(api, chat, alice.tokens["access_token"]) as ws:
            ban()
            ws.send(type="send", content="still me")
            assert ws.recv()["code"] == "account_banned"
            assert ws.closed() == (4403, "account_banned")
    assert serving.requests == []


def test_each_action_counts_against_the_users_rate_limit(clean_env, tmp_path, serving):
    settings = Settings(
        home=clean_env,
        database_url=f"sqlite:///{tmp_path / 'platform.db'}",
        serving_url=serving.url,
        rate_limit_user="4/minute",
    )
    server = LiveServer(create_app(settings, FAST_ARGON2))
    server.start()
    try:
        with httpx.Client(base_url=f"{server.url}/api/v1", timeout=60) as http:
            api = Api(http=http, root=server.url, settings=settings, database_url="")
            alice = api.user("alice")
            chat = api.chat(alice)  # 1 (login is not counted against the user)
            with socket(api, chat, alice.tokens["access_token"]) as ws:  # 2: the auth frame
                ws.send(type="send", content="one")  # 3
                assert ws.turn()[-1]["type"] == "done"
                ws.send(type="send", content="two")  # 4
                assert ws.turn()[-1]["type"] == "done"
                ws.send(type="send", content="three")
                limited = ws.recv()
                assert (limited["status"], limited["code"]) == (429, "rate_limited")
                assert limited["retry_after"] >= 1
                ws.send(type="stop")  # still open, still limited
                assert ws.recv()["code"] == "rate_limited"
            over_http = http.get("/chats", headers=alice.headers)
            assert over_http.status_code == 429  # one budget for HTTP and the socket
        assert len(serving.requests) == 2
    finally:
        server.stop()
