"""The business metrics on /metrics: read from the database at scrape time."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from platform_api.db import make_engine
from tests.platform.test_feedback import answered_chat, feedback_url


def samples(api) -> dict[tuple[str, tuple], float]:
    body = httpx.get(f"{api.root}/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name.startswith("orchard_platform_")
    }


def test_users_tokens_credits_and_feedback_come_from_the_database(api, serving):
    alice = api.user("alice")
    before = samples(api)
    assert before[("orchard_platform_active_users", (("window", "1h"),))] == 0
    chat, answer = answered_chat(api, alice, "Hi there")
    rated = api.http.put(feedback_url(chat, answer), json={"rating": "down"}, headers=alice.headers)
    assert rated.status_code == 200, rated.text

    after = samples(api)
    assert after[("orchard_platform_active_users", (("window", "1h"),))] == 1
    assert after[("orchard_platform_users", (("status", "active"),))] >= 1
    assert (
        after[
            ("orchard_platform_model_requests_total", (("source", "chat"), ("status", "complete")))
        ]
        == 1
    )
    completion = ("orchard_platform_tokens_total", (("kind", "completion"), ("source", "chat")))
    assert after[completion] == answer["completion_tokens"] > 0
    assert after[("orchard_platform_feedback", (("rating", "down"),))] == 1
    assert after[("orchard_platform_feedback", (("rating", "up"),))] == 0
    moved = {
        kind: after.get(("orchard_platform_credits_total", (("kind", kind),)), 0)
        for kind in ("grant", "debit", "refund")
    }
    # A turn reserves its most expensive answer and refunds what it did not use.
    assert moved["debit"] - moved["refund"] == answer["credits"] > 0
    balance = api.http.get("/credits", headers=alice.headers).json()["balance"]
    assert after[("orchard_platform_credit_balance", ())] == balance
    assert after[("orchard_platform_credit_ledger_mismatches", ())] == 0


def test_a_balance_written_around_the_ledger_is_counted_as_a_mismatch(api):
    alice = api.user("alice")
    api.chat(alice)  # funds the account: a ledger grant and its balance
    assert samples(api)[("orchard_platform_credit_ledger_mismatches", ())] == 0
    engine = make_engine(api.database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE credit_accounts SET balance = balance + 5 WHERE user_id = :id"),
                {"id": alice.id},
            )
    finally:
        engine.dispose()
    assert samples(api)[("orchard_platform_credit_ledger_mismatches", ())] == 1
