"""Tools (function calling): the prompt that shows a model its tools, and the calls read
back from what it writes.

Rendering (docs/serving.md, "Tools"). A chat template that renders tools itself (it reads
a `tools` variable, as Qwen's and Llama 3.1's do) gets them with the messages. Orchard's
templates do not (its own chat format, and the ChatML it gives SmolLM2), so the tools go
into the system prompt in the Hermes format many open models are trained on:

    You may call functions. Their signatures, as JSON, are inside <tools></tools>:
    <tools>
    {"type": "function", "function": {"name": ..., "description": ..., "parameters": ...}}
    </tools>
    To call a function, write <tool_call>{"name": NAME, "arguments": {...}}</tool_call>.

An assistant's earlier calls become that text in its message, and a `tool` message a user
turn `<tool_response>CONTENT</tool_response>`, so any template with system, user and
assistant turns renders a tool conversation.

Reading calls back (`CallReader`, the same code streaming and not):
- `tool_choice` "auto": every `<tool_call>{...}</tool_call>` in the text is a call, the
  rest is the message's content;
- "required" or a named function: serving constrains the whole answer to one call's JSON
  `{"name": ..., "arguments": {...}}` (`ToolPlan.call_schema`, enforced by vLLM's
  structured output), so even a tiny model answers with a valid call; its arguments
  stream as they are written;
- "none": the tools are not shown and nothing is read as a call.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
TOOLS_PROMPT = (
    "You may call functions. Their signatures, as JSON, are inside <tools></tools>:\n"
    "<tools>\n{tools}\n</tools>\n"
    'To call a function, write <tool_call>{{"name": NAME, "arguments": {{...}}}}</tool_call>.'
)
_FORCED_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')


@dataclass(frozen=True)
class ToolPlan:
    """A request's tools and its `tool_choice`: "auto", "required" or "named"."""

    tools: list[dict[str, Any]]  # OpenAI tool definitions (type "function")
    choice: str
    name: str | None = None  # the function a named tool_choice forces

    @classmethod
    def of(cls, tools: list[dict[str, Any]] | None, tool_choice: Any) -> ToolPlan | None:
        """None when no call can be made (no tools, or tool_choice "none")."""
        if not tools or tool_choice == "none":
            return None
        if isinstance(tool_choice, dict):
            return cls(tools, "named", tool_choice["function"]["name"])
        return cls(tools, tool_choice or "auto")

    @property
    def forced(self) -> bool:
        return self.choice in ("required", "named")

    def call_schema(self) -> dict[str, Any]:
        """The JSON Schema of the one call a forced answer is: a function's name and its
        parameters (any object when the tool declares none)."""
        options = [
            {
                "type": "object",
                "properties": {
                    "name": {"const": tool["function"]["name"]},
                    "arguments": tool["function"].get("parameters") or {"type": "object"},
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for tool in self.tools
            if self.name is None or tool["function"]["name"] == self.name
        ]
        return options[0] if len(options) == 1 else {"anyOf": options}


# -- the prompt ---------------------------------------------------------------------------
def template_renders_tools(template: str | None) -> bool:
    """Whether a chat template shows tools itself (it reads the `tools` variable)."""
    return bool(template and re.search(r"\btools\b", template))


def tools_system_prompt(tools: list[dict[str, Any]]) -> str:
    return TOOLS_PROMPT.format(tools="\n".join(json.dumps(tool) for tool in tools))


def render_messages(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, *, native: bool
) -> list[dict[str, Any]]:
    """Messages for a chat template: for a `native` template (it renders tools) as
    Hugging Face templates take them (call arguments as objects); else with the tools in
    the system prompt and calls and results as text (the module docstring's format)."""
    if native:
        return [_native(message) for message in messages]
    out = []
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role in ("tool", "function"):
            out.append({"role": "user", "content": f"<tool_response>{content}</tool_response>"})
        elif role == "assistant" and message.get("tool_calls"):
            calls = "".join(_call_text(call) for call in message["tool_calls"])
            out.append({"role": "assistant", "content": content + calls})
        else:
            out.append({"role": role, "content": content})
    if tools:
        prompt = tools_system_prompt(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


def _call_text(call: dict[str, Any]) -> str:
    function = call["function"]
    body = {"name": function["name"], "arguments": _arguments(function.get("arguments"))}
    return CALL_OPEN + json.dumps(body, ensure_ascii=False) + CALL_CLOSE


def _arguments(text: Any) -> Any:
    """An earlier call's arguments (JSON text in OpenAI's API) as an object, or as sent."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _native(message: dict[str, Any]) -> dict[str, Any]:
    if not message.get("tool_calls"):
        return message
    calls = [
        {
            "id": call.get("id"),
            "type": "function",
            "function": {
                "name": call["function"]["name"],
                "arguments": _arguments(call["function"].get("arguments")),
            },
        }
        for call in message["tool_calls"]
    ]
    return {**message, "content": message.get("content") or "", "tool_calls": calls}


# -- the calls in an answer --------------------------------------------------------------
def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class CallReader:
    """One choice's answer, fed as it streams, read as content and tool calls.

    `feed(text)` and `finish()` return OpenAI delta fragments in order, each
    {"content": str} or {"tool_call": {...}} (one entry of a delta's `tool_calls`: the
    first fragment of a call has its index, id, type and name, the next ones more of its
    arguments). `content` and `calls` hold the whole answer once finished.
    """

    def __init__(self, plan: ToolPlan) -> None:
        self.plan = plan
        self.buffer = ""  # text not yet given out (auto), or the whole answer (forced)
        self.content = ""
        self.calls: list[dict[str, Any]] = []
        self._sent = 0  # forced: characters of the arguments given out
        self._head: re.Match[str] | None = None

    def feed(self, text: str) -> list[dict[str, Any]]:
        self.buffer += text
        return self._forced(final=False) if self.plan.forced else self._auto(final=False)

    def finish(self) -> list[dict[str, Any]]:
        return self._forced(final=True) if self.plan.forced else self._auto(final=True)

    # "required" / named: the whole answer is {"name": ..., "arguments": ...}
    def _forced(self, *, final: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self._head is None:
            self._head = _FORCED_HEAD.match(self.buffer)
            if self._head is not None:
                name = json.loads(f'"{self._head.group(1)}"')
                self.calls.append(
                    {
                        "id": call_id(),
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }
                )
                out.append(self._fragment(name=name))
        if self._head is not None:
            end = self._arguments_end(final)
            if end > self._head.end() + self._sent:
                piece = self.buffer[self._head.end() + self._sent : end]
                self._sent += len(piece)
                self.calls[0]["function"]["arguments"] += piece
                out.append(self._fragment(arguments=piece))
        if final and self._head is None:  # not in the expected order: read it whole
            call = _parse_call(self.buffer)
            if call is not None:
                self.calls.append(call)
                out.append(self._fragment(name=call["function"]["name"]))
                out[-1]["tool_call"]["function"]["arguments"] = call["function"]["arguments"]
        if final and not self._valid_forced_call():
            # Cut off (max_tokens) before the call was whole: what was written is content.
            self.calls.clear()
            self.content = self.buffer
            if self._head is None:
                out.append({"content": self.buffer})
        return out

    def _arguments_end(self, final: bool) -> int:
        """Where the arguments end in the buffer so far: before the closing brace of the
        call object (held back with any whitespace before it until the answer ends)."""
        text = self.buffer.rstrip()
        if final and text.endswith("}"):
            return len(text[:-1].rstrip())
        return len(text[:-1].rstrip()) if text else 0

    def _valid_forced_call(self) -> bool:
        try:
            whole = json.loads(self.buffer)
            if not isinstance(whole, dict):
                return False
            arguments = self.calls[0]["function"]["arguments"] if self.calls else None
            expected = whole.get("arguments", whole.get("parameters"))
            return arguments is not None and json.loads(arguments) == expected
        except ValueError:
            return False

    # "auto": <tool_call>{...}</tool_call> anywhere in the text
    def _auto(self, *, final: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            start = self.buffer.find(CALL_OPEN)
            if start < 0:
                keep = 0 if final else _partial_suffix(self.buffer, CALL_OPEN)
                out += self._text(self.buffer[: len(self.buffer) - keep])
                self.buffer = self.buffer[len(self.buffer) - keep :]
                return out
            out += self._text(self.buffer[:start])
            self.buffer = self.buffer[start:]
            end = self.buffer.find(CALL_CLOSE)
            if end < 0:
                if final:  # never closed: it was text after all
                    out += self._text(self.buffer)
                    self.buffer = ""
                return out
            raw = self.buffer[len(CALL_OPEN) : end]
            self.buffer = self.buffer[end + len(CALL_CLOSE) :]
            call = _parse_call(raw)
            if call is None:
                out += self._text(CALL_OPEN + raw + CALL_CLOSE)
            else:
                self.calls.append(call)
                out.append(self._fragment(name=call["function"]["name"]))
                out[-1]["tool_call"]["function"]["arguments"] = call["function"]["arguments"]

    def _text(self, text: str) -> list[dict[str, Any]]:
        if not text:
            return []
        self.content += text
        return [{"content": text}]

    def _fragment(self, *, name: str | None = None, arguments: str = "") -> dict[str, Any]:
        index = len(self.calls) - 1
        if name is None:
            return {"tool_call": {"index": index, "function": {"arguments": arguments}}}
        call = self.calls[index]
        return {
            "tool_call": {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
        }


def _parse_call(raw: str) -> dict[str, Any] | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        return None
    arguments = body.get("arguments", body.get("parameters", {}))
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {
        "id": call_id(),
        "type": "function",
        "function": {"name": body["name"], "arguments": arguments},
    }


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of `text` that starts `marker` (held back: the
    marker may be arriving)."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0
