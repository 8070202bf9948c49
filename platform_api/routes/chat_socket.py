"""A chat over a WebSocket, `GET /api/v1/chats/{chat_id}/ws`: the same turns as the SSE
endpoints, in JSON frames both ways.

The credential travels in the first frame, never in the URL (which lands in logs):

    client: {"type": "auth", "token": "<access token or orch_… API key>"}
    server: {"type": "ready", "chat_id": "…"}
    client: {"type": "send", "content": "…"}
            {"type": "regenerate", "message_id": "<the last answer>"}
            {"type": "edit", "message_id": "<a user message>", "content": "…"}
            {"type": "stop"}
            {"type": "auth", "token": "…"}            (a fresh token, any time)
    server: {"type": "start" | "citations" | "delta" | "done" | "failed", …the SSE event's data}
            {"type": "error", "status": 409, "code": "chat_busy", "detail": "…"}

Every action frame is checked like an HTTP request: the credential against the database
(a ban, a logout, a revoked key or an expired token take effect at the next frame), the
chat's ownership, and the rate limits of the client IP and of the user or API key. A
failed credential or ownership check sends an `error` frame and closes the connection
with code 4000 + the HTTP status (4401, 4403, 4404); anything else (409 `chat_busy`, 422,
429 …) is an `error` frame and the connection stays open. When serving fails before the
first piece the client gets `start` then `failed` (SSE answers a 502 instead). A client
that goes away mid-answer leaves the partial answer saved, as over SSE.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlmodel import Session

from platform_api.chats import owned_chat
from platform_api.deps import authenticate
from platform_api.errors import ApiError, invalid_request_body, unauthorized
from platform_api.models import Chat, User
from platform_api.ratelimit import limit_ip
from platform_api.request_limits import body_problem, too_large
from platform_api.schemas import (
    SOCKET_FRAMES,
    SocketAuth,
    SocketEdit,
    SocketRegenerate,
    SocketSend,
    SocketStop,
)
from platform_api.schemas import Request as ClientFrame
from platform_api.turns import OpenedTurn, Turn, TurnRunner, open_edit, open_regeneration, open_turn

AUTH_TIMEOUT_S = 10.0  # to send the auth frame after connecting
# What Starlette raises when sending to a socket the client has left.
GONE = (WebSocketDisconnect, RuntimeError)
AUTH_FIRST = 'authenticate first: send {"type": "auth", "token": "<access token or API key>"}'

router = APIRouter(tags=["messages"])


@router.websocket("/chats/{chat_id}/ws")
async def chat_socket(websocket: WebSocket, chat_id: str) -> None:
    await websocket.accept()
    await ChatSocket(websocket, chat_id).serve()


class Closing(Exception):
    """Ends the connection: an error frame, then a close with 4000 + the status."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.detail)
        self.error = error


class InvalidFrame(Exception):
    def __init__(self, body: dict) -> None:
        super().__init__(body["detail"])
        self.body = body


def _error_body(error: ApiError) -> dict:
    body = {"status": error.status, "code": error.code, "detail": error.detail}
    retry_after = (error.headers or {}).get("Retry-After")
    if retry_after is not None:
        body["retry_after"] = int(retry_after)
    return body


class ChatSocket:
    def __init__(self, websocket: WebSocket, chat_id: str) -> None:
        self.websocket = websocket
        self.chat_id = chat_id
        self.state = websocket.app.state
        self.token = ""
        self.turn: Turn | None = None
        self.forwarding: asyncio.Task | None = None
        self.sending = asyncio.Lock()  # the forwarding task and the reader both send

    async def serve(self) -> None:
        try:
            try:
                first = await asyncio.wait_for(self._frame(), AUTH_TIMEOUT_S)
            except (TimeoutError, InvalidFrame):
                first = None
            if not isinstance(first, SocketAuth):
                raise Closing(unauthorized(AUTH_FIRST))
            await self._handle(first)
            while True:
                try:
                    frame = await self._frame()
                except InvalidFrame as invalid:
                    await self._send({"type": "error", **invalid.body})
                    continue
                await self._handle(frame)
        except WebSocketDisconnect:
            pass
        except Closing as closing:
            await self._close(closing.error)
        finally:
            self._leave()

    # -- frames in ------------------------------------------------------------------------
    async def _frame(self) -> ClientFrame:
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
        text = message.get("text")
        if text is None:
            raise InvalidFrame(self._invalid("send JSON text frames, not binary ones"))
        raw = text.encode()
        settings = self.state.settings
        problem = (
            too_large(settings.request_max_bytes)
            if len(raw) > settings.request_max_bytes
            else body_problem(raw, settings.request_max_json_depth)
        )
        if problem is not None:  # checked before parsing, as request_limits does for HTTP
            raise InvalidFrame(
                {"status": problem.status, "code": problem.code, "detail": problem.detail}
            )
        try:
            data = json.loads(raw)
        except ValueError:
            raise InvalidFrame(self._invalid("the frame is not valid JSON")) from None
        kind = data.get("type") if isinstance(data, dict) else None
        model = SOCKET_FRAMES.get(kind) if isinstance(kind, str) else None
        if model is None:
            kinds = ", ".join(SOCKET_FRAMES)
            raise InvalidFrame(self._invalid(f"a frame is a JSON object with a type: {kinds}"))
        try:
            return model.model_validate(data)
        except ValidationError as error:
            raise InvalidFrame({"status": 422, **invalid_request_body(error.errors())}) from None

    @staticmethod
    def _invalid(detail: str) -> dict:
        return {"status": 422, "code": "invalid_request", "detail": detail}

    async def _handle(self, frame: ClientFrame) -> None:
        if isinstance(frame, SocketAuth):
            self.token = frame.token
            if await self._attempt(self._check) is not None:
                await self._send({"type": "ready", "chat_id": self.chat_id})
        elif isinstance(frame, SocketStop):
            await self._stop()
        else:
            opened = await self._attempt(self._open, frame)
            if opened is not None:
                runner: TurnRunner = self.state.turns
                self.turn = runner.start(opened)
                self.forwarding = asyncio.create_task(self._forward(self.turn))

    async def _attempt(self, step: Callable, *args):
        """Run a blocking step; an ApiError it raises goes to the client as an error frame
        (and the result is None). A Closing passes through."""
        try:
            return await run_in_threadpool(step, *args)
        except ApiError as error:
            await self._send_error(error)
            return None

    # -- the checks of an HTTP request, per action -----------------------------------------
    def _check(self) -> bool:
        """`_caller`'s checks, for frames that open no turn (auth, stop)."""
        with Session(self.state.engine) as session:
            self._caller(session)
        return True

    def _caller(self, session: Session) -> tuple[User, Chat]:
        """The client IP's rate limit, the credential (ban, revocation, expiry) and its
        rate limit, and the chat's ownership, as an HTTP request to the chat checks them.
        A refused credential or chat closes the connection; a rate limit does not."""
        limit_ip(self.websocket)
        try:
            principal = authenticate(self.websocket, session, self.state.keys, self.token)
            principal.require("chats:write", "the chat WebSocket")
            return principal.user, owned_chat(session, principal.user, self.chat_id)
        except ApiError as error:
            if error.status == 429:
                raise
            raise Closing(error) from None

    def _open(self, frame: SocketSend | SocketRegenerate | SocketEdit) -> OpenedTurn:
        with Session(self.state.engine, expire_on_commit=False) as session:
            user, chat = self._caller(session)
            settings = self.state.settings
            if isinstance(frame, SocketSend):
                return open_turn(session, settings, user, chat, frame.content)
            if isinstance(frame, SocketRegenerate):
                return open_regeneration(session, settings, user, chat, frame.message_id)
            return open_edit(session, settings, user, chat, frame.message_id, frame.content)

    async def _stop(self) -> None:
        if await self._attempt(self._check) is None:
            return
        turn = self.turn
        runner: TurnRunner = self.state.turns
        if turn is None or not await runner.stop(turn.message_id, "stopped by the user"):
            await self._send_error(
                ApiError(409, "not_streaming", "no answer is streaming on this connection")
            )
        # the turn's `done` frame (status partial) follows from the forwarding task

    # -- frames out -----------------------------------------------------------------------
    async def _forward(self, turn: Turn) -> None:
        try:
            async for kind, data in turn.frames():
                await self._send({"type": kind, **data})
        except GONE:
            turn.cancel("the client disconnected")  # the partial answer is saved

    async def _send(self, frame: dict) -> None:
        async with self.sending:
            await self.websocket.send_text(json.dumps(frame, ensure_ascii=False))

    async def _send_error(self, error: ApiError) -> None:
        await self._send({"type": "error", **_error_body(error)})

    async def _close(self, error: ApiError) -> None:
        try:
            await self._send_error(error)
            await self.websocket.close(code=4000 + error.status, reason=error.code)
        except GONE:
            pass  # the client left first

    def _leave(self) -> None:
        """However the connection ends, a running answer is cancelled, which saves it
        (status partial), as when an SSE client disconnects."""
        if self.forwarding is not None:
            self.forwarding.cancel()
        if self.turn is not None:
            self.turn.cancel("the client disconnected")
