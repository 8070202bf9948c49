"""What the OpenAI gateway accepts: OpenAI's chat completion, completion and embeddings
requests, typed.

The gateway forwards a request to serving as it came (but for `model`, `max_tokens` and
`stream_options`), so these models only check: every field has its JSON type (strict:
`"5"` is not 5, `1` is not `true`), its bounds and shape as OpenAI's API documents them
(`stop` up to 4 sequences, `top_logprobs` 0-20 and only with `logprobs`, penalties in
[-2, 2], `response_format` one of text / json_object / json_schema with a valid schema
name, `tools` as functions with valid names, `tool_choice` naming one of them), and a
mistake is a 400 naming the field (`param`) before anything else runs. Whether the model
*supports* a valid field is serving's to say: its error is relayed unchanged. Unknown
fields pass, as OpenAI's SDKs send newer parameters freely. The same models are the
routes' OpenAPI schemas, which the fuzz tests generate from.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from platform_api.schemas import MAX_TOKENS_LIMIT

MAX_CHOICES = 16
MAX_MESSAGES = 1000
MAX_STOP_SEQUENCES = 4  # OpenAI's limit
MAX_TOOLS = 128  # OpenAI's limit
MAX_PROMPTS = 2048  # prompts of one completion request, inputs of one embeddings request
FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"  # tool and json_schema names, as OpenAI checks them
Stop = str | list[str]


class OpenAIModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class StreamOptions(OpenAIModel):
    include_usage: bool | None = None


class ContentPart(OpenAIModel):
    type: str
    text: str | None = None


class FunctionCall(OpenAIModel):
    name: str
    arguments: str  # JSON text, as the model wrote it


class ToolCall(OpenAIModel):
    id: str
    type: Literal["function"]
    function: FunctionCall


class ChatMessage(OpenAIModel):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # a tool message: the call it answers


class FunctionDefinition(OpenAIModel):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema object
    strict: bool | None = None


class Tool(OpenAIModel):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(OpenAIModel):
    name: str = Field(pattern=FUNCTION_NAME)


class NamedToolChoice(OpenAIModel):
    type: Literal["function"]
    function: FunctionName


class JsonSchemaFormat(OpenAIModel):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextFormat(OpenAIModel):
    type: Literal["text"]


class JsonObjectFormat(OpenAIModel):
    type: Literal["json_object"]


class JsonSchemaResponseFormat(OpenAIModel):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")
]


class _Sampling(OpenAIModel):
    """The fields chat and text completions share."""

    model: str = Field(min_length=1, description="One of GET /v1/models.")
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    n: int | None = Field(None, ge=1, le=MAX_CHOICES)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: Stop | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @model_validator(mode="after")
    def _stop_and_stream(self):
        if isinstance(self.stop, list) and len(self.stop) > MAX_STOP_SEQUENCES:
            raise _invalid("stop", f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if self.stream_options is not None and not self.stream:
            raise _invalid("stream_options", "stream_options is only allowed when stream is true")
        return self


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    response_format: ResponseFormat | None = None

    @model_validator(mode="after")
    def _consistent(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise _invalid("top_logprobs", "top_logprobs needs logprobs set to true")
        if self.tool_choice is not None and not self.tools:
            raise _invalid("tool_choice", "tool_choice is only allowed when tools are specified")
        if isinstance(self.tool_choice, NamedToolChoice):
            named = self.tool_choice.function.name
            if named not in {tool.function.name for tool in self.tools or ()}:
                raise _invalid(
                    "tool_choice", f"tool_choice names the function {named!r}, not in tools"
                )
        return self

    def texts(self) -> list[str]:
        """What the prompt is rendered from: the text of every message (text parts only:
        only they carry tokens here), the tool calls and tool definitions as JSON."""
        texts: list[str] = []
        for message in self.messages:
            if isinstance(message.content, str):
                texts.append(message.content)
            elif message.content is not None:
                texts.extend(part.text or "" for part in message.content)
            for call in message.tool_calls or ():
                texts.append(call.function.name + call.function.arguments)
        if self.tools:
            texts.append(json.dumps([tool.model_dump(by_alias=True) for tool in self.tools]))
        return texts


TokenPrompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(_Sampling):
    prompt: TokenPrompt = Field(description="Text, texts, token ids, or lists of token ids.")
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = Field(None, ge=0, le=20)

    @model_validator(mode="after")
    def _prompts(self):
        if isinstance(self.prompt, list) and len(self.prompt) > MAX_PROMPTS:
            raise _invalid("prompt", f"at most {MAX_PROMPTS} prompts are allowed")
        return self

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: a text or its token ids."""
        return _entries(self.prompt)


class EmbeddingRequest(OpenAIModel):
    model: str = Field(min_length=1, description="The embedding model serving runs.")
    input: TokenPrompt
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @model_validator(mode="after")
    def _inputs(self):
        if isinstance(self.input, list) and len(self.input) > MAX_PROMPTS:
            raise _invalid("input", f"at most {MAX_PROMPTS} inputs are allowed")
        return self

    def inputs(self) -> list[str | list[int]]:
        """One entry per input: a text or its token ids."""
        return _entries(self.input)


def _entries(value: TokenPrompt) -> list[str | list[int]]:
    if isinstance(value, str):
        return [value]
    if value and all(isinstance(item, int) for item in value):
        return [list(value)]  # one prompt as token ids
    return list(value)  # texts, or lists of token ids


class FieldError(ValueError):
    """A check across fields failed: the field to name and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _invalid(field: str, message: str) -> FieldError:
    return FieldError(field, message)


def problems(error: ValidationError, data: Any) -> list[dict]:
    """`error`'s problems, each located in the request itself. Pydantic reports a value
    that fits no member of a union once per member, under the member's name
    (`messages.0.content.str`, `messages.0.content.list[ContentPart].0.type`); here the
    names go, a problem inside the value wins over one about the value as a whole, and
    what is left at one place is one problem (`content: 5`: "a valid string or a valid
    list")."""
    merged: dict[tuple, dict] = {}
    for item in error.errors():
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):  # a check across fields: the field it names
            item = {**item, "loc": (cause.field,), "msg": str(cause)}
        loc = _in_request(item["loc"], data, missing=item["type"] == "missing")
        first = merged.setdefault(loc, {**item, "loc": loc})
        alternative = item["msg"].removeprefix("Input should be ")
        if first is not item and alternative not in first["msg"]:
            first["msg"] += " or " + alternative
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
        elif isinstance(part, str) and (not isinstance(data, dict) or index + 1 < len(loc)):
            # A union member's name or a tagged union's tag (`NamedToolChoice`,
            # response_format's `json_schema`), not a field: errors lie deeper only under
            # fields the request has.
            continue
        else:
            if missing and index == len(loc) - 1:
                path.append(part)
            break
        path.append(part)
    return tuple(path)


def request_schema(model: type[OpenAIModel] = ChatCompletionRequest) -> dict:
    """`model`'s JSON schema with its nested models written in place, for the route's
    OpenAPI `requestBody` (which cannot carry the `$defs` pydantic makes)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            # A tagged union's `discriminator` maps tags to `$defs` paths, which inlining
            # removes; `oneOf` says the same without it.
            return {key: inline(value) for key, value in node.items() if key != "discriminator"}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return inline(schema)
