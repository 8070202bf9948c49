"""The OpenAI-compatible gateway for API-key holders: `POST /v1/chat/completions`,
`POST /v1/completions`, `POST /v1/embeddings` and `GET /v1/models`, the same wire format
as serving, metered and rate-limited.

Point any OpenAI SDK at `http://<platform>/v1` with a personal API key (`orch_…`). The
gateway checks the caller may use the model, reserves the most the request can cost
(`metering.py`: every prompt's bound plus `n × max_tokens` for each prompt, or an
embeddings request's input bound), forwards the request to serving unchanged but for an
explicit `max_tokens` and, when streaming, `stream_options.include_usage`, passes
serving's answer back byte for byte (the usage chunk only if the client asked for it),
then settles the cost from serving's `usage` (all `n` choices' tokens) and records it.
Errors are OpenAI's error JSON; a request is checked first against its model in
`openai_schemas` (every field's type, bounds and shape, 400 naming the field); a valid
field the model cannot honour yet is serving's to refuse, and its error is relayed as
serving wrote it.

Who may use what: `access.models_for`, the rule set the chats use too (by default everyone
the served aliases and the bare model name, administrators also any version such as
`orchard-chat/7`); the embedding model by `access.embedding_route`. A request for the
champion is sent to the challenger for the A/B split's share of requests
(`access.gateway_route`), and the side is recorded with the request's usage. A chat
request without `max_tokens` gets `gateway_max_tokens`, a text completion OpenAI's 16, or
what the model's context leaves after the prompt when that is less.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import aclosing
from dataclasses import dataclass
from typing import Annotated

import aiohttp
import anyio.from_thread
import httpx
from fastapi import APIRouter, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import SecurityScopes
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from platform_api.access import embedding_names, embedding_route, gateway_route, models_for
from platform_api.credits import InsufficientCredits
from platform_api.db import is_locked
from platform_api.deps import Principal, PrincipalDep, SessionDep, authenticate, bearer_token
from platform_api.errors import ApiError, clip, invalid_request_body
from platform_api.metering import (
    Pricing,
    Reservation,
    Usage,
    prompt_token_bound,
    reserve,
    settle,
    text_token_bound,
)
from platform_api.openai_schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    OpenAIModel,
    problems,
    request_schema,
)
from platform_api.plans import grant_due
from platform_api.serving import (
    MalformedChunk,
    Serving,
    StreamUnfinished,
    fit_max_tokens,
    lines_of,
    read_events,
)

router = APIRouter(prefix="/v1", tags=["OpenAI gateway"])

VERSION_HEADER = "X-Orchard-Model-Version"


def check_gateway_principal(principal: Principal, scopes: list[str]) -> Principal:
    if principal.api_key_id is None:
        raise ApiError(
            403,
            "api_key_required",
            "the OpenAI gateway takes personal API keys: create one at /api/v1/api-keys "
            "and send it as the SDK's api_key",
        )
    for scope in scopes:
        principal.require(scope, "the OpenAI gateway")
    return principal


async def gateway_principal(security_scopes: SecurityScopes, principal: PrincipalDep) -> Principal:
    return check_gateway_principal(principal, security_scopes.scopes)


INFERENCE = "inference"
GatewayPrincipal = Annotated[Principal, Security(gateway_principal, scopes=[INFERENCE])]
# The completions route checks the key itself, inside `admit` (one worker-thread call).
GatewayToken = Annotated[str, Security(bearer_token, scopes=[INFERENCE])]


def _bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, "invalid_request_error", message, param=param)


@dataclass(frozen=True)
class Endpoint:
    """One metered OpenAI endpoint: serving's path and the request's model."""

    path: str
    schema: type[OpenAIModel]


CHAT = Endpoint("/v1/chat/completions", ChatCompletionRequest)
TEXT = Endpoint("/v1/completions", CompletionRequest)
EMBEDDINGS = Endpoint("/v1/embeddings", EmbeddingRequest)
# OpenAI's default `max_tokens` of a text completion (serving's too).
TEXT_DEFAULT_MAX_TOKENS = 16
# Special tokens an embedding model adds to each input ([CLS] and [SEP]).
EMBEDDING_SPECIAL_TOKENS = 2


def _read(raw: bytes, schema: type[OpenAIModel]) -> tuple[dict, OpenAIModel]:
    """The body as sent (what is forwarded) and as checked: a 400 naming the first field
    at fault, in OpenAI's shape, for any field of the wrong type or out of bounds."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise _bad("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    try:
        return body, schema.model_validate(body)
    except ValidationError as error:
        invalid = invalid_request_body(problems(error, body))
        raise _bad(invalid["detail"], param=invalid["errors"][0]["field"]) from None


def _documented(schema: type[OpenAIModel]) -> dict:
    """The route's OpenAPI request body: read by hand (any content type, forwarded as
    sent), documented for clients and fuzzers."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": request_schema(schema)}},
        }
    }


@router.get("/models")
async def list_models(
    request: Request, principal: GatewayPrincipal, session: SessionDep
) -> JSONResponse:
    """What serving serves now, limited to what the caller may use."""
    models = await run_in_threadpool(
        models_for, session, request.app.state.settings, principal.user
    )
    serving: Serving = request.app.state.serving
    try:
        response = await serving.client.get(
            serving.url("/v1/models"), headers={"Accept": "application/json"}
        )
    except httpx.HTTPError as error:
        raise _unavailable(error) from None
    if response.status_code != 200:
        return _passthrough(response, response.content)
    listing = response.json()
    data = [m for m in listing.get("data", []) if m.get("id") in models]
    return JSONResponse({"object": "list", "data": data})


@router.post("/chat/completions", response_model=None, openapi_extra=_documented(CHAT.schema))
async def chat_completions(request: Request, token: GatewayToken) -> Response:
    return await _relay_request(request, token, CHAT)


@router.post("/completions", response_model=None, openapi_extra=_documented(TEXT.schema))
async def completions(request: Request, token: GatewayToken) -> Response:
    return await _relay_request(request, token, TEXT)


@router.post("/embeddings", response_model=None, openapi_extra=_documented(EMBEDDINGS.schema))
async def embeddings(request: Request, token: GatewayToken) -> Response:
    return await _relay_request(request, token, EMBEDDINGS)


async def _relay_request(request: Request, token: str, endpoint: Endpoint) -> Response:
    raw = await request.body()
    admitted = None
    if request.app.state.loop_engine is not None:  # SQLite: no thread hop if it can be helped
        try:
            admitted = admit(request, token, raw, endpoint, on_loop=True)
        except _InThread:
            pass
    if admitted is None:
        admitted = await run_in_threadpool(admit, request, token, raw, endpoint)
    meter = Meter(request, endpoint, admitted)
    if admitted.stream:
        return await meter.stream(admitted.body, admitted.include_usage)
    return await meter.complete(admitted.body)


@dataclass(frozen=True)
class Admission:
    body: dict  # what is forwarded to serving
    model: str  # as the caller named it
    stream: bool
    include_usage: bool  # the caller asked for the usage chunk
    pricing: Pricing
    reservation: Reservation
    variant: str | None


class _InThread(Exception):
    """Admission on the event loop could not finish without waiting: do it in a thread."""


def admit(
    request: Request, token: str, raw: bytes, endpoint: Endpoint = CHAT, *, on_loop: bool = False
) -> Admission:
    """Everything a request needs before serving is called, in one call and one database
    session (each thread-pool hop and each transaction costs time to the first token): the
    key (401/403, and its rate limit, 429), the body (400), the model it is routed to (404
    when the caller may not use it), its `max_tokens`, this month's plan credits, the token
    limits (429) and the credit reservation (402), in that order. Every refusal leaves the
    balance as it was.

    In a worker thread, or `on_loop` (SQLite only: a local file, about a millisecond of
    work): then anything that would wait (SQLite's write lock held by another
    transaction, serving's context lengths to be read again) rolls back and raises
    `_InThread`, and the caller runs it again in a thread; the rate limit counts the
    request once."""
    state = request.app.state
    engine = state.loop_engine if on_loop else state.engine
    with Session(engine, expire_on_commit=False) as session:
        try:
            counted = getattr(request.state, "gateway_counted", False)
            principal = authenticate(request, session, state.keys, token, count=not counted)
            request.state.gateway_counted = True
            check_gateway_principal(principal, [INFERENCE])
            body, checked = _read(raw, endpoint.schema)
            return _admit(session, state, principal, body, checked, on_loop)
        except OperationalError as error:
            if on_loop and is_locked(error):
                session.rollback()
                raise _InThread from None
            raise


def _context(state, model: str, on_loop: bool) -> int | None:
    """The model's context length (serving.ContextLengths, read on the event loop)."""
    if not on_loop:
        return anyio.from_thread.run(state.serving.contexts.get, model)
    try:
        return state.serving.contexts.known(model)
    except LookupError:
        raise _InThread from None


def _admit(
    session: Session, state, principal: Principal, body: dict, checked, on_loop: bool = False
) -> Admission:
    settings = state.settings
    model = checked.model
    if isinstance(checked, EmbeddingRequest):
        variant = None
        if not embedding_route(session, settings, principal.user, model):
            raise _no_model(model, ", ".join(embedding_names(settings)))
        prompt_bound = sum(
            text_token_bound(entry, EMBEDDING_SPECIAL_TOKENS) for entry in checked.inputs()
        )
        completion_bound, stream = 0, False
    else:
        route = gateway_route(session, settings, principal.user, model)
        if route is None:
            raise _no_model(model, models_for(session, settings, principal.user).describe())
        target, variant = route
        body["model"] = target
        if isinstance(checked, ChatCompletionRequest):
            prompt_bound = prompt_token_bound(checked.texts(), tools=bool(checked.tools))
            longest, prompts = prompt_bound, 1
            if body.get("max_tokens") is None and body.get("max_completion_tokens") is not None:
                body["max_tokens"] = body["max_completion_tokens"]  # the newer name
            body.pop("max_completion_tokens", None)
            default = settings.gateway_max_tokens
        else:
            bounds = [text_token_bound(prompt) for prompt in checked.prompts()]
            prompt_bound, longest, prompts = sum(bounds), max(bounds, default=0), len(bounds)
            default = TEXT_DEFAULT_MAX_TOKENS
        if body.get("max_tokens") is None:
            # No cap asked for: the default, or what the model's context leaves after the
            # longest prompt's bound when that is less (an explicit cap is the caller's:
            # serving answers context_length_exceeded for one that does not fit, as
            # OpenAI does).
            context = _context(state, target, on_loop)
            body["max_tokens"] = fit_max_tokens({"max_tokens": default}, longest, context)[
                "max_tokens"
            ]
        completion_bound = prompts * (checked.n or 1) * body["max_tokens"]
        stream = bool(checked.stream)
        if stream:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}

    pricing: Pricing = state.pricing
    grant_due(session, principal.user)  # this month's plan credits
    try:  # the token limits (429 token_limit), then the credits
        reservation = reserve(
            session,
            principal.user,
            principal.api_key_id,
            pricing,
            prompt_bound,
            completion_bound,
            f"{model} request",
        )
    except InsufficientCredits as error:
        what = "input" if completion_bound == 0 else "max_tokens or n"
        raise ApiError(
            402,
            "insufficient_quota",
            f"this request may cost up to {error.amount} credits and the balance is "
            f"{error.balance}: lower {what} or ask an administrator for credits",
        ) from None
    include_usage = bool(getattr(checked, "include_usage", False))
    return Admission(body, model, stream, include_usage, pricing, reservation, variant)


def _no_model(model: str, usable: str) -> ApiError:
    return ApiError(
        404,
        "model_not_found",
        f"The model {clip(model)!r} does not exist or you do not have access to it. "
        f"Use one of: {usable}.",
        param="model",
    )


class Meter:
    """One metered request to serving; settles exactly once, however it ends."""

    def __init__(self, request: Request, endpoint: Endpoint, admitted: Admission):
        self.app = request.app
        serving: Serving = request.app.state.serving
        self.url = serving.url(endpoint.path)
        self.session = serving.relay()
        self.pricing = admitted.pricing
        self.reservation = admitted.reservation
        self.model = admitted.model
        self.variant = admitted.variant
        self.started = time.monotonic()

    async def settle(
        self, status: str, version: str | None, prompt: int = 0, completion: int = 0
    ) -> None:
        """Refund and record, once per request (each path below ends in exactly one call).
        On SQLite on the event loop when the write lock is free (as `admit`), else as a
        worker-thread task of its own, so a request cancelled because its client left
        still settles."""
        usage = Usage(
            model=self.model,
            model_version=version,
            status=status,
            prompt_tokens=prompt,
            completion_tokens=completion,
            latency_ms=int((time.monotonic() - self.started) * 1000),
            variant=self.variant,
        )
        state = self.app.state
        if state.loop_engine is not None:
            try:
                settle(state.loop_engine, self.pricing, self.reservation, usage, "gateway")
                return
            except OperationalError as error:  # rolled back: nothing of it was written
                if not is_locked(error):
                    raise
        work = asyncio.to_thread(
            settle, state.engine, self.pricing, self.reservation, usage, "gateway"
        )
        await asyncio.shield(_detach(work))

    async def complete(self, body: dict) -> Response:
        try:
            async with self.session.post(
                self.url, data=json.dumps(body).encode(), headers=JSON_ANSWER
            ) as response:
                content = await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            await self.settle("failed", None)
            raise _unavailable(error) from None
        if response.status != 200:
            await self.settle("failed", None)
            return _passthrough(response, content)
        try:
            answer = json.loads(content)
            usage = answer.get("usage") or {}
            # Embeddings have input tokens only (OpenAI's usage has no completion_tokens).
            prompt = int(usage["prompt_tokens"])
            completion = int(usage["completion_tokens"] if "choices" in answer else 0)
        except (ValueError, KeyError, TypeError, AttributeError):
            await self.settle("failed", None)
            raise _serving_broke("serving answered without usage") from None
        await self.settle("complete", answer.get("model"), prompt, completion)
        return _passthrough(response, content)

    async def stream(self, body: dict, wants_usage: bool) -> Response:
        try:
            response = await self.session.post(
                self.url, data=json.dumps(body).encode(), headers=EVENT_STREAM
            )
        except (aiohttp.ClientError, TimeoutError) as error:
            await self.settle("failed", None)
            raise _unavailable(error) from None
        if response.status != 200:
            try:
                content = await response.read()
            except (aiohttp.ClientError, TimeoutError):
                content = b""
            response.release()
            await self.settle("failed", None)
            return _passthrough(response, content)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        if VERSION_HEADER in response.headers:
            headers[VERSION_HEADER] = response.headers[VERSION_HEADER]
        return StreamingResponse(
            self._relay(response, wants_usage), media_type="text/event-stream", headers=headers
        )

    async def _relay(self, response: aiohttp.ClientResponse, wants_usage: bool):
        """Serving's events to the client as sent (`serving.read_events` parses them), but
        the usage the client did not ask for; then settles from the usage, or, for a
        stream that did not complete, from the pieces relayed."""
        version: str | None = None
        pieces = 0
        settling: asyncio.Task | None = None
        status = "partial"  # unless the loop below ends otherwise: the client left
        usage: dict = {}
        broke: str | None = None  # why serving's stream ended early, told to the client
        try:
            try:
                async with aclosing(read_events(lines_of(response.content))) as events:
                    async for event in events:
                        data = event.data
                        if event.is_error:  # serving's own error event, OpenAI's shape already
                            status = "failed"
                            yield f"data: {data}\n\n"
                            break
                        version = version or event.model
                        pieces += event.pieces()
                        if event.usage:
                            usage = event.usage
                            if not wants_usage:
                                if not event.choices:
                                    continue  # the usage-only chunk the client did not ask for
                                data = json.dumps(
                                    {k: v for k, v in event.payload.items() if k != "usage"}
                                )
                        yield f"data: {data}\n\n"
                    else:  # serving sent [DONE]
                        status = "complete"
                        # Settled before the client sees [DONE]: its next request must not
                        # find this one's reservation still held (a spurious 402).
                        settling = _detach(self._settle_stream(status, version, usage, pieces))
                        await asyncio.shield(settling)
                        yield "data: [DONE]\n\n"
            except MalformedChunk:
                status, broke = "failed", "the model server sent a malformed chunk"
            except StreamUnfinished:
                status, broke = "failed", "the model server ended the stream unfinished"
            except (aiohttp.ClientError, TimeoutError) as error:
                status = "failed"
                broke = f"the model server broke off the stream ({type(error).__name__})"
            if broke:
                error = {
                    "message": f"{broke}; try again",
                    "type": "server_error",
                    "param": None,
                    "code": "serving_failed",
                }
                yield f"data: {json.dumps({'error': error})}\n\n"
        finally:
            # Detached from this (maybe cancelled) generator: closing serving's stream stops
            # its generation, and the settlement refunds what was not used.
            if status == "complete":  # read to its end: the connection goes back to the pool
                response.release()
            else:  # closing the connection tells serving to stop generating
                response.close()
            if settling is None:
                _detach(self._settle_stream(status, version, usage, pieces))

    async def _settle_stream(
        self, status: str, version: str | None, usage: dict, pieces: int
    ) -> None:
        """A stream's settlement: from serving's usage when it completed with one, else
        from the pieces relayed."""
        if status == "complete" and usage:
            prompt, completion = usage.get("prompt_tokens", 0), usage["completion_tokens"]
        else:
            prompt, completion = 0, pieces
        await self.settle(status, version, prompt, completion)


JSON_ANSWER = {"Accept": "application/json", "Content-Type": "application/json"}
EVENT_STREAM = {"Accept": "text/event-stream", "Content-Type": "application/json"}
_background: set[asyncio.Task] = set()


def _detach(coro) -> asyncio.Task:
    """Run `coro` as its own task, kept alive until done (the loop holds tasks weakly)."""
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


def _passthrough(response: httpx.Response | aiohttp.ClientResponse, content: bytes) -> Response:
    headers = {k: v for k, v in response.headers.items() if k.lower() == VERSION_HEADER.lower()}
    status = (
        response.status if isinstance(response, aiohttp.ClientResponse) else response.status_code
    )
    return Response(
        content,
        status_code=status,
        media_type=response.headers.get("content-type", "application/json"),
        headers=headers,
    )


def _unavailable(error: Exception) -> ApiError:
    return ApiError(
        503,
        "serving_unavailable",
        f"the model server cannot be reached ({type(error).__name__}); try again shortly",
    )


def _serving_broke(detail: str) -> ApiError:
    return ApiError(502, "serving_failed", f"{detail}; try again")
