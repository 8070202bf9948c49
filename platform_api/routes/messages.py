"""Messages of a chat: list them; send one and receive the answer as server-sent events;
regenerate the last answer; edit a question and resend it; stop an answer that is
streaming; rate an answer (thumbs up/down with a comment).

`POST /chats/{id}/messages` (and `.../{message_id}/regenerate`, `.../{message_id}/edit`)
answers `text/event-stream`:
- `event: start`  — `{"user_message": {...}, "assistant_message": {...}}` (both saved)
- `event: citations` — `{"citations": [...]}`: the numbered sources retrieved from the
  chat's knowledge (chat_knowledge.py), before the text; only when there are some
- `event: delta`  — `{"content": "<next piece of the answer>"}`, repeated
- `event: done`   — the saved assistant message (`status` complete, or partial if stopped)
- `event: failed` — the saved assistant message (`status` failed, `error` says why)
If serving fails before the first piece, the answer is instead a JSON 502 whose
`message` is the saved, failed assistant message.

A turn is metered like the gateway (`turns.py`, `metering.py`): a balance that cannot
cover the most the answer may cost is a 402 `insufficient_credits`, a token limit it
would pass a 429 `token_limit` with Retry-After; either way nothing is saved. The `done`
event's message carries what the answer cost (`credits`, `cost_usd`);
`POST /chats/{id}/estimate` (routes/credits.py) tells the most before sending.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from platform_api.chats import chat_messages, owned_chat
from platform_api.deps import ChatsReader, ChatsWriter, SessionDep
from platform_api.errors import ApiError, not_found
from platform_api.metering import Pricing
from platform_api.models import Message, MessageFeedback, utcnow
from platform_api.schemas import (
    FeedbackPublic,
    FeedbackSet,
    MessageCreate,
    MessagePublic,
    MessageRating,
)
from platform_api.turns import (
    OpenedTurn,
    Turn,
    TurnRunner,
    open_edit,
    open_regeneration,
    open_turn,
)

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

    async def _events(self, first):
        async for kind, data in self.turn.frames(first):
            yield sse(kind, data)

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.turn.cancel("the client disconnected")


@router.get("", response_model=list[MessagePublic])
def list_messages(
    chat_id: str, request: Request, user: ChatsReader, session: SessionDep
) -> list[MessagePublic]:
    """With the caller's own rating on each answer, so a reloaded chat shows its thumbs,
    and what each answer cost (`credits`, `cost_usd`)."""
    chat = owned_chat(session, user, chat_id)
    ratings = {
        f.message_id: f
        for f in session.exec(
            select(MessageFeedback)
            .join(Message, Message.id == MessageFeedback.message_id)
            .where(Message.chat_id == chat.id, MessageFeedback.user_id == user.id)
        )
    }
    public = [MessagePublic.model_validate(m) for m in chat_messages(session, chat.id)]
    price = Pricing.from_settings(request.app.state.settings)
    for message in public:
        if message.id in ratings:
            message.feedback = MessageRating.model_validate(ratings[message.id])
        message.cost_usd = price.usd(message.credits)
    return public


STREAMED = {
    "response_class": StreamingResponse,
    "responses": {
        200: {"content": {"text/event-stream": {}}, "description": "The answer, as SSE."},
        502: {"description": "Serving failed before answering; the failed message is saved."},
    },
}


@router.post("", **STREAMED)
async def send_message(
    chat_id: str, body: MessageCreate, request: Request, user: ChatsWriter, session: SessionDep
):
    chat = await run_in_threadpool(owned_chat, session, user, chat_id)
    return await _answer(
        request,
        await run_in_threadpool(
            open_turn, session, request.app.state.settings, user, chat, body.content
        ),
    )


@router.post("/{message_id}/regenerate", **STREAMED)
async def regenerate_message(
    chat_id: str, message_id: str, request: Request, user: ChatsWriter, session: SessionDep
):
    """Answer the last question again: `message_id` is the chat's last answer (not one
    still streaming, 409 otherwise). The old answer is superseded (kept, with its
    feedback, but no longer shown); the new one streams like a sent message's."""
    chat = await run_in_threadpool(owned_chat, session, user, chat_id)
    opened = await run_in_threadpool(
        open_regeneration, session, request.app.state.settings, user, chat, message_id
    )
    return await _answer(request, opened)


@router.post("/{message_id}/edit", **STREAMED)
async def edit_message(
    chat_id: str,
    message_id: str,
    body: MessageCreate,
    request: Request,
    user: ChatsWriter,
    session: SessionDep,
):
    """Edit and resend: `message_id` is one of the user's messages in the chat; it and
    every later message are superseded, and `content` is asked and answered instead."""
    chat = await run_in_threadpool(owned_chat, session, user, chat_id)
    opened = await run_in_threadpool(
        open_edit, session, request.app.state.settings, user, chat, message_id, body.content
    )
    return await _answer(request, opened)


async def _answer(request: Request, opened: OpenedTurn):
    """Start the turn; its events as SSE, or a 502 if serving failed before answering."""
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
    chat_id: str, message_id: str, request: Request, user: ChatsWriter, session: SessionDep
) -> MessagePublic:
    """Stop a streaming answer; what was received is kept (status partial)."""
    message = await run_in_threadpool(_owned_message, session, user, chat_id, message_id)
    runner: TurnRunner = request.app.state.turns
    if not await runner.stop(message.id, "stopped by the user"):
        raise ApiError(409, "not_streaming", "this answer is not streaming in this API process")
    await run_in_threadpool(session.refresh, message)
    public = MessagePublic.model_validate(message)
    public.cost_usd = Pricing.from_settings(request.app.state.settings).usd(public.credits)
    return public


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
    chat_id: str, message_id: str, body: FeedbackSet, user: ChatsWriter, session: SessionDep
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
    chat_id: str, message_id: str, user: ChatsWriter, session: SessionDep
) -> Response:
    message = _owned_message(session, user, chat_id, message_id)
    feedback = session.get(MessageFeedback, message.id)
    if feedback is None:
        raise not_found("feedback")
    session.delete(feedback)
    session.commit()
    return Response(status_code=204)
