"""The OpenAI-compatible gateway (/v1), driven with the official `openai` SDK and an
API key: the same wire format as serving, restricted to the models the key's owner may
use, metered in credits (reserve, then settle from serving's usage), OpenAI-shaped
errors."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from sqlmodel import Session, select

from platform_api.db import make_engine
from platform_api.metering import prompt_token_bound
from platform_api.models import UsageRecord
from testkit.platform import grant, new_key
from testkit.serving_stub import Reply
from tests.platform.conftest import Account, Api, serve_api

HELLO = [{"role": "user", "content": "Hi"}]


def sdk(api: Api, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.root}/v1", api_key=key, max_retries=0, timeout=30)


def balance(api: Api, account: Account) -> int:
    return api.http.get("/credits", headers=account.headers).json()["balance"]


def usage_records(api: Api, account: Account) -> list[UsageRecord]:
    engine = make_engine(api.database_url)
    try:
        with Session(engine) as session:
            query = select(UsageRecord).where(UsageRecord.user_id == account.id)
            return list(session.exec(query.order_by(UsageRecord.id)))
    finally:
        engine.dispose()


def wait_for_usage(api: Api, account: Account, count: int) -> list[UsageRecord]:
    """Settlement of a stream the client left runs after the response: wait for it."""
    deadline = time.monotonic() + 30
    while True:
        records = usage_records(api, account)
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


@pytest.fixture
def alice(api: Api) -> Account:
    account = api.user("alice")
    grant(api, account, 1000)
    return account


def test_a_chat_completion_is_answered_in_openai_shape_and_billed_for_its_usage(
    api, serving, alice
):
    client = sdk(api, new_key(api, alice))
    answer = client.chat.completions.create(model="champion", messages=HELLO, max_tokens=50)
    assert answer.choices[0].message.content == "Hello, world!"
    assert answer.model == "orchard-chat/3"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (12, 4)
    sent = serving.requests[-1]
    assert sent["model"] == "champion" and sent["max_tokens"] == 50
    # Billed 12 + 4 tokens at one credit each; the reservation's rest came back.
    assert balance(api, alice) == 1000 - 16
    entries = api.http.get("/credits", headers=alice.headers).json()["entries"]
    refund, debit = entries[0], entries[1]
    assert debit["kind"] == "debit" and debit["amount"] == prompt_token_bound(["Hi"]) + 50
    assert refund["kind"] == "refund" and refund["refund_of"] == debit["id"]
    (record,) = usage_records(api, alice)
    assert (record.source, record.status, record.model, record.model_version) == (
        "gateway",
        "complete",
        "champion",
        "orchard-chat/3",
    )
    assert (record.prompt_tokens, record.completion_tokens, record.credits) == (12, 4, 16)


def test_a_request_without_max_tokens_gets_what_the_models_context_leaves(api, serving, alice):
    """serving's models list says the model takes 256 tokens in all: a request naming no
    max_tokens is sent (and reserved for) what is left after the prompt's upper bound, not
    the 512 default serving would refuse; a cap the caller set is sent as it is."""
    for model in serving.models:
        model["max_model_len"] = 256
    client = sdk(api, new_key(api, alice))
    answer = client.chat.completions.create(model="champion", messages=HELLO)
    assert answer.choices[0].message.content == "Hello, world!"
    bound = prompt_token_bound(["Hi"])
    assert serving.requests[-1]["max_tokens"] == 256 - bound
    debit = api.http.get("/credits", headers=alice.headers).json()["entries"][1]
    assert debit["kind"] == "debit" and debit["amount"] == 256  # prompt bound + the rest
    client.chat.completions.create(model="champion", messages=HELLO, max_tokens=20)
    assert serving.requests[-1]["max_tokens"] == 20


def test_streaming_relays_serving_chunks_with_usage_only_when_asked(api, serving, alice):
    client = sdk(api, new_key(api, alice))
    chunks = list(
        client.chat.completions.create(
            model="orchard-chat",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello, world!"
    assert chunks[-1].usage.completion_tokens == 4 and chunks[-1].choices == []
    assert serving.requests[-1]["max_tokens"] == api.settings.gateway_max_tokens

    plain = list(client.chat.completions.create(model="champion", messages=HELLO, stream=True))
    assert all(c.usage is None for c in plain)
    assert "".join(c.choices[0].delta.content or "" for c in plain) == "Hello, world!"
    # serving was still asked for usage, so the stream is billed exactly.
    assert serving.requests[-1]["stream_options"] == {"include_usage": True}
    records = wait_for_usage(api, alice, 2)
    assert [(r.status, r.credits) for r in records] == [("complete", 16), ("complete", 16)]
    assert balance(api, alice) == 1000 - 32


def test_models_are_what_the_caller_may_use(api, alice):
    listed = [m.id for m in sdk(api, new_key(api, alice)).models.list()]
    assert listed == ["orchard-chat", "champion", "challenger"]  # no pinned version
    root = api.login(Account(email="root@example.org", id=""))
    admin_ids = [m.id for m in sdk(api, new_key(api, root)).models.list()]
    assert "orchard-chat/3" in admin_ids


def test_an_unknown_or_forbidden_model_is_404_in_openai_shape_and_costs_nothing(
    api, serving, alice
):
    client = sdk(api, new_key(api, alice))
    for model in ("gpt-4o", "orchard-chat/3"):  # unknown; a pinned version (admins only)
        with pytest.raises(openai.NotFoundError) as error:
            client.chat.completions.create(model=model, messages=HELLO)
        assert error.value.code == "model_not_found"
        assert error.value.body["param"] == "model"
        assert "champion" in error.value.body["message"]
    assert serving.requests == [] and balance(api, alice) == 1000


def test_a_request_the_balance_cannot_cover_is_refused_before_serving(api, serving):
    bob = api.user("bob")
    client = sdk(api, new_key(api, bob))
    with pytest.raises(openai.APIStatusError) as error:
        client.chat.completions.create(model="champion", messages=HELLO, max_tokens=10)
    assert error.value.status_code == 402
    assert error.value.code == "insufficient_quota"
    assert "lower max_tokens" in error.value.body["message"]
    assert serving.requests == []
    assert balance(api, bob) == 0


def test_bad_requests_and_credentials_get_openai_errors(api, alice):
    client = sdk(api, new_key(api, alice))
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="champion", messages=[])
    assert error.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="champion", messages=HELLO, max_tokens=100_000)
    assert error.value.body["param"] == "max_tokens"
    # A field of the wrong type is a 400 naming it, never a 500 (issue 24).
    for bad in (5, "yes", [True]):
        with pytest.raises(openai.BadRequestError) as error:
            client.chat.completions.create(
                model="champion", messages=HELLO, stream=True, stream_options=bad
            )
        assert error.value.body["param"] == "stream_options"
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="champion", messages=[{"role": "user", "content": 5}])
    assert error.value.body["param"] == "messages.0.content"
    with pytest.raises(openai.AuthenticationError):
        sdk(api, "orch_not_a_key").models.list()
    # A login's access token is not an API key.
    with pytest.raises(openai.PermissionDeniedError) as error:
        sdk(api, alice.tokens["access_token"]).models.list()
    assert error.value.code == "api_key_required"
    assert balance(api, alice) == 1000


def test_a_serving_error_is_passed_through_and_fully_refunded(api, serving, alice):
    serving.script(Reply(status=500))
    client = sdk(api, new_key(api, alice))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="champion", messages=HELLO)
    (record,) = usage_records(api, alice)
    assert (record.status, record.credits) == ("failed", 0)
    assert balance(api, alice) == 1000


def test_a_client_that_leaves_mid_stream_pays_only_for_what_it_received(api, serving, alice):
    serving.script(Reply(pieces=["a", "b", "c", "d", "e"], hold_after=2))
    key = new_key(api, alice)
    body = {"model": "champion", "messages": HELLO, "stream": True, "max_tokens": 20}
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.stream(
        "POST", f"{api.root}/v1/chat/completions", json=body, headers=headers, timeout=30
    ) as response:
        assert response.status_code == 200
        received = 0
        for line in response.iter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                received += 1
            if received == 2:
                break  # leave while serving holds the stream
    # Settled while serving still holds the rest: the gateway saw the client go.
    (record,) = wait_for_usage(api, alice, 1)
    assert (record.status, record.completion_tokens, record.credits) == ("partial", 2, 2)
    assert balance(api, alice) == 1000 - 2
    # ...and hung up on serving, so the rest is generated for nobody.
    serving.finished.clear()
    serving.release()
    assert serving.finished.wait(30)
    assert serving.hangups == 1


def test_a_serving_crash_mid_stream_ends_the_stream_and_bills_what_arrived(api, serving, alice):
    serving.script(Reply(pieces=["a", "b", "c", "d"], crash_after=3))
    client = sdk(api, new_key(api, alice))
    received = ""
    with pytest.raises(openai.APIError, match="broke off the stream"):
        for chunk in client.chat.completions.create(model="champion", messages=HELLO, stream=True):
            received += chunk.choices[0].delta.content or "" if chunk.choices else ""
    assert received == "abc"
    (record,) = wait_for_usage(api, alice, 1)
    assert (record.status, record.credits) == ("failed", 3)
    assert balance(api, alice) == 1000 - 3


def test_a_key_revoked_through_one_api_process_is_refused_by_every_process_at_once(
    api, serving, alice, settings, database_url
):
    """Two API processes on one database (a deployment's workers): a key that has just
    streamed through the second is revoked through the first, and the second's very next
    request with it is refused, unbilled, without reaching serving."""
    key = api.http.post("/api-keys", json={"name": "sdk"}, headers=alice.headers).json()
    with serve_api(settings, database_url) as other:
        client = sdk(other, key["key"])
        streamed = client.chat.completions.create(model="champion", messages=HELLO, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed) == "Hello, world!"
        spent = 1000 - balance(api, alice)
        calls = len(serving.requests)

        revoked = api.http.delete(f"/api-keys/{key['id']}", headers=alice.headers)
        assert revoked.status_code == 204
        with pytest.raises(openai.AuthenticationError) as error:
            client.chat.completions.create(model="champion", messages=HELLO, stream=True)
        assert error.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            sdk(api, key["key"]).chat.completions.create(model="champion", messages=HELLO)
    assert len(serving.requests) == calls
    assert balance(api, alice) == 1000 - spent == 1000 - 16
