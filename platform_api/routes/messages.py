"""Messages of a chat: list them; send one and receive the answer as server-sent events;
stop an answer that is streaming; rate an answer (thumbs up/down with a comment).

`POST /chats/{id}/messages` answers `text/event-stream`:
- `event: start`  — `{"user_message": {...}, "assistant_message": {...}}` (both saved)
- `event: delta`  — `{"content": "<next piece of the answer>"}`, repeated
- `event: done`   — the saved assistant message (`status` complete, or partial if stopped)
- `event: failed` — the saved assistant message (`status` failed, `error` says why)
If serving fails before the first piece, the answer is instead a JSON 502 whose
`message` is the saved, failed assistant message.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from platform_api.deps import CurrentUser, SessionDep
from platform_api.errors import ApiError, not_found
from platform_api.models import Message, MessageFeedback, utcnow
from platform_api.routes.chats import chat_messages, owned_chat
from platform_api.schemas import FeedbackPublic, FeedbackSet, MessageCreate, MessagePublic
from platform_api.turns import Turn, TurnRunner, open_turn

router = APIRouter(prefix="/chats/{chat_id}/messages", tags=["messages"])


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


class TurnStream(StreamingResponse):
    """The turn's events as SSE. However the HTTP exchange ends, the turn is cancelled if
    it is still running (a disconnected client), which saves the partial answer."""

    def __init__(self, turn: Turn, first_event) -> None:
        self.turn = turn
        super().__init__(
            self._events(first_event),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _events(self, event):
        opened = self.turn.opened
        yield sse(
            "start",
            {
                "user_message": opened.user_message.model_dump(mode="json"),
                "assistant_message": opened.assistant_message.model_dump(mode="json"),
            },
        )
        while event is not None:
            kind, payload = event
            if kind == "delta":
                yield sse("delta", {"content": payload})
            else:
                yield sse(kind, payload.model_dump(mode="json"))
            event = await self.turn.events.get()

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.turn.cancel("the client disconnected")


@router.get("", response_model=list[MessagePublic])
def list_messages(chat_id: str, user: CurrentUser, session: SessionDep) -> list[Message]:
    return chat_messages(session, owned_chat(session, user, chat_id).id)


@router.post(
    "",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "The answer, as SSE."},
        502: {"description": "Serving failed before answering; the failed message is saved."},
    },
)
async def send_message(
    chat_id: str, body: MessageCreate, request: Request, user: CurrentUser, session: SessionDep
):
    chat = await run_in_threadpool(owned_chat, session, user, chat_id)
    opened = await run_in_threadpool(open_turn, session, user, chat, body.content)
    runner: TurnRunner = request.app.state.turns
    turn = runner.start(opened)
    first = await turn.events.get()
    if first is not None and first[0] == "failed":
        failed: MessagePublic = first[1]
        return JSONResponse(
            {
                "detail": f"serving failed before answering: {failed.error}",
                "code": "serving_failed",
                "message": failed.model_dump(mode="json"),
            },
            status_code=502,
        )
    return TurnStream(turn, first)


@router.post("/{message_id}/stop", response_model=MessagePublic)
async def stop_message(
    chat_id: str, message_id: str, request: Request, user: CurrentUser, session: SessionDep
) -> Message:
    """Stop a streaming answer; what was received is kept (status partial)."""
    message = await run_in_threadpool(_owned_message, session, user, chat_id, message_id)
    runner: TurnRunner = request.app.state.turns
    if not await runner.stop(message.id, "stopped by the user"):
        raise ApiError(409, "not_streaming", "this answer is not streaming in this API process")
    await run_in_threadpool(session.refresh, message)
    return message


def _owned_message(session, user, chat_id: str, message_id: str) -> Message:
    chat = owned_chat(session, user, chat_id)
    message = session.exec(
        select(Message).where(Message.id == message_id, Message.chat_id == chat.id)
    ).first()
    if message is None:
        raise not_found("message")
    return message


# -- feedback ---------------------------------------------------------------------------------
def _rated_answer(session, user, chat_id: str, message_id: str) -> Message:
    message = _owned_message(session, user, chat_id, message_id)
    if message.role != "assistant":
        raise ApiError(400, "not_an_answer", "only the assistant's answers take feedback")
    if message.status == "streaming":
        raise ApiError(409, "still_streaming", "wait until the answer has finished streaming")
    return message


@router.put("/{message_id}/feedback", response_model=FeedbackPublic)
def set_feedback(
    chat_id: str, message_id: str, body: FeedbackSet, user: CurrentUser, session: SessionDep
) -> MessageFeedback:
    """Thumbs up or down on an answer, with an optional comment; setting it again changes it."""
    message = _rated_answer(session, user, chat_id, message_id)
    for attempt in range(2):  # a concurrent first rating wins the insert: update it instead
        feedback = session.get(MessageFeedback, message.id) or MessageFeedback(
            message_id=message.id, user_id=user.id, rating=body.rating
        )
        feedback.rating, feedback.comment, feedback.updated_at = body.rating, body.comment, utcnow()
        session.add(feedback)
        try:
            session.commit()
            break
        except IntegrityError:
            session.rollback()
            if attempt:
                raise
    session.refresh(feedback)
    return feedback


@router.delete("/{message_id}/feedback", status_code=204)
def delete_feedback(
    chat_id: str, message_id: str, user: CurrentUser, session: SessionDep
) -> Response:
    message = _owned_message(session, user, chat_id, message_id)
    feedback = session.get(MessageFeedback, message.id)
    if feedback is None:
        raise not_found("feedback")
    session.delete(feedback)
    session.commit()
    return Response(status_code=204)
