"""The OpenAI API's chat and text completion responses: whole answers, stream chunks
(Server-Sent Events) and usage, in OpenAI's exact shapes (serving/ingress.py sends them;
serving/openai_api.py has the requests and errors)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass
class Choice:
    """One choice of a whole answer: its text, why it ended, its tokens' logprobs (when
    asked), and for a chat with tools the calls read from the text and the rest of it."""

    text: str = ""
    finish_reason: str = "stop"
    logprobs: list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    content: str | None = None  # the text without its tool calls (None: no tools)


class ResponseShape:
    """Builds one request's responses and chunks (chat or text completion)."""

    def __init__(self, kind: Literal["chat", "text"], model: str, version: str) -> None:
        self.kind = kind
        self.id = new_id("chatcmpl" if kind == "chat" else "cmpl")
        self.created = int(time.time())
        self.model = model
        self.version = version
        self._offsets: dict[int, int] = {}  # text completions: each choice's text so far

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": f"orchard-v{self.version}",
            "model_version": self.version,
        }

    def full(self, choices: list[Choice], used: dict[str, int]) -> dict[str, Any]:
        if self.kind == "chat":
            out = []
            for i, choice in enumerate(choices):
                message: dict[str, Any] = {"role": "assistant", "refusal": None}
                if choice.tool_calls:
                    message["content"] = choice.content or None
                    message["tool_calls"] = choice.tool_calls
                else:
                    message["content"] = choice.text if choice.content is None else choice.content
                out.append(
                    {
                        "index": i,
                        "message": message,
                        "logprobs": self._logprobs(i, choice.logprobs),
                        "finish_reason": choice.finish_reason,
                    }
                )
            body = self._envelope("chat.completion")
        else:
            out = [
                {
                    "index": i,
                    "text": choice.text,
                    "logprobs": self._logprobs(i, choice.logprobs),
                    "finish_reason": choice.finish_reason,
                }
                for i, choice in enumerate(choices)
            ]
            body = self._envelope("text_completion")
        return {**body, "choices": out, "usage": used}

    def chunk(
        self,
        index: int,
        text: str | None,
        finish_reason: str | None = None,
        *,
        first: bool = False,
        include_usage: bool = False,
        logprobs: list[dict[str, Any]] | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> str:
        if self.kind == "chat":
            delta: dict[str, Any] = {}
            if first:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            if tool_calls:
                delta["tool_calls"] = tool_calls
            choice = {"index": index, "delta": delta}
            body = self._envelope("chat.completion.chunk")
        else:
            choice = {"index": index, "text": text or ""}
            body = self._envelope("text_completion")
        choice["logprobs"] = self._logprobs(index, logprobs)
        choice["finish_reason"] = finish_reason
        body["choices"] = [choice]
        if include_usage:
            body["usage"] = None
        return sse(body)

    def _logprobs(self, index: int, entries: list[dict[str, Any]] | None) -> Any:
        """Chat: OpenAI's {"content": [{token, logprob, bytes, top_logprobs}]}. Text
        completions: the legacy lists, offsets counted from the choice's start."""
        if entries is None:
            return None
        if self.kind == "chat":
            return {"content": entries, "refusal": None}
        offset = self._offsets.get(index, 0)
        legacy: dict[str, list] = {
            "tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []
        }  # fmt: skip
        for entry in entries:
            legacy["tokens"].append(entry["token"])
            legacy["token_logprobs"].append(entry["logprob"])
            legacy["top_logprobs"].append({t["token"]: t["logprob"] for t in entry["top_logprobs"]})
            legacy["text_offset"].append(offset)
            offset += len(entry["token"])
        self._offsets[index] = offset
        return legacy

    def usage_chunk(self, used: dict[str, int]) -> str:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return sse({**self._envelope(obj), "choices": [], "usage": used})


def sse(body: dict[str, Any] | str) -> str:
    data = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    return f"data: {data}\n\n"


DONE = sse("[DONE]")
