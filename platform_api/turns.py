"""A chat turn: the user's message in, the assistant's answer streamed from serving.

Order of events, and why no answer is ever lost:
1. `open_turn` commits the user message and an empty assistant message
   (`status="streaming"`) before serving is called.
2. The turn runs as a task owned by the app (`TurnRunner`), not by the HTTP request. It
   reads serving's stream, hands each piece to the client through a queue, and writes
   what it has to the assistant message every few pieces.
3. It ends in exactly one of three ways, each saving everything received so far:
   `complete` (serving finished; token counts, model version and latency recorded),
   `failed` (serving broke off or could not be reached; the error is recorded), or
   `partial` (the turn was cancelled: the client disconnected, or the user pressed
   stop). The response object cancels the turn when the HTTP exchange ends for any
   reason, so a vanished client cannot leave a turn running, and the final write is
   shielded from that cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Engine, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from platform_api.errors import ApiError
from platform_api.models import Chat, Message, User, utcnow
from platform_api.schemas import MessagePublic
from platform_api.serving import READ_TIMEOUT_S, ServingError, http_client, stream_chat

log = logging.getLogger("platform_api.turns")

# A live turn writes its message at least once per piece-gap, and serving must send a
# piece within READ_TIMEOUT_S; older than this, a `streaming` answer has no turn left.
ABANDONED_AFTER = timedelta(seconds=READ_TIMEOUT_S + 60)
HISTORY_MESSAGES = 40  # earlier messages sent to serving as context
SAVE_EVERY_PIECES = 16  # write the growing answer to the database this often...
SAVE_EVERY_S = 1.0  # ...or after this long, whichever comes first
TONE_INSTRUCTIONS = {
    "neutral": "",
    "friendly": "Answer in a warm, friendly tone.",
    "formal": "Answer in a formal, precise tone.",
    "concise": "Answer as briefly as the question allows.",
}


@dataclass
class OpenedTurn:
    user_message: MessagePublic
    assistant_message: MessagePublic
    serving_request: dict


def open_turn(session: Session, user: User, chat: Chat, content: str) -> OpenedTurn:
    """Commit the user's message and an empty assistant message; build serving's request.
    One answer streams per chat at a time (409 otherwise)."""
    _fail_abandoned_answers(session, chat.id)
    # The last sequence number is read before the check for a streaming answer: a
    # concurrent send then either shows up in the check or collides on (chat_id, seq).
    last = session.exec(select(func.max(Message.seq)).where(Message.chat_id == chat.id)).one()
    seq = (last or 0) + 1
    if session.exec(
        select(Message.id).where(Message.chat_id == chat.id, Message.status == "streaming")
    ).first():
        raise _busy()
    context = context_messages(session, chat, seq)
    now = utcnow()
    asked = Message(chat_id=chat.id, seq=seq, role="user", content=content, created_at=now)
    answer = Message(chat_id=chat.id, seq=seq + 1, role="assistant", status="streaming")
    session.add_all([asked, answer])
    session.exec(update(Chat).where(Chat.id == chat.id).values(updated_at=now))
    try:
        session.commit()
    except IntegrityError:  # another message took these sequence numbers first
        session.rollback()
        raise _busy() from None
    messages = [*context, {"role": "user", "content": content}]
    return OpenedTurn(
        user_message=MessagePublic.model_validate(asked),
        assistant_message=MessagePublic.model_validate(answer),
        serving_request={
            "model": chat.model_alias,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": chat.temperature,
            "max_tokens": chat.max_tokens,
            "user": user.id,
        },
    )


def context_messages(session: Session, chat: Chat, before_seq: int) -> list[dict]:
    """What the model sees before message `before_seq`: the chat's system prompt (with its
    tone) and the last HISTORY_MESSAGES non-empty messages, in OpenAI's message format."""
    history = list(
        session.exec(
            select(Message)
            .where(Message.chat_id == chat.id, Message.seq < before_seq, Message.content != "")
            .order_by(Message.seq.desc())
            .limit(HISTORY_MESSAGES)
        )
    )[::-1]
    system = "\n\n".join(p for p in (chat.system_prompt, TONE_INSTRUCTIONS[chat.tone]) if p)
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": m.role, "content": m.content} for m in history]


def _fail_abandoned_answers(session: Session, chat_id: str) -> None:
    """An answer still `streaming` long after any live turn would have written to it was
    abandoned by an API process that died: mark it failed (its saved text is kept) so
    the chat is not blocked for ever."""
    session.exec(
        update(Message)
        .where(
            Message.chat_id == chat_id,
            Message.status == "streaming",
            Message.updated_at < utcnow() - ABANDONED_AFTER,
        )
        .values(status="failed", error="the API process stopped while this answer streamed")
    )
    session.commit()


def _busy() -> ApiError:
    return ApiError(
        409, "chat_busy", "an answer is still streaming in this chat: wait for it or stop it"
    )


@dataclass
class Turn:
    """One running answer. `events` carries ("delta", text), then ("done" | "failed",
    MessagePublic), then None."""

    opened: OpenedTurn
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    task: asyncio.Task | None = None
    cancel_reason: str = "the client disconnected"

    @property
    def message_id(self) -> str:
        return self.opened.assistant_message.id

    def cancel(self, reason: str) -> None:
        if self.task is not None and not self.task.done():
            self.cancel_reason = reason
            self.task.cancel()


class TurnRunner:
    """Owns the running turns of this process and their HTTP client to serving."""

    def __init__(self, engine: Engine, serving_base_url: str) -> None:
        self.engine = engine
        self.serving_base_url = serving_base_url
        self.client = http_client()
        self.running: dict[str, Turn] = {}

    def start(self, opened: OpenedTurn) -> Turn:
        turn = Turn(opened)
        turn.task = asyncio.get_running_loop().create_task(self._run(turn))
        self.running[turn.message_id] = turn
        return turn

    async def stop(self, message_id: str, reason: str) -> bool:
        """Cancel a running turn and wait until its partial answer is saved."""
        turn = self.running.get(message_id)
        if turn is None:
            return False
        turn.cancel(reason)
        await asyncio.wait([turn.task])
        return True

    async def aclose(self) -> None:
        for turn in list(self.running.values()):
            turn.cancel("the platform API shut down")
        tasks = [t.task for t in self.running.values()]
        if tasks:
            await asyncio.wait(tasks)
        await self.client.aclose()

    async def _run(self, turn: Turn) -> None:
        started = time.monotonic()
        pieces: list[str] = []
        model: str | None = None
        tokens: dict[str, int | None] = {"prompt_tokens": None, "completion_tokens": None}
        unsaved, saved_at = 0, started
        chunks = stream_chat(self.client, self.serving_base_url, turn.opened.serving_request)
        try:
            # aclosing: however the loop ends, the connection to serving closes now, so
            # serving stops generating for a turn nobody reads any more.
            async with aclosing(chunks):
                async for chunk in chunks:
                    model = model or chunk.model
                    if chunk.prompt_tokens is not None or chunk.completion_tokens is not None:
                        tokens = {
                            "prompt_tokens": chunk.prompt_tokens,
                            "completion_tokens": chunk.completion_tokens,
                        }
                    if not chunk.text:
                        continue
                    pieces.append(chunk.text)
                    turn.events.put_nowait(("delta", chunk.text))
                    unsaved += 1
                    if unsaved >= SAVE_EVERY_PIECES or time.monotonic() - saved_at >= SAVE_EVERY_S:
                        await asyncio.to_thread(self._save, turn, content="".join(pieces))
                        unsaved, saved_at = 0, time.monotonic()
            final = await asyncio.to_thread(
                self._save,
                turn,
                content="".join(pieces),
                status="complete",
                model_version=model,
                latency_ms=int((time.monotonic() - started) * 1000),
                **tokens,
            )
            turn.events.put_nowait(("done", final))
        except asyncio.CancelledError:
            # Shielded: a second cancellation (shutdown) must not lose the partial answer.
            final = await asyncio.shield(
                asyncio.to_thread(
                    self._save,
                    turn,
                    content="".join(pieces),
                    status="partial",
                    error=f"stopped: {turn.cancel_reason}",
                    model_version=model,
                    latency_ms=int((time.monotonic() - started) * 1000),
                )
            )
            turn.events.put_nowait(("done", final))
            raise
        except Exception as error:
            if not isinstance(error, ServingError):
                log.exception("chat turn %s failed", turn.message_id)
            reason = str(error) if isinstance(error, ServingError) else "internal error"
            final = await asyncio.to_thread(
                self._save,
                turn,
                content="".join(pieces),
                status="failed",
                error=reason,
                model_version=model,
                latency_ms=int((time.monotonic() - started) * 1000),
            )
            turn.events.put_nowait(("failed", final))
        finally:
            turn.events.put_nowait(None)
            self.running.pop(turn.message_id, None)

    def _save(self, turn: Turn, **values) -> MessagePublic:
        with Session(self.engine, expire_on_commit=False) as session:
            # Only while streaming: a periodic save that lands after the final one is a no-op.
            session.exec(
                update(Message)
                .where(Message.id == turn.message_id, Message.status == "streaming")
                .values(updated_at=utcnow(), **values)
            )
            session.commit()
            return MessagePublic.model_validate(session.get(Message, turn.message_id))
