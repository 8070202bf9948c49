"""The OpenAI API's requests we accept and its errors (the completion responses and stream
chunks are serving/openai_responses.py; embeddings' request and response are here).

Requests are validated here so every mistake becomes a 400 in OpenAI's error shape that
names the parameter; features Orchard does not implement (`logit_bias`, `echo`, `suffix`,
`best_of`, the legacy `functions`) are refused by name rather than silently ignored, and
so, by the replica, are those only the vLLM engine implements (logprobs, penalties,
response_format, tools) on a version the hand-written engine serves. Unknown fields are
ignored, as client libraries send newer OpenAI parameters freely.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_STOP_SEQUENCES = 4
MAX_CHOICES = 16
VERSION_HEADER = "X-Orchard-Model-Version"
# Which replica answered: `<host name>/<Serve replica id>` (with several replicas on
# several hosts, what an operator needs to find the logs of one answer).
REPLICA_HEADER = "X-Orchard-Replica"


class OpenAIError(Exception):
    """An error for the client, rendered as {"error": {message, type, param, code}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    def to_event(self) -> dict[str, Any]:
        return {"event": "error", **self.__dict__}

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> OpenAIError:
        fields = {k: event[k] for k in ("type", "param", "code", "headers")}
        return cls(event["status"], event["message"], **fields)


def model_not_found(model: str, known: list[str]) -> OpenAIError:
    return OpenAIError(
        404,
        f"The model {model!r} does not exist. Use one of: {', '.join(known)} "
        "(GET /v1/models lists what is served).",
        param="model",
        code="model_not_found",
    )


def no_model_loaded(message: str) -> OpenAIError:
    return OpenAIError(
        503,
        message,
        type="server_error",
        code="model_not_loaded",
        headers={"Retry-After": "5"},
    )


def overloaded(message: str) -> OpenAIError:
    return OpenAIError(
        429,
        message,
        type="rate_limit_error",
        code="server_overloaded",
        headers={"Retry-After": "1"},
    )


def replica_lost() -> OpenAIError:
    """The replica answering died (its host or process went away) before the answer was
    complete; the request was not finished, and sending it again reaches another one."""
    return OpenAIError(
        503,
        "The model replica answering this request went away (its host or process stopped) "
        "before the answer was complete: send the request again; another replica answers it.",
        type="server_error",
        code="replica_unavailable",
    )


def internal_error() -> OpenAIError:
    return OpenAIError(
        500,
        "The server had an error while processing your request; see the serving logs.",
        type="server_error",
        code="internal_error",
    )


def validation_error(error: ValidationError) -> OpenAIError:
    first = error.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    message = first["msg"].removeprefix("Value error, ")
    return OpenAIError(400, f"{message} (parameter {param})" if param else message, param=param)


# -- requests -------------------------------------------------------------------------
FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"  # tool and json_schema names, as OpenAI checks them
MAX_TOP_LOGPROBS = 20  # OpenAI's limit (chat); 5 for text completions
MAX_COMPLETION_LOGPROBS = 5


class StreamOptions(BaseModel):
    include_usage: bool = False


class _GenerationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    @field_validator("temperature", "top_p", "n", "stream", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any, info: Any) -> Any:
        # Some clients send explicit nulls for parameters they leave to the server.
        return cls.model_fields[info.field_name].default if value is None else value

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty strings")
        return value

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def top_logprobs_count(self) -> int | None:
        """Alternatives per token to report; None: no log probabilities."""
        return None

    def sampling(self) -> dict[str, Any]:
        """The engine's SamplingParams fields (serving.engine.SamplingParams) but the seed
        of each choice and `structured`, which the chat request adds."""
        return {
            "max_tokens": self.completion_limit,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": self.stop_sequences,
            "presence_penalty": self.presence_penalty or 0.0,
            "frequency_penalty": self.frequency_penalty or 0.0,
            "logprobs": self.top_logprobs_count,
        }

    def refuse_unsupported(self) -> None:
        """400 for parameters that would change the answer in ways we do not implement."""
        if self.stream_options is not None and not self.stream:
            raise OpenAIError(
                400, "stream_options is only allowed when stream is true", param="stream_options"
            )
        if self.logit_bias:
            raise _unsupported("logit_bias", "leave it unset")


def _unsupported(param: str, fix: str) -> OpenAIError:
    return OpenAIError(400, f"{param} is not supported by Orchard serving: {fix}", param=param)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON text, as the model wrote it


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # a tool message: the call it answers


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema object
    strict: bool | None = None


class Tool(BaseModel):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(BaseModel):
    name: str = Field(pattern=FUNCTION_NAME)


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: FunctionName


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: ResponseFormat | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.top_logprobs is not None and not self.logprobs:
            raise OpenAIError(400, "top_logprobs needs logprobs set to true", param="top_logprobs")
        for name in ("functions", "function_call"):
            if getattr(self, name):
                raise _unsupported(name, "the legacy functions API: send tools and tool_choice")
        if self.tool_choice is not None and not self.tools:
            raise OpenAIError(
                400, "tool_choice is only allowed when tools are specified", param="tool_choice"
            )
        if isinstance(self.tool_choice, NamedToolChoice):
            named = self.tool_choice.function.name
            if named not in {tool.function.name for tool in self.tools}:
                raise OpenAIError(
                    400, f"tool_choice names the function {named!r}, not in tools",
                    param="tool_choice",
                )  # fmt: skip
        form = self.response_format
        if form is not None and form.type == "json_schema" and form.json_schema is None:
            raise OpenAIError(
                400, 'response_format of type json_schema needs "json_schema": {"name", "schema"}',
                param="response_format.json_schema",
            )  # fmt: skip

    @property
    def completion_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def top_logprobs_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def tool_definitions(self) -> list[dict[str, Any]] | None:
        """The tools the prompt shows: none when tool_choice is "none"."""
        if not self.tools or self.tool_choice == "none":
            return None
        return [tool.model_dump(by_alias=True, exclude_none=True) for tool in self.tools]

    def tool_choice_value(self) -> Any:
        choice = self.tool_choice
        return choice.model_dump() if isinstance(choice, NamedToolChoice) else choice

    def structured(self, call_schema: dict[str, Any] | None) -> dict[str, Any] | None:
        """Constrained decoding: one tool call's JSON when tool_choice forces a call, else
        what response_format asks for (None: free text)."""
        if call_schema is not None:
            return {"json": call_schema, "param": "tools"}
        form = self.response_format
        if form is None or form.type == "text":
            return None
        if form.type == "json_schema" and form.json_schema.schema_ is not None:
            return {"json": form.json_schema.schema_, "param": "response_format"}
        return {"json_object": True, "param": "response_format"}

    def chat(self) -> list[dict[str, Any]]:
        """Messages as serving.tools.render_messages takes them: role, text content, and
        an assistant's tool calls or a tool message's call id."""
        out = []
        for i, message in enumerate(self.messages):
            role = "system" if message.role == "developer" else message.role
            content = message.content
            if isinstance(content, list):
                if any(part.type != "text" or part.text is None for part in content):
                    raise OpenAIError(
                        400,
                        'only text content parts are supported: send {"type": "text", "text": ...}',
                        param=f"messages.{i}.content",
                    )
                content = "".join(part.text for part in content)
            entry: dict[str, Any] = {"role": role, "content": content or ""}
            if message.tool_calls:
                entry["tool_calls"] = [call.model_dump() for call in message.tool_calls]
            for key in ("tool_call_id", "name"):
                if getattr(message, key) is not None:
                    entry[key] = getattr(message, key)
            out.append(entry)
        return out


class CompletionRequest(_GenerationRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's legacy default
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None
    logprobs: int | None = Field(None, ge=0, le=MAX_COMPLETION_LOGPROBS)

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.echo:
            raise _unsupported("echo", "leave it false")
        if self.suffix:
            raise _unsupported("suffix", "leave it unset")
        if self.best_of not in (None, 1):
            raise _unsupported("best_of", "use n for several completions")

    @property
    def completion_limit(self) -> int | None:
        return self.max_tokens

    @property
    def top_logprobs_count(self) -> int | None:
        return self.logprobs

    def prompts(self) -> list[str | list[int]]:
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if prompt and all(isinstance(p, int) for p in prompt):
            return [list(prompt)]
        if not prompt:
            raise OpenAIError(400, "prompt must not be empty", param="prompt")
        return list(prompt)


# -- embeddings ---------------------------------------------------------------------------
MAX_EMBEDDING_INPUTS = 2048
MAX_EMBEDDING_INPUT_CHARS = 32_000


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request. `input` is text (a string or a list of strings): token
    arrays are refused, as are `dimensions` other than the model's."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        items = value if isinstance(value, list) else [value]
        if any(isinstance(item, int | list) for item in items):
            raise ValueError("token arrays are not supported: send the text as strings")
        return value

    @field_validator("input")
    @classmethod
    def _bounded(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("input must not be an empty list")
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"input may hold at most {MAX_EMBEDDING_INPUTS} strings")
        if any(not text for text in texts):
            raise ValueError("input strings must not be empty")
        if any(len(text) > MAX_EMBEDDING_INPUT_CHARS for text in texts):
            raise ValueError(
                f"each input string may be at most {MAX_EMBEDDING_INPUT_CHARS} characters"
            )
        return value

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)

    def refuse_unsupported(self) -> None:
        """Nothing to refuse before the model is known (see `check_dimensions`)."""

    def check_dimensions(self, dimension: int) -> None:
        if self.dimensions is not None and self.dimensions != dimension:
            raise _unsupported("dimensions", f"leave it unset (the model gives {dimension})")


def embedding_response(
    model: str, vectors: list[list[float]], prompt_tokens: int, encoding: str
) -> dict[str, Any]:
    """OpenAI's embeddings list; base64 is the little-endian float32 bytes, as OpenAI's."""
    import base64

    import numpy as np

    def encode(vector: list[float]) -> list[float] | str:
        if encoding == "base64":
            return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
        return vector

    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(vector)}
            for i, vector in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
