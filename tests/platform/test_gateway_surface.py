"""The OpenAI surface through the gateway, with the official `openai` SDK and an API key:
text completions (streamed and not), embeddings metered by their input tokens, `n > 1`
billed for every choice, the generation fields passed to serving as sent, invalid values
refused with OpenAI's 400 naming the field, and a field serving cannot honour refused in
serving's own words. Serving is the stand-in (`serving_stub.py`); billing is read from
the ledger and the usage records."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from platform_api.metering import prompt_token_bound
from testkit.platform import grant, new_key
from testkit.serving_stub import EMBEDDING_MODEL, stub_vector
from tests.platform.conftest import Account, serve_api
from tests.platform.test_gateway import HELLO, balance, sdk, usage_records, wait_for_usage

EMBEDDER = EMBEDDING_MODEL.rsplit("/", 1)[-1]  # the name serving answers to besides the full


@pytest.fixture
def alice(api):
    account = api.user("alice")
    grant(api, account, 1000)
    return account


def debits(api, account) -> list[int]:
    entries = api.http.get("/credits", headers=account.headers).json()["entries"]
    return [e["amount"] for e in reversed(entries) if e["kind"] == "debit"]


def test_text_completions_streamed_and_not_are_relayed_and_billed_for_every_choice(
    api, serving, alice
):
    client = sdk(api, new_key(api, alice))
    answer = client.completions.create(model="champion", prompt=["Hi", "Yo"], n=2, max_tokens=10)
    assert [c.text for c in answer.choices] == ["Hello, world!"] * 4  # 2 prompts x n=2
    # 12 prompt tokens per prompt, 4 completion tokens per choice.
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (24, 16)
    assert serving.requests[-1]["max_tokens"] == 10
    # Reserved: each prompt's bound (2 bytes + 8) and 2 x 2 x 10 completion tokens.
    assert debits(api, alice) == [2 * (2 + 8) + 40]
    assert balance(api, alice) == 1000 - 40

    streamed = list(client.completions.create(model="champion", prompt="Hi", stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == "Hello, world!"
    assert serving.requests[-1]["max_tokens"] == 16  # OpenAI's default, reserved for
    assert serving.requests[-1]["stream_options"] == {"include_usage": True}
    assert all(c.usage is None for c in streamed)  # the client did not ask for it
    records = wait_for_usage(api, alice, 2)
    assert [(r.status, r.prompt_tokens, r.completion_tokens) for r in records] == [
        ("complete", 24, 16),
        ("complete", 12, 4),
    ]
    assert balance(api, alice) == 1000 - 40 - 16


def test_chat_n_choices_are_all_relayed_and_billed(api, serving, alice):
    client = sdk(api, new_key(api, alice))
    answer = client.chat.completions.create(model="champion", messages=HELLO, n=3, max_tokens=5)
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert answer.usage.completion_tokens == 12
    assert debits(api, alice) == [prompt_token_bound(["Hi"]) + 3 * 5]

    chunks = client.chat.completions.create(
        model="champion",
        messages=HELLO,
        n=2,
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts = ["", ""]
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == ["Hello, world!"] * 2
    assert chunk.usage.completion_tokens == 8
    records = wait_for_usage(api, alice, 2)
    assert [r.credits for r in records] == [12 + 12, 12 + 8]
    assert balance(api, alice) == 1000 - 24 - 20


def test_embeddings_are_metered_by_their_input_tokens_for_who_may_use_the_model(
    api, serving, alice
):
    key = api.http.post("/api-keys", json={"name": "sdk"}, headers=alice.headers).json()
    client = sdk(api, key["key"])
    vectors = client.embeddings.create(model=EMBEDDER, input=["hello world", "x"])
    # The SDK asks for base64 (float32) and decodes it: the vectors serving made, exactly.
    assert serving.requests[-1]["encoding_format"] == "base64"
    assert [d.index for d in vectors.data] == [0, 1]
    assert [d.embedding for d in vectors.data] == [stub_vector("hello world"), stub_vector("x")]
    assert vectors.usage.prompt_tokens == (2 + 2) + (1 + 2)  # the stand-in's count
    assert debits(api, alice) == [(11 + 2) + (1 + 2)]  # bytes + [CLS] and [SEP], per input
    (record,) = usage_records(api, alice)
    assert (record.source, record.model, record.model_version) == (
        "gateway",
        EMBEDDER,
        EMBEDDING_MODEL,
    )
    assert (record.prompt_tokens, record.completion_tokens, record.credits) == (7, 0, 7)
    assert balance(api, alice) == 1000 - 7

    # Token arrays are valid OpenAI input that serving refuses: its error, unchanged; no charge.
    with pytest.raises(openai.BadRequestError) as error:
        client.embeddings.create(model=EMBEDDING_MODEL, input=[[1, 2, 3]])
    assert error.value.body == {
        "message": "token arrays are not supported: send the text as strings (parameter input)",
        "type": "invalid_request_error",
        "param": "input",
        "code": None,
    }
    with pytest.raises(openai.NotFoundError) as error:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert error.value.code == "model_not_found" and EMBEDDING_MODEL in error.value.message
    # Another width than the model's is refused in serving's words, free of charge.
    with pytest.raises(openai.BadRequestError) as error:
        client.embeddings.create(model=EMBEDDER, input="x", dimensions=8)
    assert error.value.body["param"] == "dimensions" and "gives 384" in error.value.message
    assert balance(api, alice) == 1000 - 7

    # Restricted to the chat champion by a rule, the role may not embed; granted, it may.
    root = api.login(Account(email="root@example.org", id=""))
    rule = {"role": "user", "model": "champion"}
    assert api.http.post("/admin/model-access", json=rule, headers=root.headers).status_code == 201
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model=EMBEDDER, input="x")
    rule = {"role": "user", "model": EMBEDDING_MODEL}
    assert api.http.post("/admin/model-access", json=rule, headers=root.headers).status_code == 201
    assert client.embeddings.create(model=EMBEDDER, input="x").usage.prompt_tokens == 3

    # A revoked key is refused at once, and a key without the inference scope always.
    revoked = api.http.delete(f"/api-keys/{key['id']}", headers=alice.headers)
    assert revoked.status_code == 204
    with pytest.raises(openai.AuthenticationError):
        client.embeddings.create(model=EMBEDDER, input="x")
    body = {"name": "reader", "scopes": ["chats:read"]}
    reader = api.http.post("/api-keys", json=body, headers=alice.headers).json()["key"]
    with pytest.raises(openai.PermissionDeniedError) as error:
        sdk(api, reader).embeddings.create(model=EMBEDDER, input="x")
    assert error.value.code == "insufficient_scope"
    assert [r.status for r in usage_records(api, alice)] == [
        "complete",
        "failed",
        "failed",
        "complete",
    ]


def test_embeddings_as_floats_are_billed_at_the_prompt_price_and_refused_without_credits(
    api, serving, alice
):
    client = sdk(api, new_key(api, alice))
    texts = ["the quick brown fox", "jumps over", "the lazy dog"]
    floats = client.embeddings.create(model=EMBEDDING_MODEL, input=texts, encoding_format="float")
    assert [d.embedding for d in floats.data] == [stub_vector(t) for t in texts]
    assert floats.model == EMBEDDING_MODEL and floats.usage.prompt_tokens == 6 + 4 + 5
    # Serving's usage at the input-token price (1 credit per token), nothing for output.
    assert balance(api, alice) == 1000 - 15
    (record,) = usage_records(api, alice)
    assert (record.prompt_tokens, record.completion_tokens, record.credits) == (15, 0, 15)

    # A user whose balance cannot cover the input's bound gets the chat route's refusal,
    # and serving is never asked.
    bob = api.user("bob")
    asked = len(serving.requests)
    with pytest.raises(openai.APIStatusError) as error:
        sdk(api, new_key(api, bob)).embeddings.create(model=EMBEDDER, input="hello")
    assert (error.value.status_code, error.value.code) == (402, "insufficient_quota")
    assert "lower input" in error.value.message and "ask an administrator" in error.value.message
    assert len(serving.requests) == asked and balance(api, bob) == 0


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def test_generation_fields_reach_serving_as_sent(api, serving, alice):
    client = sdk(api, new_key(api, alice))
    fields = {
        "stop": ["\n", "END"],
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "logprobs": True,
        "top_logprobs": 3,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
        },
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
    }
    client.chat.completions.create(model="champion", messages=HELLO, max_tokens=5, **fields)
    sent = serving.requests[-1]
    assert {name: sent[name] for name in fields} == fields
    # The tools' JSON is part of the prompt a template renders: reserved for.
    assert debits(api, alice)[-1] > 512 + len(str(TOOLS))


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"top_logprobs": 3}, "top_logprobs"),  # without logprobs
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"seed": "7"}, "seed"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "no spaces"}}},
            "response_format.json_schema.name",
        ),
        ({"tool_choice": "auto"}, "tool_choice"),  # without tools
        ({"tools": [{"type": "function", "function": {"name": "a.b"}}]}, "tools.0.function.name"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),
    ],
)
def test_an_invalid_field_is_an_openai_400_naming_it_before_anything_is_spent(
    api, serving, alice, fields, param
):
    client = sdk(api, new_key(api, alice))
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="champion", messages=HELLO, **fields)
    assert error.value.body["type"] == "invalid_request_error"
    assert error.value.body["param"] == param
    assert param.split(".")[0] in error.value.body["message"]
    assert serving.requests == [] and balance(api, alice) == 1000


def test_a_field_serving_does_not_support_gets_servings_error_unchanged(api, serving, alice):
    serving.unsupported = {"logprobs"}
    client = sdk(api, new_key(api, alice))
    for create in (
        lambda: client.chat.completions.create(model="champion", messages=HELLO, logprobs=True),
        lambda: client.completions.create(model="champion", prompt="Hi", logprobs=2, stream=True),
    ):
        with pytest.raises(openai.BadRequestError) as error:
            create()
        assert error.value.body == {
            "message": "logprobs is not supported by Orchard serving: leave it unset",
            "type": "invalid_request_error",
            "param": "logprobs",
            "code": None,
        }
    assert [(r.status, r.credits) for r in usage_records(api, alice)] == [("failed", 0)] * 2
    assert balance(api, alice) == 1000


def test_admission_waits_in_a_thread_for_a_held_sqlite_write_lock_and_counts_once(
    api, serving, alice, settings, database_url
):
    """On SQLite the gateway admits on the event loop; while another connection holds the
    write lock it admits in a worker thread instead, which waits for the lock while the
    API goes on answering, and the
    request is counted against the key's rate limit once (1/minute: a second count would
    refuse it)."""
    if not database_url.startswith("sqlite"):
        pytest.skip("admission on the event loop is SQLite's")
    key = new_key(api, alice)
    limited = settings.model_copy(update={"rate_limit_api_key": "1/minute"})
    with serve_api(limited, database_url) as other:
        holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=30)
        holder.execute("BEGIN IMMEDIATE")  # the write lock, as a long transaction holds it
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(
                sdk(other, key).chat.completions.create,
                model="champion",
                messages=HELLO,
                max_tokens=5,
            )
            time.sleep(0.5)  # the request is in, waiting for the lock in a thread
            assert not answer.done()
            # ...not on the event loop, which goes on answering.
            assert httpx.get(f"{other.root}/healthz", timeout=10).status_code == 200
            holder.rollback()
            assert answer.result(timeout=30).choices[0].message.content == "Hello, world!"
        holder.close()
        with pytest.raises(openai.RateLimitError):  # the second request of the minute
            sdk(other, key).chat.completions.create(model="champion", messages=HELLO)
    assert balance(api, alice) == 1000 - 16


def test_streams_reuse_one_connection_to_serving(api, serving, alice):
    """A finished stream's connection goes back to the pool (the end of the body is read
    after `[DONE]`): no TCP handshake or proxy set-up before the next first token."""
    client = sdk(api, new_key(api, alice))
    for _ in range(3):
        chunks = client.chat.completions.create(model="champion", messages=HELLO, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello, world!"
    assert serving.opened <= 1  # one, or none when an earlier test's is still open
