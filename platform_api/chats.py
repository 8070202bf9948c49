"""A user's chats and folders, looked up by id *and* owner: another user's chat or folder is
"not found" (404), the same answer as one that does not exist, so nothing tells an attacker
that the id is real. Used by every route that works on a chat (chats, messages, shares,
credits, the chat WebSocket) or files one in a folder."""

from __future__ import annotations

from sqlmodel import Session, select

from platform_api.errors import not_found
from platform_api.models import Chat, Folder, Message, User


def owned_chat(session: Session, user: User, chat_id: str) -> Chat:
    chat = session.exec(select(Chat).where(Chat.id == chat_id, Chat.user_id == user.id)).first()
    if chat is None:
        raise not_found("chat")
    return chat


def chat_messages(session: Session, chat_id: str) -> list[Message]:
    """What the chat shows, in order: superseded messages (replaced by a regenerated
    answer or an edited question) are left out."""
    return list(
        session.exec(
            select(Message)
            .where(Message.chat_id == chat_id, Message.superseded_at.is_(None))
            .order_by(Message.seq)
        )
    )


def owned_folder(session: Session, user: User, folder_id: str) -> Folder:
    folder = session.exec(
        select(Folder).where(Folder.id == folder_id, Folder.user_id == user.id)
    ).first()
    if folder is None:
        raise not_found("folder")
    return folder
