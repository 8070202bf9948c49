"""serving.read_events, the one parser of serving's SSE stream (chat turns and the OpenAI
gateway both read it): each `data:` event as sent and parsed, `[DONE]` ends it, and what
is not serving's format is an error that says what was wrong."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from platform_api.serving import Event, MalformedChunk, StreamUnfinished, read_events


def events(body: str) -> list[Event]:
    async def read() -> list[Event]:
        response = httpx.Response(200, content=body.encode())
        return [event async for event in read_events(response.aiter_lines())]

    return asyncio.run(read())


def chunk(**fields) -> str:
    return f"data: {json.dumps(fields)}\n\n"


def test_events_come_as_sent_and_parsed_until_done():
    first = chunk(model="orchard-chat/3", choices=[{"index": 0, "delta": {"content": "Hi"}}])
    body = (
        ": keep-alive\n\n"
        + first
        + "event: message\n"
        + chunk(choices=[], usage={"prompt_tokens": 5, "completion_tokens": 1})
        + "data: [DONE]\n\n"
        + chunk(model="after done")  # never read
    )
    found = events(body)
    assert [e.data for e in found] == [
        first.removeprefix("data: ").strip(),
        json.dumps({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}),
    ]
    assert found[0].model == "orchard-chat/3" and found[0].chunk().text == "Hi"
    assert found[1].usage == {"prompt_tokens": 5, "completion_tokens": 1}
    assert found[1].chunk().completion_tokens == 1 and not found[1].choices


def test_a_turn_reads_the_first_choice_and_the_gateway_counts_every_choice():
    (event,) = events(
        chunk(
            choices=[
                {"index": 0, "delta": {"content": "a"}},
                {"index": 1, "delta": {"content": "b"}},
                {"index": 2, "delta": {}},
            ]
        )
        + "data: [DONE]\n\n"
    )
    assert event.chunk().text == "a"
    assert event.pieces() == 2


def test_serving_error_event_is_yielded_for_the_caller_to_handle():
    (event,) = events(chunk(error={"message": "model crashed"}) + "data: [DONE]\n\n")
    assert event.is_error and event.payload["error"]["message"] == "model crashed"


@pytest.mark.parametrize(
    ("line", "says"),
    [("data: {not json\n\n", "not JSON"), ("data: [1, 2]\n\n", "not an object")],
)
def test_a_chunk_that_is_not_a_json_object_is_malformed(line, says):
    with pytest.raises(MalformedChunk, match=says):
        events(chunk(choices=[]) + line + "data: [DONE]\n\n")


def test_a_stream_without_done_is_unfinished():
    with pytest.raises(StreamUnfinished, match=r"\[DONE\] missing"):
        events(chunk(choices=[{"index": 0, "delta": {"content": "cut"}}]))
