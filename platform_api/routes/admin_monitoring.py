"""Administrators: conversation monitoring. Search every user's chats (the full-text
search of a user's own `/chats/search`, platform_api/search.py), read one, flag it (or
one message of it) for review, resolve flags, and export conversations as a download.

Administrators reading users' conversations must be accountable for it: besides every
write, reading a conversation (`conversation.view`), searching message text
(`conversation.search`) and exporting (`conversation.export`, with the chat ids) are in
the audit log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import false, func
from sqlmodel import Session, select

from platform_api import search
from platform_api.audit import audit
from platform_api.deps import AdminUser, SessionDep
from platform_api.errors import ApiError, not_found
from platform_api.models import Chat, ChatFlag, Message, User, utcnow
from platform_api.schemas import (
    OFFSET_MAX,
    ChatPublic,
    ConversationDetail,
    ConversationSummary,
    FlagCreate,
    FlagPublic,
    MessagePublic,
    UserRef,
)
from platform_api.search import SearchQuery

router = APIRouter(prefix="/admin", tags=["admin"])

EXPORT_LIMIT_MAX = 1_000
Flagged = Literal["open", "resolved", "any"]
SearchText = Query(
    None,
    min_length=1,
    max_length=200,
    description="Words in a title or a shown message, as in /chats/search.",
)


# -- queries ---------------------------------------------------------------------------------
def _open_flag_chats():
    return select(ChatFlag.chat_id).where(ChatFlag.resolved_at.is_(None))


def _conversations(session: Session, q: str | None, user_id: str | None, flagged: Flagged | None):
    """Chats (with their owner) matching the filters, newest first."""
    query = select(Chat, User).join(User, User.id == Chat.user_id)
    if user_id is not None:
        query = query.where(Chat.user_id == user_id)
    if q is not None:
        words = SearchQuery.parse(q)
        dialect = session.get_bind().dialect.name
        query = query.where(search.chat_matches(dialect, words) if words else false())
    if flagged == "open":
        query = query.where(Chat.id.in_(_open_flag_chats()))
    elif flagged == "any":
        query = query.where(Chat.id.in_(select(ChatFlag.chat_id)))
    elif flagged == "resolved":  # flagged once, every flag resolved since
        query = query.where(
            Chat.id.in_(select(ChatFlag.chat_id)), Chat.id.not_in(_open_flag_chats())
        )
    return query.order_by(Chat.updated_at.desc(), Chat.id.desc())


def _counts(session: Session, column, *where, chat_ids: list[str]) -> dict[str, int]:
    """chat id -> how many rows of `column`'s table match `where`, for these chats."""
    if not chat_ids:
        return {}
    query = select(column, func.count()).where(column.in_(chat_ids), *where).group_by(column)
    return dict(session.exec(query).all())


def _snippets(session: Session, q: str, chats: list[Chat]) -> dict[str, str]:
    """The title where it matches, else the first shown message that does."""
    words = SearchQuery.parse(q)
    if words is None or not chats:
        return {}
    dialect = session.get_bind().dialect.name
    ids = [c.id for c in chats]
    titled = set(
        session.exec(select(Chat.id).where(Chat.id.in_(ids), search.title_matches(dialect, words)))
    )
    found = {c.id: c.title for c in chats if c.id in titled}
    rest = [i for i in ids if i not in found]
    if rest:
        for chat_id, content in session.exec(
            select(Message.chat_id, Message.content)
            .where(Message.chat_id.in_(rest), search.message_matches(dialect, words))
            .order_by(Message.seq)
        ):
            found.setdefault(chat_id, search.snippet(content, words))
    return found


def _users(session: Session, ids: set[str | None]) -> dict[str, UserRef]:
    ids.discard(None)
    if not ids:
        return {}
    return {
        u.id: UserRef.model_validate(u) for u in session.exec(select(User).where(User.id.in_(ids)))
    }


def _flags_public(session: Session, flags: list[ChatFlag]) -> list[FlagPublic]:
    users = _users(session, {f.flagged_by for f in flags} | {f.resolved_by for f in flags})
    return [
        FlagPublic(
            id=f.id,
            chat_id=f.chat_id,
            message_id=f.message_id,
            reason=f.reason,
            flagged_by=users.get(f.flagged_by),
            created_at=f.created_at,
            resolved_at=f.resolved_at,
            resolved_by=users.get(f.resolved_by),
        )
        for f in flags
    ]


def _chat_flags(session: Session, chat_id: str) -> list[ChatFlag]:
    query = select(ChatFlag).where(ChatFlag.chat_id == chat_id)
    return list(session.exec(query.order_by(ChatFlag.created_at.desc(), ChatFlag.id)))


def _all_messages(session: Session, chat_id: str) -> list[Message]:
    return list(
        session.exec(select(Message).where(Message.chat_id == chat_id).order_by(Message.seq))
    )


def _chat(session: Session, chat_id: str) -> Chat:
    chat = session.get(Chat, chat_id)
    if chat is None:
        raise not_found("chat")
    return chat


# -- endpoints -------------------------------------------------------------------------------
@router.get("/conversations", response_model=list[ConversationSummary])
def list_conversations(
    admin: AdminUser,
    session: SessionDep,
    q: str | None = SearchText,
    user_id: str | None = Query(None, max_length=32, description="Only this user's chats."),
    flagged: Flagged | None = Query(
        None,
        description="open: with an open flag; resolved: flagged, every flag resolved; "
        "any: flagged at all. Omitted: every chat.",
    ),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=OFFSET_MAX),
) -> list[ConversationSummary]:
    """Every user's chats, most recently active first. A search of message text is in the
    audit log (`conversation.search`): its snippets show what users wrote."""
    rows = list(
        session.exec(_conversations(session, q, user_id, flagged).offset(offset).limit(limit))
    )
    ids = [chat.id for chat, _ in rows]
    message_counts = _counts(
        session, Message.chat_id, Message.superseded_at.is_(None), chat_ids=ids
    )
    open_counts = _counts(session, ChatFlag.chat_id, ChatFlag.resolved_at.is_(None), chat_ids=ids)
    snippets = _snippets(session, q, [chat for chat, _ in rows]) if q is not None else {}
    if q is not None:
        audit(session, admin, "conversation.search", q, user_id=user_id, flagged=flagged, hits=ids)
        session.commit()
    return [
        ConversationSummary(
            id=chat.id,
            title=chat.title,
            user=UserRef.model_validate(owner),
            model_alias=chat.model_alias,
            message_count=message_counts.get(chat.id, 0),
            updated_at=chat.updated_at,
            open_flags=open_counts.get(chat.id, 0),
            snippet=snippets.get(chat.id),
        )
        for chat, owner in rows
    ]


@router.get(
    "/conversations/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}, "application/json": {}}}},
)
def export_conversations(
    request: Request,
    admin: AdminUser,
    flagged: Literal["open", "any"] | None = Query(
        None, description="open: only chats with an open flag; any: flagged at all."
    ),
    q: str | None = SearchText,
    format: Literal["jsonl", "json"] = Query("jsonl"),
    limit: int = Query(100, ge=1, le=EXPORT_LIMIT_MAX),
) -> StreamingResponse:
    """The matching conversations (newest first, at most `limit`) as a download, each with
    its owner, every message (superseded ones marked) and its flags: one JSON object per
    line (jsonl), or one JSON array. Written chat by chat as it streams. Which chats went
    out is in the audit log (`conversation.export`)."""
    engine = request.app.state.engine
    with Session(engine) as session:
        query = _conversations(session, q, None, flagged).limit(limit)
        ids = [chat.id for chat, _ in session.exec(query)]
        audit(session, admin, "conversation.export", q or "", flagged=flagged, chats=ids)
        session.commit()

    def records() -> Iterator[str]:
        with Session(engine) as session:
            for chat_id in ids:
                chat = session.get(Chat, chat_id)
                if chat is None:  # deleted since the listing
                    continue
                record = _detail(session, chat).model_dump(mode="json")
                session.expunge_all()  # one chat's rows in memory at a time
                yield json.dumps(record, ensure_ascii=False)

    def jsonl() -> Iterator[str]:
        for record in records():
            yield record + "\n"

    def array() -> Iterator[str]:
        yield "["
        for n, record in enumerate(records()):
            yield ("," if n else "") + "\n" + record
        yield "\n]\n"

    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        jsonl() if format == "jsonl" else array(),
        media_type="application/x-ndjson" if format == "jsonl" else "application/json",
        headers={
            "Content-Disposition": f'attachment; filename="orchard-conversations-{stamp}.{format}"'
        },
    )


def _detail(session: Session, chat: Chat) -> ConversationDetail:
    return ConversationDetail(
        chat=ChatPublic.model_validate(chat),
        user=UserRef.model_validate(session.get(User, chat.user_id)),
        messages=[MessagePublic.model_validate(m) for m in _all_messages(session, chat.id)],
        flags=_flags_public(session, _chat_flags(session, chat.id)),
    )


@router.get("/conversations/{chat_id}", response_model=ConversationDetail)
def read_conversation(chat_id: str, admin: AdminUser, session: SessionDep) -> ConversationDetail:
    """The chat, every message of it and its flags; the reading is in the audit log."""
    detail = _detail(session, _chat(session, chat_id))
    audit(session, admin, "conversation.view", chat_id, user_id=detail.user.id)
    session.commit()
    return detail


@router.post("/conversations/{chat_id}/flags", response_model=FlagPublic, status_code=201)
def flag_conversation(
    chat_id: str, body: FlagCreate, admin: AdminUser, session: SessionDep
) -> FlagPublic:
    """Flag the chat for review, or one of its messages (`message_id`: 422 when it is not a
    message of this chat)."""
    chat = _chat(session, chat_id)
    if body.message_id is not None:
        message = session.get(Message, body.message_id)
        if message is None or message.chat_id != chat.id:
            raise ApiError(
                422,
                "message_not_in_chat",
                f"message {body.message_id} is not a message of chat {chat.id}: "
                "send one of its message ids, or none to flag the whole chat",
            )
    flag = ChatFlag(
        chat_id=chat.id, message_id=body.message_id, reason=body.reason, flagged_by=admin.id
    )
    session.add(flag)
    session.flush()
    audit(
        session,
        admin,
        "conversation.flag",
        flag.id,
        chat_id=chat.id,
        message_id=body.message_id,
        reason=body.reason,
    )
    session.commit()
    return _flags_public(session, [flag])[0]


@router.post("/conversation-flags/{flag_id}/resolve", response_model=FlagPublic)
def resolve_flag(flag_id: str, admin: AdminUser, session: SessionDep) -> FlagPublic:
    """Mark the flag reviewed. Resolving a resolved flag changes nothing (and is not audited
    again): it keeps who resolved it first."""
    flag = session.get(ChatFlag, flag_id)
    if flag is None:
        raise not_found("flag")
    if flag.resolved_at is None:
        flag.resolved_at, flag.resolved_by = utcnow(), admin.id
        session.add(flag)
        audit(session, admin, "conversation.flag_resolve", flag.id, chat_id=flag.chat_id)
        session.commit()
    return _flags_public(session, [flag])[0]


@router.get("/conversation-flags", response_model=list[FlagPublic])
def list_flags(
    admin: AdminUser,
    session: SessionDep,
    status: Flagged = Query("open", description="open, resolved, or any."),
    limit: int = Query(100, ge=1, le=500),
    offset: int = Query(0, ge=0, le=OFFSET_MAX),
) -> list[FlagPublic]:
    """Flags of every chat, newest first."""
    query = select(ChatFlag)
    if status == "open":
        query = query.where(ChatFlag.resolved_at.is_(None))
    elif status == "resolved":
        query = query.where(ChatFlag.resolved_at.is_not(None))
    query = query.order_by(ChatFlag.created_at.desc(), ChatFlag.id).offset(offset).limit(limit)
    return _flags_public(session, list(session.exec(query)))
