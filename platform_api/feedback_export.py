"""The answers' feedback as preference data: what `GET /admin/feedback/export` streams and
the `orchard_feedback` DAG turns into a training set (docs/feedback-loop.md).

One JSON line per signal, each with `kind`:
- `rating`: a thumbs up or down, in TRL's unpaired format (KTO): `prompt` (what the model
  saw: system prompt and history), `completion` (the answer), `label` (true for up), the
  `comment`;
- `regeneration`: the user asked for another answer. `rejected` is the replaced answer (a
  weak "rejected": the user did not take it), `chosen` the answer that replaced it, with
  each side's rating when the user gave one;
- `edit`: the user edited the question and sent it again. `completion` is the answer to
  the old question (a weak negative), `edited_question` what the user asked instead.
Every line carries the answering `model_version`, the A/B `variant` ("champion" or
"challenger") and `user`, a pseudonym (a hash of the account id, the same in every export)
so the DAG can cap what one person contributes without learning who it is.

Accounts that turned "use my feedback to improve the model" off, and erased accounts, are
left out entirely: their feedback never leaves the database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from platform_api.models import Chat, Message, MessageFeedback, User
from platform_api.turns import context_messages

KINDS = ("rating", "regeneration", "edit")


def pseudonym(user_id: str) -> str:
    return hashlib.sha256(f"orchard-feedback:{user_id}".encode()).hexdigest()[:16]


def _consenting():
    return (User.feedback_for_training.is_(True)) & (User.deleted_at.is_(None))


def opted_out_accounts(session: Session) -> int:
    """Accounts whose feedback the export leaves out (opted out, not erased)."""
    return session.exec(
        select(func.count())
        .select_from(User)
        .where(User.feedback_for_training.is_(False), User.deleted_at.is_(None))
    ).one()


def _answer(message: Message, rating: MessageFeedback | None) -> dict[str, Any]:
    return {
        "message_id": message.id,
        "content": message.content,
        "model_version": message.model_version,
        "variant": message.variant,
        "rating": rating.rating if rating else None,
        "comment": rating.comment if rating else "",
    }


def ratings(session: Session, rating: str | None = None) -> Iterator[dict[str, Any]]:
    query = (
        select(MessageFeedback, Message, Chat)
        .join(Message, Message.id == MessageFeedback.message_id)
        .join(Chat, Chat.id == Message.chat_id)
        .join(User, User.id == Chat.user_id)
        .where(_consenting())
        .order_by(MessageFeedback.updated_at, MessageFeedback.message_id)
    )
    if rating is not None:
        query = query.where(MessageFeedback.rating == rating)
    for feedback, message, chat in session.exec(query):
        yield {
            "kind": "rating",
            # what the model saw then, even if the chat has moved on since
            "prompt": context_messages(session, chat, message.seq, message.created_at),
            "completion": [{"role": "assistant", "content": message.content}],
            "label": feedback.rating == "up",
            "rating": feedback.rating,
            "comment": feedback.comment,
            "model_version": message.model_version,
            "variant": message.variant,
            "user": pseudonym(chat.user_id),
            "message_id": message.id,
            "chat_id": chat.id,
            "rated_at": feedback.updated_at.isoformat(),
        }


def replacements(session: Session) -> Iterator[dict[str, Any]]:
    """Regenerated answers and answers to edited questions: every superseded, non-empty
    answer, told apart by whether its question was superseded with it (an edit) or not
    (a regeneration)."""
    query = (
        select(Message, Chat)
        .join(Chat, Chat.id == Message.chat_id)
        .join(User, User.id == Chat.user_id)
        .where(
            _consenting(),
            Message.role == "assistant",
            Message.superseded_at.is_not(None),
            Message.status.in_(("complete", "partial")),
            Message.content != "",
        )
        .order_by(Message.superseded_at, Message.id)
    )
    for replaced, chat in session.exec(query):
        later = list(
            session.exec(
                select(Message)
                .where(Message.chat_id == chat.id, Message.seq > replaced.seq)
                .order_by(Message.seq)
            )
        )
        edited = next(
            (m for m in later if m.role == "user" and m.created_at >= replaced.superseded_at),
            None,
        )
        # An edit supersedes the edited question and everything after it at one instant:
        # the answer right after that question is the edited-away one; later turns of the
        # abandoned conversation say nothing about the edit and are left out.
        asked = session.exec(
            select(Message)
            .where(Message.chat_id == chat.id, Message.role == "user", Message.seq < replaced.seq)
            .order_by(Message.seq.desc())
        ).first()
        question_replaced = asked is not None and asked.superseded_at == replaced.superseded_at
        if question_replaced:
            edited_first = session.exec(
                select(func.min(Message.seq)).where(
                    Message.chat_id == chat.id,
                    Message.role == "user",
                    Message.superseded_at == replaced.superseded_at,
                )
            ).one()
            if asked.seq != edited_first:
                continue
        common = {
            "prompt": context_messages(session, chat, replaced.seq, replaced.created_at),
            "model_version": replaced.model_version,
            "variant": replaced.variant,
            "user": pseudonym(chat.user_id),
            "message_id": replaced.id,
            "chat_id": chat.id,
            "rated_at": replaced.superseded_at.isoformat(),
        }
        replaced_rating = session.get(MessageFeedback, replaced.id)
        if question_replaced:
            if edited is None:
                continue
            yield {
                "kind": "edit",
                **common,
                "completion": [{"role": "assistant", "content": replaced.content}],
                "label": False,
                "edited_question": edited.content,
                "rating": replaced_rating.rating if replaced_rating else None,
            }
            continue
        # The answer that replaced it: the next answer made when (or after) it was replaced.
        successor = next(
            (
                m
                for m in later
                if m.role == "assistant"
                and m.created_at >= replaced.superseded_at
                and m.status == "complete"
                and m.content
            ),
            None,
        )
        if successor is None:
            continue
        yield {
            "kind": "regeneration",
            **common,
            "rejected": _answer(replaced, replaced_rating),
            "chosen": _answer(successor, session.get(MessageFeedback, successor.id)),
        }


def export_records(
    session: Session, rating: str | None = None, kinds: tuple[str, ...] = KINDS
) -> Iterator[dict[str, Any]]:
    """The export's lines in order: ratings first, then regenerations and edits. A
    `rating` filter keeps only ratings of that value."""
    if "rating" in kinds:
        yield from ratings(session, rating)
    if rating is None and {"regeneration", "edit"} & set(kinds):
        for record in replacements(session):
            if record["kind"] in kinds:
                yield record
