"""Request ids, JSON logs, Prometheus metrics, CORS, and the usage history endpoint."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from orchard.settings import Settings
from platform_api.app import create_app
from platform_api.observability import JsonFormatter, request_id
from tests.platform.conftest import FAST_ARGON2, LiveServer
from tests.platform.test_gateway import HELLO, grant, new_key, wait_for_usage


def test_every_response_carries_a_request_id_and_a_sane_one_is_kept(api):
    generated = api.http.get("/users/me")
    assert generated.status_code == 401
    assert len(generated.headers["X-Request-ID"]) == 32
    kept = api.http.get("/users/me", headers={"X-Request-ID": "trace-42:a.b"})
    assert kept.headers["X-Request-ID"] == "trace-42:a.b"
    injected = api.http.get("/users/me", headers={"X-Request-ID": 'x" {evil}'})
    assert injected.headers["X-Request-ID"] != 'x" {evil}'


def test_metrics_count_requests_by_route_template_and_status(api):
    alice = api.user("alice")
    chat = api.chat(alice)
    api.http.get(f"/chats/{chat['id']}", headers=alice.headers)
    api.http.get("/chats/not-a-chat", headers=alice.headers)
    text = httpx.get(f"{api.root}/metrics").text
    counts = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "orchard_api_requests_total"
    }
    assert counts[("GET", "/api/v1/chats/{chat_id}", "200")] == 1
    assert counts[("GET", "/api/v1/chats/{chat_id}", "404")] == 1
    assert counts[("POST", "/api/v1/auth/login", "200")] == 1
    assert not any(chat["id"] in route for _, route, _ in counts)  # bounded labels
    assert "orchard_api_request_seconds_bucket" in text


def test_log_lines_are_json_with_the_request_id():
    token = request_id.set("req-7")
    try:
        record = logging.LogRecord(
            "platform_api.x", logging.WARNING, "", 0, "hi %s", ("there",), None
        )
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id.reset(token)
    assert line["message"] == "hi there" and line["request_id"] == "req-7"
    assert line["level"] == "warning" and line["time"].endswith("Z")


def test_cors_allows_only_the_configured_origins(clean_env, tmp_path, serving):
    settings = Settings(
        home=clean_env,
        database_url=f"sqlite:///{tmp_path / 'p.db'}",
        serving_url=serving.url,
        cors_origins=("https://chat.example.org",),
    )
    server = LiveServer(create_app(settings, FAST_ARGON2))
    server.start()
    try:
        preflight = {"Access-Control-Request-Method": "POST"}
        allowed = httpx.options(
            f"{server.url}/api/v1/chats",
            headers={"Origin": "https://chat.example.org", **preflight},
        )
        assert allowed.headers["access-control-allow-origin"] == "https://chat.example.org"
        other = httpx.options(
            f"{server.url}/api/v1/chats", headers={"Origin": "https://evil.example", **preflight}
        )
        assert "access-control-allow-origin" not in other.headers
    finally:
        server.stop()


def test_usage_history_per_model_and_per_day(api, serving):
    alice = api.user("alice")
    grant(api, alice, 1000)
    client = openai.OpenAI(base_url=f"{api.root}/v1", api_key=new_key(api, alice), max_retries=0)
    for model in ("champion", "champion", "challenger"):
        client.chat.completions.create(model=model, messages=HELLO, max_tokens=8)
    wait_for_usage(api, alice, 3)
    by_model = api.http.get("/usage", params={"by": "model"}, headers=alice.headers).json()
    rows = {r["key"]: (r["requests"], r["prompt_tokens"], r["completion_tokens"], r["credits"])
            for r in by_model["rows"]}  # fmt: skip
    assert rows == {"challenger": (1, 12, 4, 16), "champion": (2, 24, 8, 32)}
    by_day = api.http.get("/usage", headers=alice.headers).json()
    assert [r["key"] for r in by_day["rows"]] == [datetime.now(UTC).date().isoformat()]
    assert by_day["total"]["credits"] == 48 == by_model["total"]["credits"]
    # Nobody else's usage shows.
    bob = api.user("bob")
    assert api.http.get("/usage", headers=bob.headers).json()["rows"] == []
