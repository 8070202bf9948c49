"""Chat turns are metered like the gateway: the most an answer may cost is reserved before
anything is saved (402 when the balance cannot cover it, over SSE and the WebSocket, with
nothing written), and the turn settles to what it used, stored on the answer."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from platform_api.db import make_engine
from platform_api.metering import prompt_token_bound
from platform_api.models import UsageRecord
from testkit.serving_stub import Reply
from tests.platform.conftest import Account, Api, grant_credits
from tests.platform.test_chat_socket import socket
from tests.platform.test_gateway import balance, wait_for_usage
from tests.platform.test_messages import _events, _iter_events, _messages, _send, _settled

PRICE = 0.000002  # the default credit_price_usd


def unfunded_chat(api: Api, account: Account, **fields) -> dict:
    """A chat whose owner got no credits (`Api.chat` grants some)."""
    response = api.http.post("/chats", json=fields, headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()


def estimate(api: Api, account: Account, chat: dict, content: str) -> dict:
    response = api.http.post(
        f"/chats/{chat['id']}/estimate", json={"content": content}, headers=account.headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def ledger(api: Api, account: Account) -> list[dict]:
    return api.http.get("/credits", headers=account.headers).json()["entries"][::-1]


def test_a_completed_turn_debits_exactly_its_usage_and_the_answer_shows_its_cost(api, serving):
    alice = api.user("alice")
    chat = api.chat(alice, max_tokens=100)
    before = balance(api, alice)
    with _send(api, alice, chat, "Hi there") as response:
        events = _events(response)
    kind, done = events[-1]
    # the stub's usage: 12 prompt tokens, one completion token per piece (4)
    assert (kind, done["credits"], done["cost_usd"]) == ("done", 16, pytest.approx(16 * PRICE))
    assert balance(api, alice) == before - 16
    grant, debit, refund = ledger(api, alice)
    bound = prompt_token_bound(["Hi there"]) + 100
    assert (debit["kind"], debit["amount"]) == ("debit", bound)
    assert (refund["kind"], refund["amount"], refund["refund_of"]) == (
        "refund",
        bound - 16,
        debit["id"],
    )
    question, answer = _messages(api, alice, chat)
    assert (question["credits"], answer["credits"]) == (None, 16)
    assert answer["cost_usd"] == pytest.approx(16 * PRICE)
    (record,) = wait_for_usage(api, alice, 1)
    assert (record.source, record.status, record.credits) == ("chat", "complete", 16)
    assert (record.prompt_tokens, record.completion_tokens) == (12, 4)


def test_a_stopped_turn_is_billed_only_for_the_pieces_received(api, serving):
    alice = api.user("alice")
    chat = api.chat(alice)
    before = balance(api, alice)
    serving.script(Reply(pieces=["Counting:", " one", " two", " three"], hold_after=2))
    with _send(api, alice, chat, "Count") as response:
        stream = _iter_events(response)
        kind, start = next(stream)
        assert [next(stream)[0] for _ in range(2)] == ["delta", "delta"]
        stopped = api.http.post(
            f"/chats/{chat['id']}/messages/{start['assistant_message']['id']}/stop",
            headers=alice.headers,
        ).json()
    serving.release()
    assert (stopped["status"], stopped["credits"]) == ("partial", 2)  # no prompt, 2 pieces
    assert stopped["cost_usd"] == pytest.approx(2 * PRICE)
    assert balance(api, alice) == before - 2
    (record,) = wait_for_usage(api, alice, 1)
    assert (record.status, record.prompt_tokens, record.completion_tokens) == ("partial", 0, 2)


def test_a_turn_serving_fails_before_answering_costs_nothing(api, serving):
    alice = api.user("alice")
    chat = api.chat(alice)
    before = balance(api, alice)
    serving.script(Reply(status=500))
    response = api.http.post(
        f"/chats/{chat['id']}/messages", json={"content": "Hi"}, headers=alice.headers
    )
    assert response.status_code == 502
    assert response.json()["message"]["credits"] == 0
    assert balance(api, alice) == before


def test_the_estimate_is_the_bound_a_send_reserves(api, serving):
    alice = api.user("alice")
    chat = unfunded_chat(api, alice, system_prompt="Be brief.", max_tokens=20)
    first = estimate(api, alice, chat, "Hi")
    prompt = prompt_token_bound(["Be brief.", "Hi"])
    assert first == {
        "prompt_tokens_max": prompt,
        "completion_tokens_max": 20,
        "credits_max": prompt + 20,
        "cost_usd_max": pytest.approx((prompt + 20) * PRICE),
        "balance": 0,
    }
    grant_credits(api.database_url, alice.id, first["credits_max"])
    with _send(api, alice, chat, "Hi") as response:
        assert _events(response)[-1][0] == "done"
    debit = ledger(api, alice)[1]
    assert (debit["kind"], debit["amount"]) == ("debit", first["credits_max"])
    # the next message's bound covers the history: the question and its answer
    later = estimate(api, alice, chat, "Hi")
    assert later["prompt_tokens_max"] == prompt_token_bound(
        ["Be brief.", "Hi", "Hello, world!", "Hi"]
    )
    assert later["balance"] == first["credits_max"] - 16
    other = api.user("bob")
    refused = api.http.post(
        f"/chats/{chat['id']}/estimate", json={"content": "Hi"}, headers=other.headers
    )
    assert refused.status_code == 404


def test_too_few_credits_refuse_send_regenerate_and_edit_with_nothing_written(api, serving):
    alice = api.user("alice")
    chat = unfunded_chat(api, alice, max_tokens=20)
    refused = api.http.post(
        f"/chats/{chat['id']}/messages", json={"content": "Hi"}, headers=alice.headers
    )
    assert refused.status_code == 402, refused.text
    body = refused.json()
    bound = prompt_token_bound(["Hi"]) + 20
    assert body["code"] == "insufficient_credits"
    assert f"up to {bound} credits" in body["detail"] and "balance is 0" in body["detail"]
    assert _messages(api, alice, chat) == [] and serving.requests == []

    grant_credits(api.database_url, alice.id, bound)  # exactly one turn's bound
    with _send(api, alice, chat, "Hi") as response:
        assert _events(response)[-1][0] == "done"
    question, answer = _settled(api, alice, chat)
    left = bound - 16
    for path, body in (
        (f"{answer['id']}/regenerate", None),
        (f"{question['id']}/edit", {"content": "Hello"}),
    ):
        refused = api.http.post(
            f"/chats/{chat['id']}/messages/{path}", json=body, headers=alice.headers
        )
        assert refused.status_code == 402, refused.text
        assert f"balance is {left}" in refused.json()["detail"]
    # nothing superseded, nothing added, nothing charged, serving never asked again
    assert [m["id"] for m in _messages(api, alice, chat)] == [question["id"], answer["id"]]
    assert balance(api, alice) == left and len(serving.requests) == 1


def test_too_few_credits_over_the_websocket_is_an_error_frame(api, serving):
    alice = api.user("alice")
    chat = unfunded_chat(api, alice)
    with socket(api, chat, alice.tokens["access_token"]) as ws:
        ws.send(type="send", content="Hi")
        error = ws.recv()
        assert (error["type"], error["status"], error["code"]) == (
            "error",
            402,
            "insufficient_credits",
        )
        grant_credits(api.database_url, alice.id, 10_000)
        ws.send(type="send", content="Hi")  # the same connection goes on once paid for
        assert ws.turn()[-1]["credits"] == 16
    assert [m["content"] for m in _messages(api, alice, chat)] == ["Hi", "Hello, world!"]


def test_the_ledger_balances_after_many_turns(api, serving):
    alice = api.user("alice")
    chat = api.chat(alice)
    for text in ("one", "two", "three"):
        with _send(api, alice, chat, text) as response:
            assert _events(response)[-1][0] == "done"
    engine = make_engine(api.database_url, pooled=False)
    try:
        with Session(engine) as session:
            records = session.exec(select(UsageRecord).where(UsageRecord.user_id == alice.id))
            spent = sum(r.credits for r in records)
    finally:
        engine.dispose()
    assert spent == 3 * 16
    assert balance(api, alice) == 1_000_000 - spent
