"""A chat's knowledge: the knowledge bases it retrieves from and the files uploaded into it
(docs/knowledge.md). Each answer then cites what it was given (`citations` on the
message, and a `citations` event before the text streams).

Uploads are multipart (`file`) and ingested in the background, like uploads to a
knowledge base (routes/knowledge.py): 202 with the file `queued`; `GET .../files` shows
each file's status. Another user's chat, base or file is 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Request, Response, UploadFile
from sqlmodel import select

from platform_api.chat_knowledge import (
    attach_bases,
    chat_bases,
    chat_files,
    chat_files_base,
    chat_shared_bases,
    use_shared,
)
from platform_api.chats import owned_chat
from platform_api.deps import ChatsReader, ChatsWriter, SessionDep
from platform_api.errors import not_found
from platform_api.knowledge import accept_upload
from platform_api.models import Chat, KnowledgeFile
from platform_api.schemas import ChatKnowledgePublic, ChatKnowledgeSet, KnowledgeFilePublic
from platform_api.shared_knowledge import public_base

router = APIRouter(prefix="/chats/{chat_id}", tags=["chats"])


def _public(session, request: Request, user, chat: Chat) -> ChatKnowledgePublic:
    shared = chat_shared_bases(session, request.app.state.settings, user, chat)
    return ChatKnowledgePublic(
        knowledge_bases=[base for link, base in chat_bases(session, chat) if not link.chat_files],
        files=chat_files(session, chat),
        shared_knowledge_bases=[public_base(base) for base in shared],
    )


@router.get("/knowledge", response_model=ChatKnowledgePublic)
def get_chat_knowledge(
    chat_id: str, user: ChatsReader, session: SessionDep, request: Request
) -> ChatKnowledgePublic:
    """The knowledge bases attached to the chat, the files uploaded into it and the
    shared bases (the crawled site) it uses."""
    return _public(session, request, user, owned_chat(session, user, chat_id))


@router.put("/knowledge", response_model=ChatKnowledgePublic)
def set_chat_knowledge(
    chat_id: str, body: ChatKnowledgeSet, user: ChatsWriter, session: SessionDep, request: Request
) -> ChatKnowledgePublic:
    """Attach exactly these knowledge bases (the caller's own) to the chat, and, when
    `shared_knowledge_bases` is given, exactly these shared bases (each one the caller
    may use: else 404)."""
    chat = owned_chat(session, user, chat_id)
    if body.shared_knowledge_bases is not None:
        use_shared(session, request.app.state.settings, user, chat, body.shared_knowledge_bases)
    attach_bases(session, user, chat, body.knowledge_base_ids)  # commits both, or neither
    return _public(session, request, user, chat)


@router.get("/files", response_model=list[KnowledgeFilePublic])
def list_chat_files(chat_id: str, user: ChatsReader, session: SessionDep) -> list[KnowledgeFile]:
    return chat_files(session, owned_chat(session, user, chat_id))


@router.post("/files", response_model=KnowledgeFilePublic, status_code=202)
def upload_chat_file(
    chat_id: str,
    file: Annotated[UploadFile, File(description="PDF, DOCX, HTML, Markdown, text, PNG or JPEG")],
    user: ChatsWriter,
    session: SessionDep,
    request: Request,
) -> KnowledgeFile:
    """Upload a file into the chat; later turns retrieve from it once it is `ready`."""
    chat = owned_chat(session, user, chat_id)
    base = chat_files_base(session, user, chat)
    return accept_upload(session, request.app.state.knowledge, user, base, file)


@router.delete("/files/{file_id}", status_code=204)
def delete_chat_file(
    chat_id: str, file_id: str, user: ChatsWriter, session: SessionDep, request: Request
) -> Response:
    chat = owned_chat(session, user, chat_id)
    file = next((f for f in chat_files(session, chat) if f.id == file_id), None)
    if file is None:
        raise not_found("file")
    request.app.state.knowledge.delete_file(file)
    session.delete(session.exec(select(KnowledgeFile).where(KnowledgeFile.id == file.id)).one())
    session.commit()
    return Response(status_code=204)
