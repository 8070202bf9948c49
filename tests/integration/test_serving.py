"""Serving end to end: the session stack's serving, restarted to serve a registered model
of this module's own (`Stack.serving`), tiny random chat models registered in the stack's
MLflow with `register_hf_model`, and the official `openai` SDK as the client. Nothing of
ours is mocked.

Each test sets the aliases it needs (the `champion` and `no_aliases` fixtures), so the
tests run in any order.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import socket
import string
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
import jsonschema
import numpy as np
import openai
import pytest
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, Field

from orchard.registry import register_hf_model
from orchard.settings import Settings
from platform_api.app import create_app
from serving.tiny import build_tiny_chat_model
from testkit.platform import grant_credits as ledger_grant
from tests.conftest import orchard, private_tmpdir, settings_from_env, up_or_fail, wait_serving
from tests.platform.conftest import FAST_ARGON2, Api, LiveServer
from tests.platform.test_gateway import balance, new_key

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.borrows_serving]

MAX_CONTEXT = 1024  # long enough that a stream is still running when a test acts on it
HELLO = [{"role": "user", "content": "Hello! Tell me about apples."}]


@dataclass
class Serving:
    env: dict[str, str]
    settings: Settings
    model_dirs: dict[str, str]
    versions: dict[str, str] = field(default_factory=dict)  # model key -> registered version

    @property
    def name(self) -> str:  # the registered model it serves
        return self.settings.model_name

    @property
    def base_url(self) -> str:
        return self.settings.serving_base_url

    def client(self, **kwargs) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.base_url}/v1", api_key="unused", max_retries=0, **kwargs
        )

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.base_url}/v1", api_key="unused", max_retries=0)

    def version(self, key: str) -> str:
        """The registered version of the model `key` (registered on first use, no alias)."""
        if key not in self.versions:
            self.versions[key] = register_hf_model(
                self.model_dirs[key],
                tracking_uri=self.settings.mlflow_uri,
                name=self.settings.model_name,
                alias=None,
                tags={"orchard.test": key},
            )
        return self.versions[key]

    def move_alias(self, alias: str, version: str) -> None:
        client = MlflowClient(self.settings.mlflow_uri, registry_uri=self.settings.mlflow_uri)
        client.set_registered_model_alias(self.settings.model_name, alias, version)

    def set_aliases(self, **aliases: str | None) -> None:
        """Point each alias at its version (None: remove it), then wait until serving
        serves exactly that."""
        client = MlflowClient(self.settings.mlflow_uri, registry_uri=self.settings.mlflow_uri)
        name = self.settings.model_name
        current = client.get_registered_model(name).aliases if self.versions else {}
        for alias, version in aliases.items():
            if version is not None and current.get(alias) != version:
                client.set_registered_model_alias(name, alias, version)
            elif version is None and alias in current:
                client.delete_registered_model_alias(name, alias)
        wanted = {alias: version for alias, version in aliases.items() if version is not None}
        deadline = time.monotonic() + 180
        while (served := self.health()["serving"]) != wanted:
            assert time.monotonic() < deadline, f"serving {served}, not {wanted}"
            time.sleep(0.5)

    def health(self) -> dict:
        return httpx.get(f"{self.base_url}/healthz", timeout=30).json()

    def wait_serving(self, alias: str, version: str, timeout: float = 180) -> None:
        """Until the ingress answers `alias` with `version` (it polls the registry)."""
        wait_serving(self.base_url, alias, version, timeout)

    def metrics(self) -> str:
        port = self.settings.ray_internal_port_base + 2  # the head's metrics export port
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text

    def samples(self, name: str, **labels: str) -> list[float]:
        """Values of the exported samples called `name` whose labels include `labels`."""
        return [
            sample.value
            for family in text_string_to_metric_families(self.metrics())
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        ]

    def wait_metric(self, name: str, check, timeout: float = 90, **labels: str) -> None:
        """Ray exports metrics every few seconds: poll until `check(values)` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            values = self.samples(name, **labels)
            if values and check(values):
                return
            time.sleep(2)
        raise AssertionError(f"{name}{labels} never satisfied the check: {values}")


@pytest.fixture(scope="module")
def serving(stack, tmp_path_factory) -> Iterator[Serving]:
    root = tmp_path_factory.mktemp("serving")
    with (
        private_tmpdir(root),
        stack.serving(
            "serving-test-" + "".join(random.choices(string.ascii_lowercase, k=8))
        ) as env,
    ):
        # `first` has heads 32 wide (64 / 2), the smallest vLLM's CPU attention runs, so
        # `choose_engine` serves it with vLLM; `second` keeps serving.tiny's 16-wide heads,
        # so it runs on the hand-written engine: the alias switch moves between the two.
        dirs = {
            "first": str(
                build_tiny_chat_model(
                    root / "first", seed=0, heads=2, kv_heads=1, max_context=MAX_CONTEXT
                )
            ),
            "second": str(build_tiny_chat_model(root / "second", seed=1, max_context=MAX_CONTEXT)),
        }
        yield Serving(env=env, settings=settings_from_env(env), model_dirs=dirs)


@pytest.fixture
def champion(serving) -> str:
    """The model `first` is champion and nothing is challenger, whatever came before."""
    version = serving.version("first")
    serving.set_aliases(champion=version, challenger=None)
    return version


@pytest.fixture
def no_aliases(serving) -> None:
    """No version of the served model has an alias: nothing is served."""
    serving.set_aliases(champion=None, challenger=None)


def error_body(error: openai.APIStatusError) -> dict:
    return error.response.json()["error"]


def greedy(client: openai.OpenAI, model: str = "champion", **kwargs):
    params = {"max_tokens": 24, "temperature": 0, **kwargs}
    return client.chat.completions.create(model=model, messages=HELLO, **params)


# -- before any version is aliased -------------------------------------------------------------
def test_with_no_aliased_version_the_app_is_up_and_answers_503(serving, no_aliases):
    client = serving.client()
    assert httpx.get(f"{serving.base_url}/healthz", timeout=10).json()["status"] == "ok"
    assert client.models.list().data == []
    with pytest.raises(openai.InternalServerError) as caught:
        greedy(client)
    assert caught.value.status_code == 503
    body = error_body(caught.value)
    assert body["code"] == "model_not_loaded" and body["type"] == "server_error"
    assert "champion" in body["message"] and set(body) == {"message", "type", "param", "code"}
    status = orchard(serving.env, "status", "serve")
    assert status.returncode == 0 and "healthy" in status.stdout


# -- embeddings (no registered model needed) -----------------------------------------------
EMBED_TEXTS = ["How do I read a JSON file?", "Parsing JSON text in Python", "Baking sourdough"]


def test_embeddings_in_openai_shape_batched_without_mixing_requests(serving):
    client = serving.client()
    # The SDK asks for base64 (float32 little-endian) and decodes it.
    result = client.embeddings.create(model="all-MiniLM-L6-v2", input=EMBED_TEXTS)
    assert result.model == "sentence-transformers/all-MiniLM-L6-v2"
    vectors = np.array([item.embedding for item in result.data])
    assert vectors.shape == (3, 384) and [item.index for item in result.data] == [0, 1, 2]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    assert 0 < result.usage.prompt_tokens == result.usage.total_tokens
    floats = httpx.post(
        f"{serving.base_url}/v1/embeddings",
        json={"model": "sentence-transformers/all-MiniLM-L6-v2", "input": EMBED_TEXTS[0],
              "encoding_format": "float"},
        timeout=60,
    ).json()  # fmt: skip
    assert np.allclose(floats["data"][0]["embedding"], vectors[0], atol=1e-5)

    async def together() -> list:
        async_client = serving.async_client()
        texts = [f"{EMBED_TEXTS[i % 3]} (request {i})" for i in range(8)]
        answers = await asyncio.gather(
            *(async_client.embeddings.create(model="all-MiniLM-L6-v2", input=t) for t in texts)
        )
        return texts, [a.data[0].embedding for a in answers]

    texts, batched = asyncio.run(together())
    alone = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts).data
    assert np.allclose(batched, [item.embedding for item in alone], atol=1e-4)

    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert "all-MiniLM-L6-v2" in error_body(caught.value)["message"]
    for bad, param in (({"input": [[1, 2, 3]]}, "input"), ({"input": "x", "dimensions": 8},
                                                          "dimensions")):  # fmt: skip
        response = httpx.post(f"{serving.base_url}/v1/embeddings",
                              json={"model": "all-MiniLM-L6-v2", **bad}, timeout=60)  # fmt: skip
        assert response.status_code == 400 and param in response.json()["error"]["param"]


# -- one registered version --------------------------------------------------------------------
def test_chat_completion_in_openai_shape_with_the_version(serving, champion):
    client = serving.client()
    raw = client.chat.completions.with_raw_response.create(
        model="champion", messages=HELLO, max_tokens=24, temperature=0
    )
    assert raw.headers["x-orchard-model-version"] == champion
    # ... and which replica answered: this machine's only one (host/Serve replica id).
    host, replica = raw.headers["x-orchard-replica"].split("/")
    assert host == socket.gethostname() and replica
    answer = raw.parse()
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.model == f"{serving.name}/{champion}"
    assert answer.model_extra["model_version"] == champion
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    assert answer.usage.completion_tokens == 24 and answer.usage.prompt_tokens > 5
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 24
    # temperature 0 is deterministic, and every name for the champion is the same model
    name = serving.name
    for model in (name, f"{name}@champion", f"{name}/{champion}", f"models:/{name}@champion"):
        assert greedy(client, model).choices[0].message.content == choice.message.content
    listed = {m.id: m.model_extra["version"] for m in client.models.list().data}
    assert listed == {
        serving.name: champion,
        "champion": champion,
        f"{serving.name}/{champion}": champion,
    }
    # Each entry says how many tokens the model takes (vLLM's max_model_len): the platform
    # fits a chat's max_tokens into it.
    assert {m.model_extra["max_model_len"] for m in client.models.list().data} == {MAX_CONTEXT}


def test_streaming_chat_matches_the_full_answer_and_ends_with_usage(serving, champion):
    client = serving.client()
    full = greedy(client).choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model="champion",
            messages=HELLO,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert all(c.model_extra["model_version"] == champion for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    *body, last = chunks
    assert last.choices == [] and last.usage.completion_tokens == 24
    assert last.usage.total_tokens == last.usage.prompt_tokens + 24
    assert all(c.usage is None for c in body)
    assert "".join(c.choices[0].delta.content or "" for c in body) == full
    finishes = [c.choices[0].finish_reason for c in body if c.choices[0].finish_reason]
    assert finishes == ["length"]


def test_stop_sequences_end_the_answer_before_them(serving, champion):
    client = serving.client()
    full = greedy(client, max_tokens=60).choices[0].message.content
    start = next(i for i in range(10, len(full) - 3) if full[i : i + 3].isprintable())
    stop = full[start : start + 3]
    expected = full[: full.index(stop)]
    answer = greedy(client, max_tokens=60, stop=[stop, "never in the answer"])
    assert answer.choices[0].message.content == expected
    assert answer.choices[0].finish_reason == "stop"
    stream = greedy(client, max_tokens=60, stop=stop, stream=True)
    chunks = [c for c in stream if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_fixed_seed_reproduces_the_sample_and_n_gives_several(serving, champion):
    client = serving.client()
    sample = {"temperature": 1.0, "top_p": 0.95, "seed": 42, "max_tokens": 20}
    first = greedy(client, **sample).choices[0].message.content
    assert greedy(client, **sample).choices[0].message.content == first
    several = greedy(client, **{**sample, "n": 3})
    assert [c.index for c in several.choices] == [0, 1, 2]
    assert several.choices[0].message.content == first  # choice i uses seed + i
    assert several.usage.completion_tokens == 60


def test_completions_endpoint(serving, champion):
    client = serving.client()
    answer = client.completions.create(
        model="champion", prompt=["Once upon a time", "Apples"], max_tokens=8, temperature=0
    )
    assert answer.object == "text_completion" and answer.id.startswith("cmpl-")
    assert [c.index for c in answer.choices] == [0, 1]
    assert all(c.text and c.finish_reason == "length" for c in answer.choices)
    assert answer.usage.completion_tokens == 16
    stream = client.completions.create(
        model="champion", prompt="Once upon a time", max_tokens=8, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in stream) == answer.choices[0].text


# -- what the vLLM engine adds: logprobs, penalties, JSON output, tools ------------------------
def _tool(name: str, properties: dict) -> dict:
    parameters = {"type": "object", "properties": properties, "required": list(properties),
                  "additionalProperties": False}  # fmt: skip
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


# Closed value sets and bounded numbers: even a random model's call ends within max_tokens.
TOOLS = [
    _tool("get_weather", {"city": {"enum": ["Paris", "Oslo", "Lima"]},
                          "unit": {"enum": ["C", "F"]}}),
    _tool("set_alarm", {"hour": {"type": "integer", "minimum": 0, "maximum": 23},
                        "loud": {"type": "boolean"}}),
]  # fmt: skip


class Fruit(BaseModel):
    fruit: Literal["apple", "pear", "plum"]
    ripe: bool
    count: int = Field(ge=0, le=99)


def calls(message) -> list[tuple[str, dict]]:
    """A message's tool calls as (name, arguments), each call's arguments checked against
    its tool's schema."""
    out = []
    for call in message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        arguments = json.loads(call.function.arguments)
        schema = next(t for t in TOOLS if t["function"]["name"] == call.function.name)
        jsonschema.validate(arguments, schema["function"]["parameters"])
        out.append((call.function.name, arguments))
    return out


def assemble_calls(chunks) -> dict[int, list[tuple[str, dict]]]:
    """Each choice's tool calls as a client assembles them from the stream's deltas."""
    parts: dict[int, dict[int, dict]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or ():
                call = parts.setdefault(choice.index, {}).setdefault(delta.index, {"args": ""})
                if delta.id:
                    call["name"] = delta.function.name
                call["args"] += delta.function.arguments or ""
            if choice.finish_reason:
                assert choice.finish_reason == "tool_calls"
    return {
        index: [(c["name"], json.loads(c["args"])) for _, c in sorted(found.items())]
        for index, found in parts.items()
    }


def test_logprobs_for_chat_and_completions_streamed_and_not(serving, champion):
    client = serving.client()
    answer = greedy(client, max_tokens=12, logprobs=True, top_logprobs=3)
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens == 12
    text = bytes(b for token in content for b in token.bytes).decode(errors="replace")
    assert text == answer.choices[0].message.content  # a token's bytes, split characters too
    for token in content:  # greedy: the chosen token is the most likely
        ranked = [t.logprob for t in token.top_logprobs]
        assert len(ranked) == 3 and ranked == sorted(ranked, reverse=True) and ranked[0] <= 0
        assert (token.token, token.logprob) == (token.top_logprobs[0].token, ranked[0])
    chunks = greedy(client, max_tokens=12, logprobs=True, top_logprobs=3, stream=True)
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs
                for t in c.choices[0].logprobs.content]  # fmt: skip
    assert [t.token for t in streamed] == [t.token for t in content]
    assert [t.logprob for t in streamed] == pytest.approx([t.logprob for t in content], abs=1e-4)
    assert greedy(client, max_tokens=4).choices[0].logprobs is None  # only when asked

    prompt = {"model": "champion", "prompt": "Once upon a time", "max_tokens": 6,
              "temperature": 0, "logprobs": 2}  # fmt: skip
    legacy = client.completions.create(**prompt).choices[0].logprobs
    assert len(legacy.tokens) == len(legacy.token_logprobs) == len(legacy.top_logprobs) == 6
    assert legacy.text_offset[0] == 0 and legacy.text_offset == sorted(legacy.text_offset)
    assert all(1 <= len(top) <= 2 for top in legacy.top_logprobs)
    pieces = [c.choices[0].logprobs for c in client.completions.create(**prompt, stream=True)
              if c.choices and c.choices[0].logprobs]  # fmt: skip
    assert [t for p in pieces for t in p.tokens] == legacy.tokens
    assert [o for p in pieces for o in p.text_offset] == legacy.text_offset


def test_presence_and_frequency_penalties_change_the_answer(serving, champion):
    client = serving.client()
    plain = greedy(client, max_tokens=40).choices[0].message.content
    for penalty in ({"frequency_penalty": 2.0}, {"presence_penalty": 2.0}):
        assert greedy(client, max_tokens=40, **penalty).choices[0].message.content != plain


def test_response_format_json_schema_and_json_object_give_json(serving, champion):
    client = serving.client()
    schema = Fruit.model_json_schema()
    form = {"type": "json_schema", "json_schema": {"name": "fruit", "schema": schema}}
    several = greedy(client, max_tokens=60, temperature=1.0, seed=5, n=3, response_format=form)
    for choice in several.choices:  # sampled, and still valid
        assert choice.finish_reason == "stop"
        Fruit.model_validate_json(choice.message.content)
    chunks = greedy(client, max_tokens=60, response_format=form, stream=True)
    Fruit.model_validate_json("".join(c.choices[0].delta.content or "" for c in chunks))
    parsed = client.chat.completions.parse(
        model="champion", messages=HELLO, response_format=Fruit, max_tokens=60, temperature=0
    )  # the SDK's own helper: a strict schema from the pydantic model, parsed back
    assert isinstance(parsed.choices[0].message.parsed, Fruit)
    # Any object: a random model may write one string until max_tokens (then the JSON is
    # cut off, finish_reason "length", as OpenAI's), but every answer is an object so far.
    objects = greedy(client, max_tokens=40, temperature=1.0, seed=1, n=4,
                     response_format={"type": "json_object"})  # fmt: skip
    for choice in objects.choices:
        assert choice.message.content.startswith("{")  # free text from this model never is
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.message.content), dict)
    unusable = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}
    with pytest.raises(openai.BadRequestError) as caught:
        greedy(client, response_format=unusable)
    assert error_body(caught.value)["param"] == "response_format"


def test_tool_calls_forced_named_or_auto_streamed_and_not(serving, champion):
    client = serving.client()
    required = greedy(client, max_tokens=60, temperature=1.0, seed=2, n=2, tools=TOOLS,
                      tool_choice="required")  # fmt: skip
    for choice in required.choices:
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        assert len(calls(choice.message)) == 1
    named = {"type": "function", "function": {"name": "set_alarm"}}
    answer = greedy(client, max_tokens=60, tools=TOOLS, tool_choice=named)
    [(name, arguments)] = calls(answer.choices[0].message)
    assert name == "set_alarm"
    with client.chat.completions.stream(
        model="champion",
        messages=HELLO,
        tools=TOOLS,
        tool_choice=named,
        max_tokens=60,
        temperature=0,
    ) as stream:  # the SDK's stream helper assembles the call from its deltas
        final = stream.get_final_completion()
    assert calls(final.choices[0].message) == [(name, arguments)]
    chunks = list(greedy(client, max_tokens=60, tools=TOOLS, tool_choice=named, stream=True))
    assert sum(bool(c.choices and c.choices[0].delta.tool_calls) for c in chunks) >= 2  # name, args
    assert assemble_calls(chunks) == {0: [(name, arguments)]}

    # The call and its result in the history: accepted, rendered, answered.
    call = answer.choices[0].message.tool_calls[0]
    history = [*HELLO, {"role": "assistant", "tool_calls": [call.model_dump()]},
               {"role": "tool", "tool_call_id": call.id, "content": "Alarm set."}]  # fmt: skip
    reply = client.chat.completions.create(
        model="champion", messages=history, tools=TOOLS, max_tokens=8, temperature=0
    )
    shown = greedy(client, max_tokens=8, tools=TOOLS)  # "auto": the tools are in the prompt
    assert reply.usage.prompt_tokens > shown.usage.prompt_tokens
    hidden = greedy(client, max_tokens=8, tools=TOOLS, tool_choice="none")
    assert hidden.usage.prompt_tokens == greedy(client, max_tokens=8).usage.prompt_tokens
    assert shown.usage.prompt_tokens > hidden.usage.prompt_tokens
    assert hidden.choices[0].message.tool_calls is None and hidden.choices[0].message.content


def test_the_hand_written_engine_refuses_what_only_vllm_implements(serving, champion):
    client = serving.client()
    second = f"{serving.name}/{serving.version('second')}"  # 16-wide heads: not on vLLM
    for params, param in (
        ({"logprobs": True}, "logprobs"),
        ({"frequency_penalty": 1.0}, "frequency_penalty"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": TOOLS}, "tools"),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            greedy(client, second, **params)
        body = error_body(caught.value)
        assert body["param"] == param and "hand-written engine" in body["message"]
    assert greedy(client, second, max_tokens=4).choices[0].message.content  # the rest works


def test_an_unknown_model_is_404_in_openai_shape(serving, champion):
    client = serving.client()
    for name in ("gpt-4o", f"{serving.name}@nightly", f"{serving.name}/99"):
        with pytest.raises(openai.NotFoundError) as caught:
            greedy(client, name)
        body = error_body(caught.value)
        assert body["code"] == "model_not_found" and body["param"] == "model"
        assert body["type"] == "invalid_request_error" and name in body["message"]


def test_an_over_long_prompt_is_a_clear_400(serving, champion):
    client = serving.client()
    long = [{"role": "user", "content": "apples and pears " * 600}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="champion", messages=long, max_tokens=10)
    body = error_body(caught.value)
    assert body["code"] == "context_length_exceeded" and body["param"] == "messages"
    assert f"maximum context length is {MAX_CONTEXT} tokens" in body["message"]
    with pytest.raises(openai.BadRequestError, match="lower max_tokens"):
        greedy(client, max_tokens=MAX_CONTEXT)


def test_bad_requests_are_400s_that_name_the_parameter(serving, champion):
    client = serving.client()
    cases = [
        ({"temperature": 5}, "temperature"),
        ({"n": 0}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"tools": [{"type": "function", "function": {"name": "a.b"}}]}, "tools.0.function.name"),
        ({"presence_penalty": 3.0}, "presence_penalty"),
        ({"top_logprobs": 2}, "top_logprobs"),  # without logprobs
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),  # fmt: skip
        ({"logit_bias": {"5": 1.0}}, "logit_bias"),
    ]
    for params, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            greedy(client, **params)
        assert error_body(caught.value)["param"] == param
    raw = httpx.post(
        f"{serving.base_url}/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert raw.status_code == 400 and "not valid JSON" in raw.json()["error"]["message"]
    missing = httpx.post(
        f"{serving.base_url}/v1/chat/completions", json={"model": "champion"}, timeout=10
    )
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "messages"


def test_concurrent_streams_are_batched_and_each_is_exact(serving, champion):
    expected = greedy(serving.client(), max_tokens=40).choices[0].message.content
    hist = "ray_orchard_serve_batch_size_per_step"

    def batched_steps() -> float:  # decoding steps with more than one sequence
        steps = sum(serving.samples(f"{hist}_count", model_version=champion))
        return steps - sum(serving.samples(f"{hist}_bucket", le="1.0", model_version=champion))

    before = batched_steps()

    async def one(client: openai.AsyncOpenAI) -> str:
        stream = await client.chat.completions.create(
            model="champion", messages=HELLO, max_tokens=40, temperature=0, stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def many() -> list[str]:
        async with serving.async_client() as client:
            return await asyncio.gather(*[one(client) for _ in range(8)])

    assert asyncio.run(many()) == [expected] * 8
    # The engine decoded several sequences per step: some steps had a batch above 1.
    deadline = time.monotonic() + 90  # Ray exports metrics every few seconds
    while batched_steps() <= before:
        assert time.monotonic() < deadline, "no decoding step had more than one sequence"
        time.sleep(2)


def test_a_client_that_disconnects_frees_its_slot(serving, champion):
    client = serving.client()
    finished = "ray_orchard_serve_finished_sequences_total"
    cancelled = sum(serving.samples(finished, reason="cancelled"))
    stream = client.chat.completions.create(
        model="champion",
        messages=HELLO,
        temperature=0,
        stream=True,  # until the context is full
    )
    next(iter(stream))
    stream.close()  # the client goes away mid-answer
    serving.wait_metric(finished, lambda v: sum(v) > cancelled, reason="cancelled")
    serving.wait_metric("ray_orchard_serve_batch_size", lambda v: max(v) == 0)


def test_a_full_queue_answers_429_and_an_oversized_request_400(serving, champion):
    client = serving.client()
    prompts = ["Once upon a time"] * 6
    with pytest.raises(openai.BadRequestError, match="lower n") as caught:
        client.completions.create(model="champion", prompt=[*prompts, "x"], n=16, max_tokens=5)
    assert error_body(caught.value)["param"] == "n"
    # 6 prompts x 16 choices = 96 sequences: the 32 batch slots and the 64 queue places.
    filling = client.completions.create(
        model="champion", prompt=prompts, n=16, max_tokens=400, temperature=0, stream=True
    )
    next(iter(filling))
    try:
        with pytest.raises(openai.RateLimitError) as caught:
            client.completions.create(model="champion", prompt="Apples", max_tokens=5)
        body = error_body(caught.value)
        assert caught.value.status_code == 429 and body["code"] == "server_overloaded"
        assert caught.value.response.headers["retry-after"]
    finally:
        filling.close()


def test_metrics_cover_requests_latency_throughput_queue_batch_and_errors(serving, champion):
    client = serving.client()
    greedy(client, max_tokens=4)
    with pytest.raises(openai.NotFoundError):
        greedy(client, "gpt-4o")
    errors, requests = "ray_orchard_serve_errors_total", "ray_orchard_serve_requests_total"
    serving.wait_metric(errors, lambda v: sum(v) >= 1, code="model_not_found")
    serving.wait_metric(requests, lambda v: sum(v) >= 1, model_version=champion, status="200")
    names = {
        sample.name: sample.labels
        for family in text_string_to_metric_families(serving.metrics())
        for sample in family.samples
        if sample.name.startswith("ray_orchard_serve_")
    }
    for name in (
        "ray_orchard_serve_requests_total",
        "ray_orchard_serve_errors_total",
        "ray_orchard_serve_time_to_first_token_seconds_bucket",
        "ray_orchard_serve_inter_token_latency_seconds_bucket",
        "ray_orchard_serve_generated_tokens_total",
        "ray_orchard_serve_tokens_per_second",
        "ray_orchard_serve_queue_depth",
        "ray_orchard_serve_batch_size",
    ):
        assert name in names, f"{name} is not exported"
    assert serving.samples("ray_orchard_serve_generated_tokens_total", model_version=champion)


# -- a second version: aliases move without downtime ------------------------------------------
def test_alias_switch_mid_stream_finishes_the_old_stream_then_serves_the_new(serving, champion):
    client = serving.client()
    second = serving.version("second")
    params = {"max_tokens": 600, "temperature": 0}
    old_answer = greedy(client, f"{serving.name}/{champion}", **params).choices[0].message.content
    new_answer = greedy(client, f"{serving.name}/{second}", **params).choices[0].message.content
    assert old_answer != new_answer  # two different models

    stream = greedy(client, "champion", stream=True, **params)
    chunks = iter(stream)
    first = next(chunks)
    assert first.model_extra["model_version"] == champion
    serving.move_alias("champion", second)  # what an admin's promotion does
    serving.wait_serving("champion", second)
    raw = client.chat.completions.with_raw_response.create(
        model="champion", messages=HELLO, **params
    )
    assert raw.headers["x-orchard-model-version"] == second
    assert raw.parse().choices[0].message.content == new_answer

    rest = list(chunks)  # the stream begun before the switch, read only now
    assert all(c.model_extra["model_version"] == champion for c in rest)
    assert rest[-1].choices[0].finish_reason == "length"
    text = "".join(c.choices[0].delta.content or "" for c in [first, *rest])
    assert text == old_answer

    serving.move_alias("challenger", champion)
    serving.wait_serving("challenger", champion)
    assert greedy(client, "challenger", **params).model_extra["model_version"] == champion
    listed = {m.id: m.model_extra["version"] for m in client.models.list().data}
    assert listed["champion"] == second and listed["challenger"] == champion
    assert listed[serving.name] == second


# -- the platform's metered OpenAI gateway in front of the real app ------------------------------
@dataclass
class Gateway:
    api: Api
    url: str

    def client_for(self, name: str, credits: int) -> tuple[openai.OpenAI, object]:
        """A new user with `credits` and an API key: the SDK on the gateway, and the user."""
        account = self.api.user(name)
        ledger_grant(self.api.database_url, account.id, credits)  # grant() adds "root"
        key = new_key(self.api, account)
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0), account

    def wait_balance(self, account, expected: int) -> None:
        """Streams settle just after [DONE]: poll until the balance is `expected`."""
        deadline = time.monotonic() + 30
        while (left := balance(self.api, account)) != expected:
            assert time.monotonic() < deadline, (left, expected)
            time.sleep(0.1)


@pytest.fixture(scope="module")
def gateway(serving, tmp_path_factory) -> Iterator[Gateway]:
    """The platform API (its OpenAI gateway) in front of this module's serving."""
    home = tmp_path_factory.mktemp("platform")
    settings = Settings(
        home=home / "platform-home",
        database_url=f"sqlite:///{home / 'platform.db'}",
        serving_url=serving.base_url,
        model_name=serving.settings.model_name,
        starter_plan_credits=0,  # each user's balance is its grant alone
    )
    platform = LiveServer(create_app(settings, FAST_ARGON2))
    platform.start()
    http = httpx.Client(base_url=f"{platform.url}/api/v1", timeout=60)
    api = Api(http=http, root=platform.url, settings=settings, database_url=settings.database_url)
    try:
        yield Gateway(api=api, url=platform.url)
    finally:
        http.close()
        platform.stop()


def test_the_platform_gateway_relays_real_serving_and_bills_its_usage(serving, champion, gateway):
    name = serving.settings.model_name
    client, alice = gateway.client_for("alice", 5000)
    direct = greedy(serving.client())
    through = greedy(client)
    assert through.choices[0].message.content == direct.choices[0].message.content
    assert through.model == direct.model
    streamed = list(greedy(client, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == direct.choices[0].message.content
    usage = streamed[-1].usage
    assert {m.id for m in client.models.list()} == {name, "champion"}  # no versions

    # Embeddings too: serving's own vectors, billed at their input tokens alone.
    embedded = client.embeddings.create(model="all-MiniLM-L6-v2", input=EMBED_TEXTS)
    alone = serving.client().embeddings.create(model="all-MiniLM-L6-v2", input=EMBED_TEXTS)
    vectors = [[d.embedding for d in answer.data] for answer in (embedded, alone)]
    assert np.allclose(*vectors, atol=1e-5) and embedded.usage == alone.usage

    # Billed from the real usage, one credit per token; the stream settles just after.
    spent = sum(u.prompt_tokens + u.completion_tokens for u in (through.usage, usage))
    gateway.wait_balance(alice, 5000 - spent - embedded.usage.prompt_tokens)


def test_the_gateway_relays_tool_calls_logprobs_and_json_and_bills_every_token(
    serving, champion, gateway
):
    client, bob = gateway.client_for("bob", 20_000)
    asked = {"messages": HELLO, "tools": TOOLS, "tool_choice": "required", "n": 2,
             "max_tokens": 60, "temperature": 0, "logprobs": True, "top_logprobs": 2}  # fmt: skip
    direct = serving.client().chat.completions.create(model="champion", **asked)
    through = client.chat.completions.create(model="champion", **asked)
    assert [calls(c.message) for c in through.choices] == [calls(c.message) for c in direct.choices]
    assert through.usage.completion_tokens == direct.usage.completion_tokens
    assert [len(c.logprobs.content) for c in through.choices] == [
        len(c.logprobs.content) for c in direct.choices
    ]
    chunks = list(client.chat.completions.create(
        model="champion", stream=True, stream_options={"include_usage": True}, **asked
    ))  # fmt: skip
    streamed = assemble_calls(chunks)
    assert streamed == {i: calls(c.message) for i, c in enumerate(direct.choices)}
    usage = chunks[-1].usage
    assert usage.completion_tokens == direct.usage.completion_tokens  # both choices' calls
    fruit = client.chat.completions.parse(
        model="champion", messages=HELLO, response_format=Fruit, max_tokens=60, temperature=0
    )
    assert isinstance(fruit.choices[0].message.parsed, Fruit)

    spent = sum(u.prompt_tokens + u.completion_tokens for u in (through.usage, usage, fruit.usage))
    gateway.wait_balance(bob, 20_000 - spent)


# -- the official Node SDK (`openai` on npm, ui/'s devDependency) ------------------------------
NODE_SDK = Path(__file__).parents[1] / "node" / "openai_sdk.mjs"
# Each is one check of tests/node/openai_sdk.mjs, streamed and not where OpenAI streams it.
NODE_CHECKS = ("chat", "stop", "seed_and_n", "logprobs", "penalties", "json_schema", "tools",
               "completions", "embeddings", "errors")  # fmt: skip


def node_sdk(base_url: str, api_key: str = "unused") -> dict[str, dict]:
    """Run every check of the Node script against `base_url`: what each saw, by name."""
    node = shutil.which("node")
    assert node, "node is not on PATH: the UI and this test need Node.js >= 20.19"
    run = subprocess.run(
        [node, str(NODE_SDK), "--base-url", base_url, "--api-key", api_key,
         "--checks", ",".join(NODE_CHECKS)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    seen = {line["check"]: line for line in map(json.loads, run.stdout.splitlines())}
    failed = {name: line["error"] for name, line in seen.items() if not line["ok"]}
    assert run.returncode == 0 and not failed, failed or run.stderr
    assert list(seen) == list(NODE_CHECKS)
    return seen


def check_node_answers(seen: dict[str, dict], direct: str) -> None:
    """What a Node user gets is what a Python user gets: the same greedy answer, JSON that
    fits the schema, tool calls whose arguments fit their tool, OpenAI's error shapes."""
    assert seen["chat"]["content"] == direct
    for answer in seen["json_schema"]["answers"]:
        Fruit.model_validate(answer)
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    assert len(seen["tools"]["calls"]) == 3 and seen["tools"]["tool_deltas"] >= 2
    for name, arguments in seen["tools"]["calls"]:
        jsonschema.validate(arguments, tools[name])
    assert seen["embeddings"]["dimensions"] == 384
    codes = [(e["status"], e["param"]) for e in seen["errors"]["errors"]]
    assert codes == [(404, "model"), (404, "model"), (400, "temperature"),
                     (400, "response_format")]  # fmt: skip


def test_the_node_openai_sdk_gets_every_feature_from_serving(serving, champion):
    seen = node_sdk(f"{serving.base_url}/v1")
    check_node_answers(seen, greedy(serving.client()).choices[0].message.content)


def test_the_node_openai_sdk_through_the_gateway_is_billed_its_usage(serving, champion, gateway):
    client, carol = gateway.client_for("carol", 50_000)
    seen = node_sdk(f"{gateway.url}/v1", client.api_key)
    check_node_answers(seen, greedy(serving.client()).choices[0].message.content)
    # Every answered request's usage, tool calls, n > 1 and embeddings included; the
    # refused requests cost nothing.
    spent = sum(line["tokens"] for line in seen.values())
    assert seen["errors"]["tokens"] == 0 and spent > 1000
    gateway.wait_balance(carol, 50_000 - spent)


def test_down_stops_serving_and_up_brings_the_aliases_back(serving, champion):
    result = orchard(serving.env, "down", "serve")
    assert result.returncode == 0 and "stopped serve" in result.stdout
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", serving.settings.serve_port)) != 0
    up_or_fail(serving.env, serving.settings.home, "serve")
    serving.wait_serving("champion", champion)  # read again from the registry
    assert greedy(serving.client()).model_extra["model_version"] == champion
