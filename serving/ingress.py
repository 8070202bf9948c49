"""The OpenAI-compatible ingress: FastAPI routes in front of the ModelServer replicas.

Light by design (no torch): it validates requests (serving.openai_api), maps the `model`
field to a registered version (serving.directory, refreshed from MLflow), calls the
ModelServer with that version as the multiplexed model id, and answers with JSON or
Server-Sent Events in OpenAI's shapes. Errors always leave as OpenAI error JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchard.knowledge.embeddings import model_name as embedding_model_name
from serving import openai_api as oa
from serving import openai_responses as replies
from serving.config import ServingConfig
from serving.directory import ModelDirectory
from serving.registry import RegistryReader
from serving.tools import CallReader, ToolPlan

logger = logging.getLogger("ray.serve")

api = FastAPI(title="Orchard serving", description="The OpenAI API over Orchard's model.")


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    message = {404: f"Unknown path {request.url.path}: see /docs for the API."}.get(
        error.status_code, str(error.detail)
    )
    return oa.OpenAIError(error.status_code, message, code=None).response()


@api.exception_handler(RequestValidationError)
async def _request_error(request: Request, error: RequestValidationError) -> JSONResponse:
    return oa.OpenAIError(400, f"Bad request: {error.errors()[0]['msg']}").response()


@api.exception_handler(Exception)
async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s", request.url.path)
    return oa.internal_error().response()


async def _body(request: Request, schema: type) -> Any:
    try:
        payload = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise oa.OpenAIError(
            400, "The request body is not valid JSON: send a JSON object."
        ) from None
    if not isinstance(payload, dict):
        raise oa.OpenAIError(400, "The request body must be a JSON object.")
    try:
        body = schema.model_validate(payload)
    except ValidationError as error:
        raise oa.validation_error(error) from None
    body.refuse_unsupported()
    return body


def _count(route: str, version: str | None, status: int, code: str | None) -> None:
    from serving.metrics import count_request

    try:
        count_request(route, version, status, code)
    except Exception:  # metrics must never fail a request
        logger.debug("metrics unavailable", exc_info=True)


async def _first_events(stream) -> list[dict[str, Any]]:
    """The replica's first message: the start event, or the error to answer with."""
    try:
        events = await anext(stream)
    except BackPressureError:
        raise oa.overloaded("Too many requests are queued for this model: retry later.") from None
    except RayActorError:
        logger.exception("the model replica went away")
        raise oa.replica_lost() from None
    except Exception:
        logger.exception("model server failed")
        raise oa.internal_error() from None
    head = events[0]
    if head["event"] == "error":
        raise oa.OpenAIError.from_event(head)
    return events


async def _events(first: list[dict[str, Any]], stream) -> AsyncIterator[dict[str, Any]]:
    for event in first[1:]:
        yield event
    async for events in stream:
        for event in events:
            yield event


async def _collect(
    shape: replies.ResponseShape, first, stream, choices: int, plan: ToolPlan | None
) -> dict[str, Any]:
    outs, tokens = [replies.Choice() for _ in range(choices)], 0
    try:
        async for event in _events(first, stream):
            out = outs[event["index"]]
            out.text += event["text"]
            tokens += event["tokens"]
            if "logprobs" in event:
                out.logprobs = (out.logprobs or []) + event["logprobs"]
            if event["finish_reason"]:
                out.finish_reason = event["finish_reason"]
    except RayActorError:
        logger.exception("the model replica went away mid-answer")
        raise oa.replica_lost() from None
    except Exception:
        logger.exception("model server failed mid-answer")
        raise oa.internal_error() from None
    if plan is not None:
        for out in outs:
            reader = CallReader(plan)
            reader.feed(out.text)
            reader.finish()
            out.content, out.tool_calls = reader.content, reader.calls or None
            out.finish_reason = _finish(out.finish_reason, reader)
    return shape.full(outs, replies.usage(first[0]["prompt_tokens"], tokens))


def _finish(reason: str, reader: CallReader) -> str:
    """OpenAI's finish_reason "tool_calls" when the model ended its turn with calls."""
    return "tool_calls" if reader.calls and reason == "stop" else reason


async def _sse(
    shape: replies.ResponseShape, first, stream, choices: int, body, plan: ToolPlan | None
) -> AsyncIterator[str]:
    usage_on = body.include_usage
    tokens = 0
    readers = [CallReader(plan) for _ in range(choices)] if plan is not None else None
    if shape.kind == "chat":  # OpenAI opens each choice with the assistant role
        for index in range(choices):
            yield shape.chunk(index, "", first=True, include_usage=usage_on)
    try:
        async for event in _events(first, stream):
            tokens += event["tokens"]
            index, reason = event["index"], event["finish_reason"]
            logprobs = event.get("logprobs")
            if readers is None:
                if event["text"] or logprobs:
                    yield shape.chunk(index, event["text"], include_usage=usage_on,
                                      logprobs=logprobs)  # fmt: skip
            else:
                pieces = readers[index].feed(event["text"])
                if reason:
                    pieces += readers[index].finish()
                    reason = _finish(reason, readers[index])
                for piece in pieces or ([{}] if logprobs else []):
                    call = piece.get("tool_call")
                    yield shape.chunk(index, piece.get("content"), include_usage=usage_on,
                                      logprobs=logprobs,
                                      tool_calls=[call] if call else None)  # fmt: skip
                    logprobs = None  # on the first chunk of the event only
            if reason:
                yield shape.chunk(index, None, reason, include_usage=usage_on)
    except Exception as error:
        # No [DONE]: the client sees the answer is incomplete, and why.
        lost = isinstance(error, RayActorError)
        logger.exception(
            "the model replica went away mid-stream" if lost else "model server failed mid-stream"
        )
        yield replies.sse((oa.replica_lost() if lost else oa.internal_error()).body())
        return
    if usage_on:
        yield shape.usage_chunk(replies.usage(first[0]["prompt_tokens"], tokens))
    yield replies.DONE


def _work(kind: str, body: Any) -> tuple[dict[str, Any], ToolPlan | None]:
    """What the replica runs (ModelServer.generate), and the tool plan the answer is read
    with (None: no tools, or tool_choice "none")."""
    params = body.sampling()
    if kind == "text":
        return {"kind": kind, "prompts": body.prompts(), "n": body.n, "params": params}, None
    tools = body.tool_definitions()
    plan = ToolPlan.of(tools, body.tool_choice_value())
    params["structured"] = body.structured(plan.call_schema() if plan and plan.forced else None)
    work = {"kind": kind, "prompts": [body.chat()], "n": body.n, "params": params, "tools": tools}
    return work, plan


# Defined after every helper it calls: @serve.ingress pickles the routes (and the module
# globals they reference) when the class is decorated.
@serve.deployment(name="OpenAIIngress")
@serve.ingress(api)
class OpenAIIngress:
    async def __init__(
        self,
        model_server: DeploymentHandle,
        config: dict[str, Any],
        embedding_server: DeploymentHandle | None = None,
    ) -> None:
        self.config = ServingConfig(**config)
        self.model_server = model_server
        self.embedding_server = embedding_server
        self.reader = RegistryReader(self.config.mlflow_uri, self.config.model_name)
        self.directory = ModelDirectory(
            self.config.model_name, self.config.aliases, self.reader, self._warm
        )
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _warm(self, version: str) -> dict[str, Any]:
        return await self.model_server.options(multiplexed_model_id=version).load.remote()

    async def _poll(self) -> None:
        while True:
            try:
                await self.directory.refresh()
            except Exception:
                logger.exception("refreshing the model aliases failed")
            await asyncio.sleep(self.config.refresh_seconds)

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "model": self.config.model_name,
            "serving": self.directory.serving,
            "registry_reachable": self.directory.reachable,
        }

    @api.get("/v1/models")
    async def list_models(self) -> dict[str, Any]:
        return {"object": "list", "data": self.directory.listing()}

    @api.get("/v1/models/{model:path}")
    async def get_model(self, model: str) -> JSONResponse:
        for entry in self.directory.listing():
            if entry["id"] == model:
                return JSONResponse(entry)
        return oa.model_not_found(model, self.directory.examples()).response()

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        return await self._complete(request, "chat")

    @api.post("/v1/completions")
    async def completions(self, request: Request):
        return await self._complete(request, "text")

    @api.post("/v1/embeddings")
    async def embeddings(self, request: Request):
        route = "/v1/embeddings"
        try:
            if self.embedding_server is None:
                raise oa.OpenAIError(404, "This server has no embedding model.", code=None)
            body = await _body(request, oa.EmbeddingRequest)
            served = embedding_model_name(self.config.embedding_model)
            if body.model not in (served, served.rsplit("/", 1)[-1]):
                raise oa.model_not_found(body.model, [served])
            try:
                result = await self.embedding_server.embed.remote(body.texts)
            except BackPressureError:
                raise oa.overloaded(
                    "Too many embedding requests are queued: retry later."
                ) from None
            except Exception:
                logger.exception("embedding server failed")
                raise oa.internal_error() from None
            body.check_dimensions(result["dimension"])
            payload = oa.embedding_response(
                result["model"], result["vectors"], result["prompt_tokens"], body.encoding_format
            )
        except oa.OpenAIError as error:
            _count(route, None, error.status, error.code or error.type)
            return error.response()
        _count(route, None, 200, None)
        return JSONResponse(payload)

    async def _complete(self, request: Request, kind: str):
        route = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
        version = None
        try:
            body = await _body(
                request, oa.ChatCompletionRequest if kind == "chat" else oa.CompletionRequest
            )
            resolved = await self.directory.resolve(body.model)
            version = resolved.version
            work, plan = _work(kind, body)
            stream = self.model_server.options(
                multiplexed_model_id=version, stream=True
            ).generate.remote(work)
            first = await _first_events(stream)
            shape = replies.ResponseShape(kind, resolved.model, version)
            headers = {oa.VERSION_HEADER: version, oa.REPLICA_HEADER: first[0].get("replica", "")}
            choices = len(work["prompts"]) * body.n
            if body.stream:
                events = _sse(shape, first, stream, choices, body, plan)
                response = StreamingResponse(
                    events,
                    media_type="text/event-stream",
                    headers={**headers, "Cache-Control": "no-cache"},
                )
            else:
                payload = await _collect(shape, first, stream, choices, plan)
                response = JSONResponse(payload, headers=headers)
        except oa.OpenAIError as error:
            _count(route, version, error.status, error.code or error.type)
            return error.response()
        _count(route, version, 200, None)
        return response
