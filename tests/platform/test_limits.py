"""Daily and monthly token limits (the user's own, else the plan's): a chat turn or a
gateway request whose bound would pass one is refused with 429 `token_limit` and a
Retry-After until the next UTC day or month; an administrator's reset starts the count
afresh; /usage shows the counts and the limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlmodel import Session

from platform_api.db import make_engine
from platform_api.metering import prompt_token_bound
from platform_api.models import UsageRecord
from platform_api.plans import next_month
from tests.platform.conftest import grant_credits
from tests.platform.test_gateway import new_key
from tests.platform.test_messages import _events, _messages, _send


def used(api, user_id: str, tokens: int, when: datetime | None = None) -> None:
    """A usage record of `tokens` completion tokens, as metering writes them."""
    engine = make_engine(api.database_url, pooled=False)
    try:
        with Session(engine) as session:
            session.add(
                UsageRecord(
                    user_id=user_id,
                    source="gateway",
                    model="champion",
                    status="complete",
                    completion_tokens=tokens,
                    credits=tokens,
                    created_at=when or datetime.now(UTC),
                )
            )
            session.commit()
    finally:
        engine.dispose()


def set_limits(api, admin, account, **limits) -> None:
    response = api.http.patch(f"/admin/users/{account.id}", json=limits, headers=admin.headers)
    assert response.status_code == 200, response.text


def seconds_until(moment: datetime) -> float:
    return (moment - datetime.now(UTC)).total_seconds()


@pytest.fixture
def setup(api):
    root, alice = api.admin(), api.user("alice")
    chat = api.chat(alice, max_tokens=50)
    return root, alice, chat


def test_a_turn_past_the_daily_limit_is_refused_until_tomorrow(api, serving, setup):
    root, alice, chat = setup
    bound = prompt_token_bound(["Hi"]) + 50
    set_limits(api, root, alice, daily_token_limit=1000)
    used(api, alice.id, 1000 - bound)  # exactly room for one turn's bound
    with _send(api, alice, chat, "Hi") as response:
        assert _events(response)[-1][0] == "done"
    refused = api.http.post(
        f"/chats/{chat['id']}/messages", json={"content": "Hi"}, headers=alice.headers
    )
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "token_limit"
    assert "daily token limit of 1000" in refused.json()["detail"]
    midnight = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0)
    assert abs(int(refused.headers["Retry-After"]) - seconds_until(midnight)) <= 5
    assert len(_messages(api, alice, chat)) == 2  # the refused turn wrote nothing

    # Yesterday's usage does not count; a reset forgets today's.
    usage = api.http.get("/usage", headers=alice.headers).json()
    assert usage["tokens_today"] == 1000 - bound + 16
    assert usage["limits"] == {"daily_token_limit": 1000, "monthly_token_limit": None}
    reset = api.http.post(f"/admin/users/{alice.id}/limits/reset", headers=root.headers)
    assert reset.status_code == 200 and reset.json()["limits_reset_at"]
    assert api.http.get("/usage", headers=alice.headers).json()["tokens_today"] == 0
    with _send(api, alice, chat, "Hi") as response:
        assert response.status_code == 200
        assert _events(response)[-1][0] == "done"
    log = api.http.get(
        "/admin/audit", params={"action": "user.limits_reset"}, headers=root.headers
    ).json()
    assert [e["target"] for e in log] == [alice.id]
    other = api.http.post("/admin/users/nobody/limits/reset", headers=root.headers)
    assert other.status_code == 404
    assert (
        api.http.post(f"/admin/users/{alice.id}/limits/reset", headers=alice.headers).status_code
        == 403
    )


def test_the_plans_monthly_limit_applies_unless_the_user_has_their_own(api, serving, setup):
    root, alice, chat = setup
    plan = api.http.post(
        "/admin/plans",
        json={"name": "Tiny", "monthly_token_limit": 100, "is_default": True},
        headers=root.headers,
    ).json()
    assert plan["monthly_token_limit"] == 100
    used(api, alice.id, 40)  # 40 + the turn's bound (68) > 100
    used(api, alice.id, 10_000, datetime.now(UTC) - timedelta(days=40))  # an earlier month
    refused = api.http.post(
        f"/chats/{chat['id']}/messages", json={"content": "Hi"}, headers=alice.headers
    )
    assert refused.status_code == 429 and "monthly token limit of 100" in refused.json()["detail"]
    retry = int(refused.headers["Retry-After"])
    assert abs(retry - seconds_until(next_month(datetime.now(UTC)))) <= 5
    usage = api.http.get("/usage", headers=alice.headers).json()
    assert (usage["tokens_this_month"], usage["limits"]["monthly_token_limit"]) == (40, 100)

    set_limits(api, root, alice, monthly_token_limit=10_000)  # her own, above the plan's
    with _send(api, alice, chat, "Hi") as response:
        assert _events(response)[-1][0] == "done"


def test_a_gateway_request_past_a_limit_is_refused_before_serving(api, serving):
    root, bob = api.admin(), api.user("bob")
    grant_credits(api.database_url, bob.id, 10_000)
    key = new_key(api, bob)
    set_limits(api, root, bob, daily_token_limit=100)
    body = {"model": "champion", "messages": [{"role": "user", "content": "Hi"}]}
    answered = httpx.post(
        f"{api.root}/v1/chat/completions",
        json={**body, "max_tokens": 20},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert answered.status_code == 200, answered.text
    refused = httpx.post(
        f"{api.root}/v1/chat/completions",
        json={**body, "max_tokens": 90},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "token_limit"
    assert int(refused.headers["Retry-After"]) > 0
    assert len(serving.requests) == 1
