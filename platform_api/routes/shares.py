"""Read-only share links: the owner creates and revokes them; anyone with the link reads.

The link's token is shown once and stored as a hash. A revoked link, a deleted chat and
the chat of a banned or suspended owner all answer 404, and so does the chat of an owner
for whom the feature flag `shares` is off (on while no flag row exists): switching it
off stops new links (403 `feature_disabled`) and hides the existing ones, without
revoking them, until it is on again.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlmodel import select

from platform_api.access import feature_enabled, require_feature
from platform_api.chats import chat_messages, owned_chat
from platform_api.deps import ChatsReader, ChatsWriter, SessionDep
from platform_api.errors import not_found
from platform_api.models import Chat, ShareLink, User, utcnow
from platform_api.schemas import (
    SharedChat,
    SharedMessage,
    ShareLinkCreated,
    ShareLinkPublic,
)
from platform_api.security import digest, new_share_token

router = APIRouter(tags=["shares"])
SHARES = "shares"  # the feature flag


@router.post("/chats/{chat_id}/shares", response_model=ShareLinkCreated, status_code=201)
def create_share(chat_id: str, user: ChatsWriter, session: SessionDep) -> ShareLinkCreated:
    chat = owned_chat(session, user, chat_id)
    require_feature(session, user, SHARES)
    token = new_share_token()
    link = ShareLink(chat_id=chat.id, token_hash=digest(token))
    session.add(link)
    session.commit()
    return ShareLinkCreated(
        **ShareLinkPublic.model_validate(link).model_dump(),
        token=token,
        path=f"/api/v1/shared/{token}",
    )


@router.get("/chats/{chat_id}/shares", response_model=list[ShareLinkPublic])
def list_shares(chat_id: str, user: ChatsReader, session: SessionDep) -> list[ShareLink]:
    chat = owned_chat(session, user, chat_id)
    return list(
        session.exec(
            select(ShareLink).where(ShareLink.chat_id == chat.id).order_by(ShareLink.created_at)
        )
    )


@router.delete("/chats/{chat_id}/shares/{share_id}", status_code=204)
def revoke_share(chat_id: str, share_id: str, user: ChatsWriter, session: SessionDep) -> Response:
    chat = owned_chat(session, user, chat_id)
    link = session.exec(
        select(ShareLink).where(
            ShareLink.id == share_id, ShareLink.chat_id == chat.id, ShareLink.revoked_at.is_(None)
        )
    ).first()
    if link is None:
        raise not_found("share link")
    link.revoked_at = utcnow()
    session.add(link)
    session.commit()
    return Response(status_code=204)


@router.get("/shared/{token}", response_model=SharedChat)
def read_shared(token: str, session: SessionDep) -> SharedChat:
    """Public: no credentials. Shows the title and messages, nothing about the owner."""
    found = session.exec(
        select(Chat, User)
        .join(ShareLink, ShareLink.chat_id == Chat.id)
        .join(User, User.id == Chat.user_id)
        .where(
            ShareLink.token_hash == digest(token),
            ShareLink.revoked_at.is_(None),
            User.status == "active",
        )
    ).first()
    if found is None or not feature_enabled(session, found[1], SHARES):
        raise not_found("shared chat")
    chat = found[0]
    return SharedChat(
        title=chat.title,
        messages=[SharedMessage.model_validate(m) for m in chat_messages(session, chat.id)],
    )
