"""Client of the serving app: OpenAI-compatible `POST /v1/chat/completions` with
`stream: true`, read as server-sent events.

Contract relied on (the OpenAI streaming format): `data: {json chunk}` lines, each chunk
with `model` and `choices[0].delta.content`; a final chunk with `usage` when asked with
`stream_options.include_usage`; then `data: [DONE]`. The chunk's `model` is recorded as
the model version that answered (serving puts `orchard-chat/<registry version>` there).
Anything else (a status other than 200, a connection that breaks, a stream that ends
without `[DONE]`, an `error` object) is a `ServingError` whose message says what
happened.

`read_events` is the one parser of that stream: `stream_chat` reads a chat turn's text from
it, and the OpenAI gateway (`routes/gateway.py`) relays its events to the client as sent.
Both reach serving through the app's one `Serving` (HTTP clients and context lengths):
chat turns through httpx, the gateway through aiohttp (`Serving.relay`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

import aiohttp
import httpx

log = logging.getLogger("platform_api.serving")
CONNECT_TIMEOUT_S = 10.0
# Between two chunks: a busy model on CPU may take a while to the first token.
READ_TIMEOUT_S = 300.0
DRAIN_S = 1.0  # after [DONE], for the end of the body


class ServingError(Exception):
    """Serving failed to answer, or broke off; the message says how."""


@dataclass(frozen=True)
class Chunk:
    text: str = ""
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        headers={"Accept": "text/event-stream"},
    )


class MalformedChunk(ServingError):
    """A `data:` event that is not a JSON object."""


class StreamUnfinished(ServingError):
    """Serving's stream ended without `data: [DONE]`."""


@dataclass(frozen=True)
class Event:
    """One `data:` event of serving's stream: as sent (`data`, which the gateway relays
    byte for byte) and parsed (`payload`, a JSON object)."""

    data: str
    payload: dict

    @property
    def is_error(self) -> bool:
        """Serving's own error event (`{"error": {...}}`, OpenAI's shape)."""
        return "error" in self.payload

    @property
    def model(self) -> str | None:
        return self.payload.get("model")

    @property
    def usage(self) -> dict:
        """The token counts (on the last chunk, when asked with `include_usage`), or {}."""
        return self.payload.get("usage") or {}

    @property
    def choices(self) -> list[dict]:
        return self.payload.get("choices") or []

    def pieces(self) -> int:
        """How many choices this event adds output to (one piece each): a chat delta's
        content or tool calls, a text completion's text."""
        return sum(1 for c in self.choices if _adds_output(c))

    def chunk(self) -> Chunk:
        """What a chat turn reads: the first choice's text, the model, the usage."""
        text = ""
        for choice in self.choices:
            if choice.get("index", 0) == 0:
                text += (choice.get("delta") or {}).get("content") or ""
        usage = self.usage
        return Chunk(
            text=text,
            model=self.model,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
        )


def _adds_output(choice: dict) -> bool:
    delta = choice.get("delta") or {}
    return bool(delta.get("content") or delta.get("tool_calls") or choice.get("text"))


async def _drain(lines: AsyncIterator[str]) -> None:
    """Read what follows `[DONE]` (the end of the chunked body), so that the connection goes
    back to the client's pool instead of being closed: a new connection to serving on every
    request costs a TCP handshake and the proxy's set-up before each first token. A server
    that keeps the stream open longer than `DRAIN_S` gets its connection closed."""
    try:
        async with asyncio.timeout(DRAIN_S):
            async for _ in lines:
                pass
    except (TimeoutError, httpx.HTTPError, aiohttp.ClientError):
        pass


async def lines_of(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """An aiohttp body's lines as text, without their line breaks (as httpx's
    `aiter_lines`)."""
    async for line in content:
        yield line.decode(errors="replace").rstrip("\r\n")


async def read_events(lines: AsyncIterator[str]) -> AsyncIterator[Event]:
    """Serving's events, in order, until `data: [DONE]` (not yielded: the iteration just
    ends). Lines other than `data:` (blank separators, comments such as keep-alives, event
    names) are skipped. Raises `MalformedChunk` for an event that is not a JSON object and
    `StreamUnfinished` when the stream ends without `[DONE]`; a broken connection is
    httpx's error, for the caller to word."""
    async for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            await _drain(lines)
            return
        try:
            payload = json.loads(data)
        except ValueError:
            raise MalformedChunk(f"serving sent a chunk that is not JSON: {data[:100]!r}") from None
        if not isinstance(payload, dict):
            raise MalformedChunk(f"serving sent a chunk that is not an object: {data[:100]!r}")
        yield Event(data, payload)
    raise StreamUnfinished("serving closed the stream without finishing it ([DONE] missing)")


async def stream_chat(
    client: httpx.AsyncClient, base_url: str, request: dict
) -> AsyncIterator[Chunk]:
    url = f"{base_url}/v1/chat/completions"
    try:
        async with client.stream("POST", url, json=request) as response:
            if response.status_code != 200:
                body = (await response.aread())[:300].decode(errors="replace")
                if response.status_code >= 500:
                    log.error("serving answered %d: %s", response.status_code, body)
                raise ServingError(f"serving answered {response.status_code}: {body}")
            async with aclosing(read_events(response.aiter_lines())) as events:
                async for event in events:
                    if event.is_error:
                        raise ServingError(f"serving reported an error: {event.payload['error']}")
                    yield event.chunk()
    except httpx.ConnectError as error:
        log.error("serving at %s is unreachable (%s)", base_url, error)
        raise ServingError(f"serving at {base_url} is unreachable ({error})") from None
    except httpx.HTTPError as error:
        log.error("the serving stream broke off (%s: %s)", type(error).__name__, error)
        raise ServingError(
            f"the serving stream broke off ({type(error).__name__}: {error})"
        ) from None


class ContextLengths:
    """The context length serving reports for each model id (`max_model_len` in `GET
    /v1/models`, as vLLM names it), read at most every `ttl_s` seconds. Unknown (serving
    unreachable, an older serving, a model not loaded yet): None."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, ttl_s: float = 30.0) -> None:
        self.client, self.base_url, self.ttl_s = client, base_url.rstrip("/"), ttl_s
        self._lengths: dict[str, int] = {}
        self._read_at = float("-inf")

    def forget(self) -> None:
        """Read serving's list again at the next `get` (serving's models changed)."""
        self._read_at = float("-inf")

    def known(self, model: str) -> int | None:
        """`get` without reading serving: the length read less than `ttl_s` ago; raises
        `LookupError` when the list is older (call `get`)."""
        if time.monotonic() - self._read_at >= self.ttl_s:
            raise LookupError("the context lengths are stale")
        return self._lengths.get(model)

    async def get(self, model: str) -> int | None:
        now = time.monotonic()
        if now - self._read_at >= self.ttl_s:
            self._read_at = now
            try:
                response = await self.client.get(
                    f"{self.base_url}/v1/models", headers={"Accept": "application/json"}
                )
                response.raise_for_status()
                self._lengths = {
                    entry["id"]: int(entry["max_model_len"])
                    for entry in response.json()["data"]
                    if entry.get("max_model_len")
                }
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
                log.warning("could not read the models' context lengths from serving: %s", error)
        return self._lengths.get(model)


class Serving:
    """The platform's connection to serving, one per app (`app.state.serving`): a pooled
    HTTP client and the context lengths serving reports. The chat turns (`turns.py`) and
    the OpenAI gateway (`routes/gateway.py`) share it; the app's lifespan closes it."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.client = http_client()
        self.contexts = ContextLengths(self.client, base_url)
        self._relay: aiohttp.ClientSession | None = None

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def relay(self) -> aiohttp.ClientSession:
        """The OpenAI gateway's client, made on first use (in the running loop): aiohttp,
        whose HTTP parser is compiled, spends about half httpx's CPU time on a streamed
        request, and on a busy machine CPU time is time to the first token."""
        if self._relay is None:
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=READ_TIMEOUT_S
            )
            self._relay = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        return self._relay

    async def aclose(self) -> None:
        await self.client.aclose()
        if self._relay is not None:
            await self._relay.close()


def fit_max_tokens(request: dict, prompt_bound: int, context: int | None) -> dict:
    """A chat's `max_tokens` caps its answers; on a model whose context is shorter than the
    prompt plus that cap, the answer gets what the context leaves after the prompt's upper
    bound, instead of serving refusing the request. A prompt that leaves nothing is sent as
    it is: serving then says the conversation is too long."""
    if context is None or prompt_bound + request["max_tokens"] <= context:
        return request
    room = context - prompt_bound
    return {**request, "max_tokens": room} if room >= 1 else request
