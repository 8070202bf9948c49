"""The caller's chats: create, list, read, rename/move/pin/settings, delete, search, export.

Every lookup is by id *and* owner, so another user's chat is "not found" (404), the same
answer as a chat that does not exist: nothing tells an attacker that the id is real.
"""

from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter, Query, Request, Response
from sqlmodel import Session, select

from platform_api import search
from platform_api.access import check_chat_alias, default_chat_alias
from platform_api.chat_knowledge import drop_chat_files
from platform_api.chats import chat_messages, owned_chat, owned_folder
from platform_api.deps import ChatsReader, ChatsWriter, SessionDep
from platform_api.errors import ApiError
from platform_api.models import Chat, Message, User, utcnow
from platform_api.schemas import (
    OFFSET_MAX,
    ChatCreate,
    ChatPublic,
    ChatUpdate,
    MessagePublic,
    SearchHit,
)
from platform_api.search import SearchQuery

SEARCH_LIMIT = 50

router = APIRouter(prefix="/chats", tags=["chats"])


def _check_alias(request: Request, session: Session, user: User, alias: str) -> None:
    """A served alias the user may use (the same check runs again at each send)."""
    check_chat_alias(session, request.app.state.settings, user, alias)


@router.get("", response_model=list[ChatPublic])
def list_chats(
    user: ChatsReader,
    session: SessionDep,
    folder_id: str | None = Query(None, description="Only the chats in this folder."),
    pinned: bool | None = Query(None, description="Only pinned (true) or unpinned (false)."),
    limit: int = Query(100, ge=1, le=500),
    offset: int = Query(0, ge=0, le=OFFSET_MAX),
) -> list[Chat]:
    """Pinned chats first, then the most recently active."""
    query = select(Chat).where(Chat.user_id == user.id)
    if folder_id is not None:
        query = query.where(Chat.folder_id == folder_id)
    if pinned is not None:
        query = query.where(Chat.pinned == pinned)
    query = query.order_by(Chat.pinned.desc(), Chat.updated_at.desc(), Chat.id)
    return list(session.exec(query.offset(offset).limit(limit)))


@router.post("", response_model=ChatPublic, status_code=201)
def create_chat(body: ChatCreate, request: Request, user: ChatsWriter, session: SessionDep) -> Chat:
    if body.folder_id is not None:
        owned_folder(session, user, body.folder_id)
    values = body.model_dump(exclude_none=True)
    if "model_alias" not in values:
        values["model_alias"] = default_chat_alias(session, request.app.state.settings, user)
    _check_alias(request, session, user, values["model_alias"])
    chat = Chat(user_id=user.id, **values)
    session.add(chat)
    session.commit()
    return chat


@router.get("/search", response_model=list[SearchHit])
def search_chats(
    user: ChatsReader,
    session: SessionDep,
    q: str = Query(
        min_length=1,
        max_length=200,
        description="Words to find (all of them; the last one also as a prefix), "
        'or a "quoted phrase". Case-insensitive; punctuation only separates words.',
    ),
) -> list[SearchHit]:
    """The caller's chats whose title or one shown message holds every word of `q`
    (full-text search, platform_api/search.py): chats matched by title first, then those
    matched by a message, each most recently active first."""
    query = SearchQuery.parse(q)
    if query is None:
        return []
    dialect = session.get_bind().dialect.name
    hits: dict[str, SearchHit] = {}
    for chat in session.exec(
        select(Chat)
        .where(Chat.user_id == user.id, search.title_matches(dialect, query))
        .order_by(Chat.updated_at.desc(), Chat.id)
        .limit(SEARCH_LIMIT)
    ):
        hits[chat.id] = SearchHit(chat=ChatPublic.model_validate(chat), snippet=chat.title)
    for chat, content in session.exec(
        select(Chat, Message.content)
        .join(Message, Message.chat_id == Chat.id)
        .where(Chat.user_id == user.id, search.message_matches(dialect, query))
        .order_by(Chat.updated_at.desc(), Chat.id, Message.seq)
        .limit(SEARCH_LIMIT * 4)
    ):
        if chat.id not in hits and len(hits) < SEARCH_LIMIT:
            hits[chat.id] = SearchHit(
                chat=ChatPublic.model_validate(chat), snippet=search.snippet(content, query)
            )
    return list(hits.values())


@router.get("/{chat_id}", response_model=ChatPublic)
def read_chat(chat_id: str, user: ChatsReader, session: SessionDep) -> Chat:
    return owned_chat(session, user, chat_id)


@router.patch("/{chat_id}", response_model=ChatPublic)
def update_chat(
    chat_id: str, body: ChatUpdate, request: Request, user: ChatsWriter, session: SessionDep
) -> Chat:
    """Change only the fields sent. Sending `null` for anything but `folder_id` is refused."""
    chat = owned_chat(session, user, chat_id)
    changes = body.model_dump(exclude_unset=True)
    nulls = sorted(k for k, v in changes.items() if v is None and k != "folder_id")
    if nulls:
        raise ApiError(
            422, "invalid_request", f"{', '.join(nulls)} cannot be null: omit it instead"
        )
    if changes.get("folder_id") is not None:
        owned_folder(session, user, changes["folder_id"])
    if "model_alias" in changes:
        _check_alias(request, session, user, changes["model_alias"])
    for name, value in changes.items():
        setattr(chat, name, value)
    chat.updated_at = utcnow()
    session.add(chat)
    session.commit()
    return chat


@router.delete("/{chat_id}", status_code=204)
def delete_chat(chat_id: str, user: ChatsWriter, session: SessionDep, request: Request) -> Response:
    """The chat, its messages, its share links and the files uploaded into it go."""
    chat = owned_chat(session, user, chat_id)
    drop_chat_files(session, request.app.state.knowledge, chat)
    session.delete(chat)
    session.commit()
    return Response(status_code=204)


@router.get(
    "/{chat_id}/export",
    responses={200: {"content": {"text/markdown": {}, "application/json": {}}}},
    response_class=Response,
)
def export_chat(
    chat_id: str,
    user: ChatsReader,
    session: SessionDep,
    format: Literal["markdown", "json"] = Query("markdown"),
) -> Response:
    """The chat as it shows, as a download: Markdown to read, JSON to process. Messages
    replaced by a regenerated answer or an edited question are not in it (the account's
    data export, `GET /users/me/export`, has them)."""
    chat = owned_chat(session, user, chat_id)
    messages = chat_messages(session, chat.id)
    if format == "json":
        document = {
            "chat": ChatPublic.model_validate(chat).model_dump(mode="json"),
            "messages": [MessagePublic.model_validate(m).model_dump(mode="json") for m in messages],
            "exported_at": utcnow().isoformat(),
        }
        body, media, suffix = (
            json.dumps(document, indent=2, ensure_ascii=False),
            "application/json",
            "json",
        )
    else:
        body, media, suffix = chat_markdown(chat, messages), "text/markdown; charset=utf-8", "md"
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="chat-{chat.id}.{suffix}"'},
    )


def chat_markdown(chat: Chat, messages: list[Message]) -> str:
    lines = [f"# {chat.title}", ""]
    lines.append(
        f"_model {chat.model_alias}, temperature {chat.temperature}, "
        f"max tokens {chat.max_tokens}, tone {chat.tone}_"
    )
    if chat.system_prompt:
        lines += [
            "",
            "System prompt:",
            "",
            *(f"> {line}" for line in chat.system_prompt.splitlines()),
        ]
    for message in messages:
        heading = "User" if message.role == "user" else "Assistant"
        notes = [message.model_version] if message.model_version else []
        if message.status != "complete":
            notes.append(message.status)
        lines += [
            "",
            f"## {heading}" + (f" ({', '.join(notes)})" if notes else ""),
            "",
            message.content,
        ]
    return "\n".join(lines) + "\n"
