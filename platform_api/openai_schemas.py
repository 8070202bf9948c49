"""What the OpenAI gateway accepts: OpenAI's chat completion request, typed.

The gateway forwards a request to serving as it came (but for `model`, `max_tokens` and
`stream_options`), so these models only check: every field the gateway or serving reads
has its JSON type (strict: `"5"` is not 5, `1` is not `true`) and the bounds the gateway
enforces, and a mistake is a 400 naming the field (`param`) before anything else runs.
Unknown fields pass, as OpenAI's SDKs send newer parameters freely; serving ignores them.
The same models are the route's OpenAPI schema, which the fuzz tests generate from.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from platform_api.schemas import MAX_TOKENS_LIMIT

MAX_CHOICES = 16
MAX_MESSAGES = 1000


class OpenAIModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class StreamOptions(OpenAIModel):
    include_usage: bool | None = None


class ContentPart(OpenAIModel):
    type: str
    text: str | None = None


class ChatMessage(OpenAIModel):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ChatCompletionRequest(OpenAIModel):
    model: str = Field(min_length=1, description="One of GET /v1/models.")
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    n: int | None = Field(None, ge=1, le=MAX_CHOICES)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    functions: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def texts(self) -> list[str]:
        """The text of every message (of text parts only: only they carry tokens here)."""
        texts: list[str] = []
        for message in self.messages:
            if isinstance(message.content, str):
                texts.append(message.content)
            elif message.content is not None:
                texts.extend(part.text or "" for part in message.content)
        return texts


def problems(error: ValidationError, data: Any) -> list[dict]:
    """`error`'s problems, each located in the request itself. Pydantic reports a value
    that fits no member of a union once per member, under the member's name
    (`messages.0.content.str`, `messages.0.content.list[ContentPart].0.type`); here the
    names go, a problem inside the value wins over one about the value as a whole, and
    what is left at one place is one problem (`content: 5`: "a valid string or a valid
    list")."""
    merged: dict[tuple, dict] = {}
    for item in error.errors():
        loc = _in_request(item["loc"], data, missing=item["type"] == "missing")
        first = merged.setdefault(loc, {**item, "loc": loc})
        if first is not item and item["msg"] not in first["msg"]:
            first["msg"] += " or " + item["msg"].removeprefix("Input should be ")
    return [
        item
        for loc, item in merged.items()
        if not any(len(other) > len(loc) and other[: len(loc)] == loc for other in merged)
    ]


def _in_request(loc: tuple, data: Any, missing: bool) -> tuple:
    """The fields and indexes of `loc` that lead into `data` (a missing field's name
    included), without the names pydantic gives union members."""
    path: list = []
    for index, part in enumerate(loc):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        elif isinstance(part, str) and not isinstance(data, dict):
            continue  # a union member's name, not a field
        else:
            if missing and index == len(loc) - 1:
                path.append(part)
            break
        path.append(part)
    return tuple(path)


def request_schema() -> dict:
    """ChatCompletionRequest's JSON schema with its nested models written in place, for
    the route's OpenAPI `requestBody` (which cannot carry the `$defs` pydantic makes)."""
    schema = ChatCompletionRequest.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return inline(schema)
