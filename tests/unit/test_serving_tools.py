"""Tools (serving/tools.py): the prompt a model sees its tools in, rendered by a real
Orchard tokenizer's chat template, and the calls read back from an answer, streamed in any
pieces or whole. The end-to-end path (vLLM forcing a call, the SDK reading it) is in
tests/integration/test_serving.py."""

from __future__ import annotations

import json

import pytest

from serving.tiny import build_tokenizer
from serving.tools import CallReader, ToolPlan, render_messages, template_renders_tools

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}
HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Oslo?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "-3 C, snow"},
]


def test_orchards_template_gets_the_tools_in_its_system_prompt_and_calls_as_text():
    tokenizer = build_tokenizer()
    assert not template_renders_tools(tokenizer.chat_template)
    messages = render_messages(HISTORY, [WEATHER, TIME], native=False)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    system = text[: text.index("<|user|>")]
    assert system.startswith("<|system|>\nBe brief.\n\nYou may call functions.")
    assert json.dumps(WEATHER) in system and json.dumps(TIME) in system
    call = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    assert f"<|assistant|>\n{call}<|endoftext|>" in text
    assert "<|user|>\n<tool_response>-3 C, snow</tool_response><|endoftext|>" in text
    assert text.endswith("<|assistant|>\n")
    # Without tools (tool_choice "none"), nothing about them is added.
    plain = render_messages(HISTORY[:2], None, native=False)
    assert plain == [{"role": "system", "content": "Be brief."}, HISTORY[1]]


def test_a_template_that_renders_tools_gets_them_as_it_expects():
    assert template_renders_tools("{% for tool in tools %}{{ tool | tojson }}{% endfor %}")
    native = render_messages(HISTORY, [WEATHER], native=True)
    assert native[2]["tool_calls"][0]["function"]["arguments"] == {"city": "Oslo"}
    assert native[3] == HISTORY[3] and len(native) == len(HISTORY)  # no system prompt added


def read(plan: ToolPlan, text: str, size: int) -> tuple[CallReader, list[dict]]:
    """Feed `text` in pieces of `size` characters, as a stream would."""
    reader = CallReader(plan)
    pieces = []
    for start in range(0, len(text), size):
        pieces += reader.feed(text[start : start + size])
    pieces += reader.finish()
    return reader, pieces


def joined(pieces: list[dict]) -> tuple[str, list[dict]]:
    """What a client assembles from the fragments: the content and each call."""
    content, calls = "", []
    for piece in pieces:
        content += piece.get("content", "")
        if "tool_call" in piece:
            fragment = piece["tool_call"]
            if "id" in fragment:
                calls.append({"id": fragment["id"], **fragment["function"]})
            else:
                calls[fragment["index"]]["arguments"] += fragment["function"]["arguments"]
    return content, calls


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_auto_reads_every_tagged_call_and_keeps_the_rest_as_content(size):
    plan = ToolPlan.of([WEATHER, TIME], "auto")
    text = (
        "Let me check. "
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
        '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
        " <tool_call>not json</tool_call> <tool_c"
    )
    reader, pieces = read(plan, text, size)
    assert reader.content == "Let me check.  <tool_call>not json</tool_call> <tool_c"
    names = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in reader.calls]
    assert names == [("get_weather", {"city": "Paris"}), ("get_time", {})]
    content, calls = joined(pieces)
    assert content == reader.content
    assert [(c["id"], c["name"], c["arguments"]) for c in calls] == [
        (c["id"], c["function"]["name"], c["function"]["arguments"]) for c in reader.calls
    ]


@pytest.mark.parametrize("size", [1, 4, 1000])
def test_a_forced_call_streams_its_arguments_as_they_are_written(size):
    plan = ToolPlan.of([WEATHER, TIME], {"type": "function", "function": {"name": "get_weather"}})
    assert plan.forced and plan.call_schema()["properties"]["name"] == {"const": "get_weather"}
    text = '{"name":"get_weather","arguments":{"city":"Par\\"is"}}'
    reader, pieces = read(plan, text, size)
    assert reader.content == "" and len(reader.calls) == 1
    arguments = reader.calls[0]["function"]["arguments"]
    assert json.loads(arguments) == {"city": 'Par"is'}
    assert joined(pieces) == ("", [{"id": reader.calls[0]["id"], "name": "get_weather",
                                     "arguments": arguments}])  # fmt: skip
    if size == 1:  # the arguments came in more than one fragment
        assert sum("tool_call" in p for p in pieces) > 2


def test_required_offers_every_tool_and_a_cut_off_call_is_content():
    plan = ToolPlan.of([WEATHER, TIME], "required")
    names = [option["properties"]["name"]["const"] for option in plan.call_schema()["anyOf"]]
    assert names == ["get_weather", "get_time"]
    assert plan.call_schema()["anyOf"][1]["properties"]["arguments"] == {"type": "object"}
    cut = '{"name":"get_time","arguments":{"ti'
    reader, _ = read(plan, cut, 1000)
    assert reader.calls == [] and reader.content == cut
    assert ToolPlan.of([WEATHER], "none") is None and ToolPlan.of(None, "auto") is None
