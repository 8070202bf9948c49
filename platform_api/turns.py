"""A chat turn: the user's message in, the assistant's answer streamed from serving.

Order of events, and why no answer is ever lost:
1. `open_turn` (send), `open_regeneration` (answer the last question again) and
   `open_edit` (ask an edited question instead) commit the question, an empty assistant
   message (`status="streaming"`) and the superseding of the messages they replace,
   before serving is called. Superseded messages stay in the database (feedback, the
   data export) but leave the chat, its history and everything that shows it.
2. The turn runs as a task owned by the app (`TurnRunner`), not by the HTTP request. It
   reads serving's stream, hands each piece to the client through a queue, and writes
   what it has to the assistant message every few pieces.
3. It ends in exactly one of three ways, each saving everything received so far:
   `complete` (serving finished; token counts, model version and latency recorded),
   `failed` (serving broke off or could not be reached; the error is recorded), or
   `partial` (the turn was cancelled: the client disconnected, or the user pressed
   stop). The response object (or the WebSocket) cancels the turn when the exchange
   ends for any reason, so a vanished client cannot leave a turn running, and the final
   write is shielded from that cancellation.

Metering (metering.py, as for the gateway): `_open` checks the token limits and reserves
the most the answer can cost in the same transaction as the messages (402
`insufficient_credits` or 429 `token_limit` write nothing); the final write settles the
reservation in one transaction with the answer, whose `credits` is what it cost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from orchard.knowledge.embeddings import EmbeddingModelError
from orchard.knowledge.vectors import VectorStoreError
from orchard.settings import Settings
from platform_api.access import chat_route
from platform_api.chat_knowledge import (
    KnowledgeScope,
    fit_sources,
    knowledge_scope,
    question_of,
    retrieve,
    source_reservation,
    with_sources,
)
from platform_api.credits import InsufficientCredits
from platform_api.errors import ApiError, not_found
from platform_api.knowledge import Knowledge
from platform_api.memory import with_memories
from platform_api.metering import (
    Pricing,
    Reservation,
    Usage,
    prompt_token_bound,
    record_usage,
    reserve,
)
from platform_api.models import Chat, Message, User, utcnow
from platform_api.plans import grant_due
from platform_api.schemas import MessagePublic
from platform_api.serving import (
    READ_TIMEOUT_S,
    Serving,
    ServingError,
    fit_max_tokens,
    stream_chat,
)

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
    # The credits reserved for the answer (metering.py), settled when the turn ends.
    reservation: Reservation | None = None
    pricing: Pricing | None = None
    # The knowledge bases the turn retrieves from (chat_knowledge.py); None: none.
    knowledge: KnowledgeScope | None = None


# (the message named, the last visible one) -> (the question, supersede from seq)
Choose = Callable[[Message | None, Message | None], tuple[Message | str, int | None]]


def open_turn(
    session: Session, settings: Settings, user: User, chat: Chat, content: str
) -> OpenedTurn:
    """Send: a new user message with `content`, and its answer."""
    return _open(session, settings, user, chat, None, lambda target, last: (content, None))


def open_regeneration(
    session: Session, settings: Settings, user: User, chat: Chat, message_id: str
) -> OpenedTurn:
    """Regenerate: the chat's last answer (`message_id`, any status but streaming) is
    superseded, and the user message it answered is answered again."""

    def choose(answer: Message, last: Message | None) -> tuple[Message, int]:
        if answer.role != "assistant" or last is None or last.id != answer.id:
            raise ApiError(409, "not_last_answer", "only the chat's last answer can be regenerated")
        question = session.exec(
            _visible(chat.id)
            .where(Message.seq < answer.seq, Message.role == "user")
            .order_by(Message.seq.desc())
        ).first()
        if question is None:
            raise ApiError(409, "no_question", "this answer has no question to answer again")
        return question, answer.seq

    return _open(session, settings, user, chat, message_id, choose)


def open_edit(
    session: Session, settings: Settings, user: User, chat: Chat, message_id: str, content: str
) -> OpenedTurn:
    """Edit and resend: the user message `message_id` and every later message are
    superseded; `content` is asked as a new user message and answered."""

    def choose(question: Message, last: Message | None) -> tuple[str, int]:
        if question.role != "user":
            raise ApiError(409, "not_a_question", "only the user's own messages can be edited")
        return content, question.seq

    return _open(session, settings, user, chat, message_id, choose)


def _open(
    session: Session,
    settings: Settings,
    user: User,
    chat: Chat,
    message_id: str | None,
    choose: Choose,
) -> OpenedTurn:
    """Commit the question (a new user message, or the existing one answered again), an
    empty assistant message and the superseding of what the turn replaces; build serving's
    request. One answer streams per chat at a time (409 otherwise).

    `choose(target, last)` gets the message named by `message_id` (None for a plain send)
    and the chat's last visible message, and returns the question (a message, or the text
    of a new one) and the sequence number from which the visible messages are superseded
    (None: nothing is).

    The chat's model is checked again (an access rule may have gone since it was set)
    and the A/B split picks the alias serving is asked for (`access.chat_route`)."""
    alias, variant = chat_route(session, settings, user, chat)
    _fail_abandoned_answers(session, chat.id)
    grant_due(session, user)  # this month's plan credits, before the turn is priced
    # The last sequence number is read before the check for a streaming answer: a
    # concurrent send then either shows up in the check or collides on (chat_id, seq).
    last_seq = session.exec(select(func.max(Message.seq)).where(Message.chat_id == chat.id)).one()
    seq = (last_seq or 0) + 1
    target = None
    if message_id is not None:
        target = session.exec(
            select(Message).where(Message.id == message_id, Message.chat_id == chat.id)
        ).first()
        if target is None:
            raise not_found("message")
    if session.exec(
        select(Message.id).where(Message.chat_id == chat.id, Message.status == "streaming")
    ).first():
        raise _busy()
    if target is not None and target.superseded_at is not None:
        raise ApiError(
            409, "message_superseded", "this message was replaced: use the chat's current one"
        )
    last = session.exec(_visible(chat.id).order_by(Message.seq.desc())).first()
    question, supersede_from = choose(target, last)
    now = utcnow()
    if supersede_from is not None:
        session.exec(
            update(Message)
            .where(
                Message.chat_id == chat.id,
                Message.seq >= supersede_from,
                Message.superseded_at.is_(None),
            )
            .values(superseded_at=now)
        )
    context = context_messages(session, chat, seq if isinstance(question, str) else question.seq)
    pricing = Pricing.from_settings(settings)
    text = question if isinstance(question, str) else question.content
    context = with_memories(session, settings, user, context, text)  # memory.py
    knowledge = knowledge_scope(session, user, chat)
    reserved = [*context, {"content": text}, *source_reservation(knowledge)]
    reservation = _reserve(session, user, chat, pricing, reserved)
    session.exec(update(Chat).where(Chat.id == chat.id).values(updated_at=now))
    if isinstance(question, str):
        question = Message(chat_id=chat.id, seq=seq, role="user", content=question, created_at=now)
        session.add(question)
        seq += 1
    answer = Message(
        chat_id=chat.id,
        seq=seq,
        role="assistant",
        status="streaming",
        variant=variant,
        created_at=now,
    )
    session.add(answer)
    try:
        session.commit()
    except IntegrityError:  # another message took these sequence numbers first
        session.rollback()
        raise _busy() from None
    messages = [*context, {"role": "user", "content": question.content}]
    return OpenedTurn(
        user_message=MessagePublic.model_validate(question),
        assistant_message=MessagePublic.model_validate(answer),
        reservation=reservation,
        pricing=pricing,
        knowledge=knowledge,
        serving_request={
            "model": alias,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": chat.temperature,
            "max_tokens": chat.max_tokens,
            "user": user.id,
        },
    )


def turn_bound(chat: Chat, messages: list[dict]) -> tuple[int, int]:
    """The most prompt and completion tokens a turn sending `messages` can use."""
    return prompt_token_bound([m["content"] for m in messages]), chat.max_tokens


def _reserve(
    session: Session, user: User, chat: Chat, pricing: Pricing, messages: list[dict]
) -> Reservation:
    """Check the token limits and reserve the most the answer can cost, in the turn's
    transaction: a refusal rolls back everything `_open` did, so no message is written
    and the client still has the user's text to send again."""
    prompt, completion = turn_bound(chat, messages)
    try:
        return reserve(
            session, user, None, pricing, prompt, completion, f"chat {chat.id}", commit=False
        )
    except InsufficientCredits as error:
        session.rollback()
        raise ApiError(
            402,
            "insufficient_credits",
            f"this answer may cost up to {error.amount} credits and the balance is "
            f"{error.balance}: lower the chat's max_tokens, shorten the message, or ask an "
            "administrator for credits",
        ) from None
    except Exception:
        session.rollback()
        raise


def _visible(chat_id: str):
    """The chat's messages that nothing superseded: what the chat shows."""
    return select(Message).where(Message.chat_id == chat_id, Message.superseded_at.is_(None))


def context_messages(
    session: Session, chat: Chat, before_seq: int, as_of: datetime | None = None
) -> list[dict]:
    """What the model sees before message `before_seq`: the chat's system prompt (with its
    tone) and the last HISTORY_MESSAGES non-empty messages, in OpenAI's message format.
    Superseded messages are left out; with `as_of` (when a past answer was made), only
    those superseded by then are, which is what that answer's model saw."""
    shown = Message.superseded_at.is_(None)
    if as_of is not None:
        shown = or_(shown, Message.superseded_at > as_of)
    history = list(
        session.exec(
            select(Message)
            .where(
                Message.chat_id == chat.id,
                Message.seq < before_seq,
                Message.content != "",
                shown,
            )
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

    async def frames(self, first: tuple | None = ...) -> AsyncIterator[tuple[str, dict]]:
        """What a client is sent (over SSE or a WebSocket), as (event, JSON data): `start`
        with both saved messages, `delta` pieces, then `done` or `failed` with the saved
        answer. `first` is an event the caller already took from `events`."""
        opened = self.opened
        yield (
            "start",
            {
                "user_message": opened.user_message.model_dump(mode="json"),
                "assistant_message": opened.assistant_message.model_dump(mode="json"),
            },
        )
        event = await self.events.get() if first is ... else first
        while event is not None:
            kind, payload = event
            if kind == "delta":
                yield kind, {"content": payload}
            elif kind == "citations":
                yield kind, {"citations": payload}
            else:
                yield kind, payload.model_dump(mode="json")
            event = await self.events.get()


class TurnRunner:
    """Owns the running turns of this process; reaches serving through the app's `Serving`
    (which it does not close: the app does, after `aclose`)."""

    def __init__(
        self,
        engine: Engine,
        serving: Serving,
        knowledge: Knowledge | None = None,
        after_turn: Callable[[OpenedTurn], None] | None = None,
    ) -> None:
        self.engine = engine
        self.serving = serving
        self.knowledge = knowledge
        self.running: dict[str, Turn] = {}
        # Called in a worker thread once a turn is answered (memory.py: remember facts),
        # after the client's stream has ended; the turn counts as running until it returns.
        self.after_turn = after_turn

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

    async def _run(self, turn: Turn) -> None:
        started = time.monotonic()
        pieces: list[str] = []
        model: str | None = None
        tokens: dict[str, int | None] = {"prompt_tokens": None, "completion_tokens": None}
        unsaved, saved_at = 0, started
        answered = False
        request = turn.opened.serving_request
        try:
            context = await self.serving.contexts.get(request["model"])
            request = await self._with_sources(turn, request, context)
            bound = prompt_token_bound([m["content"] for m in request["messages"]])
            request = fit_max_tokens(request, bound, context)
            chunks = stream_chat(self.serving.client, self.serving.base_url, request)
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
            if tokens["completion_tokens"] is not None:
                billed = (tokens["prompt_tokens"] or 0, tokens["completion_tokens"])
            else:
                billed = (0, len(pieces))  # no usage from serving: what was received
            final = await asyncio.to_thread(
                self._finish,
                turn,
                billed,
                content="".join(pieces),
                status="complete",
                model_version=model,
                latency_ms=int((time.monotonic() - started) * 1000),
                **tokens,
            )
            turn.events.put_nowait(("done", final))
            answered = True
        except asyncio.CancelledError:
            # Shielded: a second cancellation (shutdown) must not lose the partial answer.
            final = await asyncio.shield(
                asyncio.to_thread(
                    self._finish,
                    turn,
                    (0, len(pieces)),
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
                self._finish,
                turn,
                (0, len(pieces)),
                content="".join(pieces),
                status="failed",
                error=reason,
                model_version=model,
                latency_ms=int((time.monotonic() - started) * 1000),
            )
            turn.events.put_nowait(("failed", final))
        finally:
            turn.events.put_nowait(None)
            try:
                if answered and self.after_turn is not None:
                    await self._after_turn(turn)
            finally:
                self.running.pop(turn.message_id, None)

    async def _after_turn(self, turn: Turn) -> None:
        """`after_turn` in a worker thread, run to its end even when the turn is cancelled
        meanwhile (the response cancels it once the client has the whole answer)."""
        work = asyncio.ensure_future(asyncio.to_thread(self.after_turn, turn.opened))
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            await work
            raise

    async def _with_sources(self, turn: Turn, request: dict, context: int | None) -> dict:
        """Retrieve from the chat's knowledge, fit the passages into the context, save
        them as the answer's citations and send them to the client, and quote them in
        serving's request (chat_knowledge.py)."""
        scope = turn.opened.knowledge
        if scope is None or self.knowledge is None:
            return request
        try:
            hits = await asyncio.to_thread(retrieve, self.knowledge, scope, question_of(request))
        except (VectorStoreError, EmbeddingModelError) as error:
            log.warning("chat turn %s answers without sources: %s", turn.message_id, error)
            return request
        citations = fit_sources(hits, request["messages"], request["max_tokens"], context)
        if not citations:
            return request
        await asyncio.to_thread(self._save, turn, citations=citations)
        turn.events.put_nowait(("citations", citations))
        return with_sources(request, citations)

    def _finish(self, turn: Turn, billed: tuple[int, int], **values) -> MessagePublic:
        """The final save, with the settlement of the turn's reservation in the same
        transaction (the gateway's rules: a finished answer is billed from serving's
        usage, a partial or failed one for the pieces received and no prompt), and what
        it cost on the answer."""
        opened = turn.opened
        if opened.reservation is None or opened.pricing is None:
            return self._save(turn, **values)
        usage = Usage(
            model=opened.serving_request["model"],
            model_version=values.get("model_version"),
            status=values["status"],
            prompt_tokens=billed[0],
            completion_tokens=billed[1],
            latency_ms=values.get("latency_ms") or 0,
        )
        with Session(self.engine, expire_on_commit=False) as session:
            record = record_usage(session, opened.pricing, opened.reservation, usage, "chat")
            final = self._save(turn, session, credits=record.credits, **values)
        final.cost_usd = opened.pricing.usd(final.credits)
        return final

    def _save(self, turn: Turn, session: Session | None = None, **values) -> MessagePublic:
        if session is None:
            with Session(self.engine, expire_on_commit=False) as session:
                return self._save(turn, session, **values)
        # Only while streaming: a periodic save that lands after the final one is a no-op.
        session.exec(
            update(Message)
            .where(Message.id == turn.message_id, Message.status == "streaming")
            .values(updated_at=utcnow(), **values)
        )
        session.commit()
        return MessagePublic.model_validate(session.get(Message, turn.message_id))
