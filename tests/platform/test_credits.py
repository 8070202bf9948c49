"""The credits ledger: grants, debits, refunds; append-only; a balance that never goes
negative, even under 50 concurrent debits (on SQLite and on PostgreSQL)."""

from __future__ import annotations

import threading

import pytest
from sqlmodel import Session

from platform_api.credits import CreditLedger, InsufficientCredits, RefundRefused
from platform_api.db import make_engine
from platform_api.models import UsageRecord


@pytest.fixture
def engine(api):
    engine = make_engine(api.database_url, pooled=False)
    yield engine
    engine.dispose()


def _grant(api, admin, account, amount: int):
    response = api.http.post(
        f"/admin/users/{account.id}/credits",
        json={"amount": amount, "reason": "welcome"},
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_a_new_account_has_nothing_and_admins_grant(api):
    root, alice = api.admin(), api.user("alice")
    statement = api.http.get("/credits", headers=alice.headers).json()
    assert (statement["balance"], statement["entries"], statement["plan"]) == (0, [], None)
    entry = _grant(api, root, alice, 250)
    assert (entry["kind"], entry["amount"], entry["balance_after"]) == ("grant", 250, 250)
    assert entry["reason"] == f"welcome (by {root.email})"
    statement = api.http.get("/credits", headers=alice.headers).json()
    assert statement["balance"] == 250 and [e["id"] for e in statement["entries"]] == [entry["id"]]
    price = statement["credit_price_usd"]
    assert price == api.settings.credit_price_usd > 0
    assert statement["balance_usd"] == pytest.approx(250 * price)


def test_only_admins_grant_and_only_positive_amounts(api):
    root, alice = api.admin(), api.user("alice")
    mine = api.http.post(
        f"/admin/users/{alice.id}/credits",
        json={"amount": 10, "reason": "x"},
        headers=alice.headers,
    )
    assert mine.status_code == 403
    for amount in (0, -5, 10**12):
        bad = api.http.post(
            f"/admin/users/{alice.id}/credits",
            json={"amount": amount, "reason": "x"},
            headers=root.headers,
        )
        assert bad.status_code == 422 and "amount" in bad.json()["detail"]
    nobody = api.http.post(
        "/admin/users/nobody/credits", json={"amount": 1, "reason": "x"}, headers=root.headers
    )
    assert nobody.status_code == 404
    assert api.http.get("/credits", headers=alice.headers).json()["balance"] == 0


def test_50_concurrent_debits_against_a_balance_for_10(api, engine):
    root, alice = api.admin(), api.user("alice")
    _grant(api, root, alice, 100)
    start = threading.Barrier(50)
    outcomes: list[str] = []

    def debit() -> None:
        with Session(engine) as session:
            session.connection()  # connected before the race starts
            start.wait()
            try:
                CreditLedger(session).debit(alice.id, 10, "message")
                session.commit()
                outcomes.append("ok")
            except InsufficientCredits:
                session.rollback()
                outcomes.append("refused")

    threads = [threading.Thread(target=debit) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes.count("ok") == 10 and outcomes.count("refused") == 40
    statement = api.http.get("/credits", headers=alice.headers).json()
    assert statement["balance"] == 0
    debits = [e for e in statement["entries"] if e["kind"] == "debit"]
    assert len(debits) == 10
    assert sorted(e["balance_after"] for e in debits) == list(range(0, 100, 10))
    with Session(engine) as session:
        assert CreditLedger(session).audit(alice.id) == (0, 0)


def test_an_uncovered_debit_changes_nothing(api, engine):
    root, alice = api.admin(), api.user("alice")
    _grant(api, root, alice, 5)
    with Session(engine) as session:
        ledger = CreditLedger(session)
        with pytest.raises(InsufficientCredits) as refused:
            ledger.debit(alice.id, 6, "too much")
        session.rollback()
        assert (refused.value.balance, refused.value.amount) == (5, 6)
        assert ledger.balance(alice.id) == 5 and len(ledger.entries(alice.id)) == 1


def test_a_refund_returns_at_most_one_debit_once(api, engine):
    root, alice, bob = api.admin(), api.user("alice"), api.user("bob")
    _grant(api, root, alice, 50)
    with Session(engine) as session:
        ledger = CreditLedger(session)
        debit = ledger.debit(alice.id, 30, "long answer")
        session.commit()
        with pytest.raises(RefundRefused, match="exceeds"):
            ledger.refund(alice.id, debit.id, 31, "too much")
        with pytest.raises(RefundRefused, match="no debit"):
            ledger.refund(bob.id, debit.id, 5, "someone else's")
        refund = ledger.refund(alice.id, debit.id, 12, "answer cut short")
        session.commit()
        assert (refund.kind, refund.balance_after, refund.refund_of) == ("refund", 32, debit.id)
        with pytest.raises(RefundRefused, match="already refunded"):
            ledger.refund(alice.id, debit.id, 1, "again")
        assert ledger.audit(alice.id) == (32, 32)


def test_usage_prices_its_credits_in_dollars(api, engine):
    alice = api.user("alice")
    with Session(engine) as session:
        for model, credits in (("champion", 300), ("champion", 200), ("challenger", 50)):
            session.add(
                UsageRecord(
                    user_id=alice.id,
                    source="gateway",
                    model=model,
                    status="complete",
                    completion_tokens=credits,
                    credits=credits,
                )
            )
        session.commit()
    usage = api.http.get("/usage", params={"by": "model"}, headers=alice.headers).json()
    price = usage["credit_price_usd"]
    assert price == api.settings.credit_price_usd > 0
    assert {r["key"]: (r["credits"], r["cost_usd"]) for r in usage["rows"]} == {
        "challenger": (50, pytest.approx(50 * price)),
        "champion": (500, pytest.approx(500 * price)),
    }
    assert usage["total"]["cost_usd"] == pytest.approx(550 * price)
