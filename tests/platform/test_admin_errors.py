"""Recent errors for administrators: the ERROR log records the API process keeps in a
bounded ring buffer, with request id, method, route and exception type, no traceback."""

from __future__ import annotations

import logging
import uuid

import pytest

from orchard.settings import Settings
from platform_api.observability import RecentErrors, request_id
from tests.conftest import free_port

SERVING_PORT = free_port()  # nothing listens there


@pytest.fixture
def settings(clean_env, database_url: str) -> Settings:
    return Settings(
        home=clean_env, database_url=database_url, serving_url=f"http://127.0.0.1:{SERVING_PORT}"
    )


def test_a_message_that_serving_cannot_answer_shows_with_its_request_id(api):
    root, alice = api.admin(), api.user("alice")
    chat = api.chat(alice)
    rid = f"trace-{uuid.uuid4().hex}"
    sent = api.http.post(
        f"/chats/{chat['id']}/messages",
        json={"content": "hello?"},
        headers={**alice.headers, "X-Request-ID": rid},
    )
    assert sent.status_code == 502 and sent.json()["code"] == "serving_failed"

    errors = api.http.get("/admin/errors", headers=root.headers)
    assert errors.status_code == 200
    (error,) = [e for e in errors.json() if e["request_id"] == rid]
    assert error["method"] == "POST"
    assert error["path"] == "/api/v1/chats/{chat_id}/messages"  # the route, not the ids
    assert error["logger"] == "platform_api.serving"
    assert f"127.0.0.1:{SERVING_PORT}" in error["message"] and "unreachable" in error["message"]
    assert error["time"].endswith("Z") or error["time"].endswith("+00:00")

    assert api.http.get("/admin/errors", headers=alice.headers).status_code == 403
    assert api.http.get("/admin/errors").status_code == 401
    for limit in (0, 201):
        bad = api.http.get("/admin/errors", params={"limit": limit}, headers=root.headers)
        assert bad.status_code == 422


def test_the_buffer_keeps_the_newest_errors_and_only_the_exception_type():
    buffer = RecentErrors(capacity=3)
    logger = logging.getLogger(f"platform_api.test-{uuid.uuid4().hex}")
    logger.addHandler(buffer)
    token = request_id.set("req-9")
    try:
        try:
            raise ConnectionError("postgresql://orchard:hunter2@db/orchard refused")
        except ConnectionError:
            logger.exception("the database went away")
        logger.warning("not an error")
        (record,) = buffer.newest(10)
        assert record.exception == "ConnectionError" and record.message == "the database went away"
        assert record.request_id == "req-9" and record.path is None  # no HTTP request here
        assert "hunter2" not in repr(record)  # neither the exception's text nor a traceback

        for n in range(3):
            logger.error("error %d", n)
    finally:
        request_id.reset(token)
        logger.removeHandler(buffer)
    assert [r.message for r in buffer.newest(10)] == ["error 2", "error 1", "error 0"]
    assert [r.message for r in buffer.newest(2)] == ["error 2", "error 1"]
