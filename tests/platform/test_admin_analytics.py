"""Usage analytics for administrators: every user's usage records per UTC day, user and
model, active users per day, popular models, the estimated cost; admins only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session

from platform_api.db import make_engine
from platform_api.models import UsageRecord

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
TODAY = NOW.date().isoformat()
YESTERDAY = (NOW - timedelta(days=1)).date().isoformat()


def record(user_id: str, model: str, prompt: int, completion: int, days_ago: int = 0):
    return UsageRecord(
        user_id=user_id,
        source="gateway",
        model=model,
        model_version=f"orchard-chat/{len(model)}",
        status="complete",
        prompt_tokens=prompt,
        completion_tokens=completion,
        credits=prompt + completion,
        created_at=NOW - timedelta(days=days_ago),
    )


@pytest.fixture
def usage(api):
    """alice: two requests today, one yesterday; bob: one today; carol: one long ago."""
    root, alice, bob, carol = api.admin(), api.user("alice"), api.user("bob"), api.user("carol")
    engine = make_engine(api.database_url, pooled=False)
    with Session(engine) as session:
        session.add_all(
            [
                record(alice.id, "champion", 10, 5),
                record(alice.id, "champion", 20, 10),
                record(alice.id, "challenger", 1, 2, days_ago=1),
                record(bob.id, "champion", 100, 50),
                record(carol.id, "orchard-chat/2", 7, 7, days_ago=40),
            ]
        )
        session.commit()
    engine.dispose()
    return root, alice, bob, carol


def analytics(api, account, **params):
    response = api.http.get("/admin/analytics", params=params, headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


def counts(row: dict) -> tuple:
    keys = ("requests", "prompt_tokens", "completion_tokens", "credits", "users")
    return tuple(row[k] for k in keys)


def test_per_day_with_active_users_popular_models_and_cost(api, usage):
    root, *_ = usage
    result = analytics(api, root)
    assert (result["by"], result["days"]) == ("day", 30)
    assert result["since"] == (NOW - timedelta(days=29)).date().isoformat()
    assert {r["key"]: counts(r) for r in result["rows"]} == {
        YESTERDAY: (1, 1, 2, 3, 1),
        TODAY: (3, 130, 65, 195, 2),
    }
    assert [r["key"] for r in result["rows"]] == [YESTERDAY, TODAY]  # oldest first
    assert counts(result["total"]) == (4, 131, 67, 198, 2)  # carol's is outside the window
    assert result["active_users"] == [
        {"day": YESTERDAY, "users": 1},
        {"day": TODAY, "users": 2},
    ]
    assert result["popular_models"] == [
        {"model": "champion", "requests": 3, "users": 2, "tokens": 195},
        {"model": "challenger", "requests": 1, "users": 1, "tokens": 3},
    ]


def test_per_user_and_per_model_heaviest_first_and_a_longer_window(api, usage):
    root, alice, bob, carol = usage
    by_user = analytics(api, root, by="user", days=366)
    assert [(r["key"], r["email"], counts(r)) for r in by_user["rows"]] == [
        (bob.id, bob.email, (1, 100, 50, 150, 1)),
        (alice.id, alice.email, (3, 31, 17, 48, 1)),
        (carol.id, carol.email, (1, 7, 7, 14, 1)),
    ]
    assert by_user["total"]["users"] == 3
    assert [r["key"] for r in analytics(api, root, by="user", limit=1)["rows"]] == [bob.id]
    by_model = analytics(api, root, by="model", days=1)  # today only
    assert {r["key"]: counts(r) for r in by_model["rows"]} == {"champion": (3, 130, 65, 195, 2)}
    assert by_model["active_users"] == [{"day": TODAY, "users": 2}]


def test_an_empty_window_is_zeros(api):
    root = api.admin()
    result = analytics(api, root, days=7)
    assert result["rows"] == [] and result["active_users"] == [] == result["popular_models"]
    assert counts(result["total"]) == (0, 0, 0, 0, 0)


def test_only_admins_and_bounded_days(api, usage):
    root, alice, *_ = usage
    assert api.http.get("/admin/analytics", headers=alice.headers).status_code == 403
    assert api.http.get("/admin/analytics").status_code == 401
    for params in ({"days": 0}, {"days": 367}, {"by": "week"}, {"limit": 0}):
        response = api.http.get("/admin/analytics", params=params, headers=root.headers)
        assert response.status_code == 422, params
