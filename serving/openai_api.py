"""The OpenAI API's shapes: requests we accept, responses, stream chunks and errors.

Requests are validated here so every mistake becomes a 400 in OpenAI's error shape that
names the parameter; features Orchard does not implement (tools, logprobs, penalties) are
refused by name rather than silently ignored. Unknown fields are ignored, as client
libraries send newer OpenAI parameters freely.
"""

from __future__ import annotations

import json
import time
import uuid
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
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
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

    def refuse_unsupported(self) -> None:
        """400 for parameters that would change the answer in ways we do not implement."""
        if self.stream_options is not None and not self.stream:
            raise OpenAIError(
                400, "stream_options is only allowed when stream is true", param="stream_options"
            )
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise _unsupported(name, "leave it unset or 0")
        if self.logit_bias:
            raise _unsupported("logit_bias", "leave it unset")


def _unsupported(param: str, fix: str) -> OpenAIError:
    return OpenAIError(400, f"{param} is not supported by Orchard serving: {fix}", param=param)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.logprobs or self.top_logprobs:
            raise _unsupported("logprobs", "leave it unset or false")
        for name in ("tools", "functions"):
            if getattr(self, name):
                raise _unsupported(name, "tool calling is not available; send plain messages")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise _unsupported("response_format", 'use {"type": "text"}')

    @property
    def completion_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def chat(self) -> list[dict[str, str]]:
        """Messages as the chat template wants them: role + text content."""
        out = []
        for i, message in enumerate(self.messages):
            if message.role in ("tool", "function"):
                raise _unsupported(f"messages.{i}.role", "tool messages need tool calling")
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
            out.append({"role": role, "content": content or ""})
        return out


class CompletionRequest(_GenerationRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's legacy default
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None
    logprobs: int | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.echo:
            raise _unsupported("echo", "leave it false")
        if self.suffix:
            raise _unsupported("suffix", "leave it unset")
        if self.best_of not in (None, 1):
            raise _unsupported("best_of", "use n for several completions")
        if self.logprobs:
            raise _unsupported("logprobs", "leave it unset")

    @property
    def completion_limit(self) -> int | None:
        return self.max_tokens

    def prompts(self) -> list[str | list[int]]:
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if prompt and all(isinstance(p, int) for p in prompt):
            return [list(prompt)]
        if not prompt:
            raise OpenAIError(400, "prompt must not be empty", param="prompt")
        return list(prompt)


# -- responses ------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class ResponseShape:
    """Builds one request's responses and chunks (chat or text completion)."""

    def __init__(self, kind: Literal["chat", "text"], model: str, version: str) -> None:
        self.kind = kind
        self.id = new_id("chatcmpl" if kind == "chat" else "cmpl")
        self.created = int(time.time())
        self.model = model
        self.version = version

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": f"orchard-v{self.version}",
            "model_version": self.version,
        }

    def full(self, texts: list[str], reasons: list[str], used: dict[str, int]) -> dict[str, Any]:
        if self.kind == "chat":
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": reason,
                }
                for i, (text, reason) in enumerate(zip(texts, reasons, strict=True))
            ]
            body = self._envelope("chat.completion")
        else:
            choices = [
                {"index": i, "text": text, "logprobs": None, "finish_reason": reason}
                for i, (text, reason) in enumerate(zip(texts, reasons, strict=True))
            ]
            body = self._envelope("text_completion")
        return {**body, "choices": choices, "usage": used}

    def chunk(
        self,
        index: int,
        text: str | None,
        finish_reason: str | None = None,
        *,
        first: bool = False,
        include_usage: bool = False,
    ) -> str:
        if self.kind == "chat":
            delta: dict[str, Any] = {}
            if first:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice = {"index": index, "delta": delta, "logprobs": None}
            body = self._envelope("chat.completion.chunk")
        else:
            choice = {"index": index, "text": text or "", "logprobs": None}
            body = self._envelope("text_completion")
        choice["finish_reason"] = finish_reason
        body["choices"] = [choice]
        if include_usage:
            body["usage"] = None
        return sse(body)

    def usage_chunk(self, used: dict[str, int]) -> str:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return sse({**self._envelope(obj), "choices": [], "usage": used})


def sse(body: dict[str, Any] | str) -> str:
    data = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    return f"data: {data}\n\n"


DONE = sse("[DONE]")


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
