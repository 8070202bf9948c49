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

from platform_api.chat_knowledge import attach_bases, chat_bases, chat_files, chat_files_base
from platform_api.chats import owned_chat
from platform_api.deps import ChatsReader, ChatsWriter, SessionDep
from platform_api.errors import not_found
from platform_api.knowledge import accept_upload
from platform_api.models import Chat, KnowledgeFile
from platform_api.schemas import ChatKnowledgePublic, ChatKnowledgeSet, KnowledgeFilePublic

router = APIRouter(prefix="/chats/{chat_id}", tags=["chats"])


def _public(session, chat: Chat) -> ChatKnowledgePublic:
    return ChatKnowledgePublic(
        knowledge_bases=[base for link, base in chat_bases(session, chat) if not link.chat_files],
        files=chat_files(session, chat),
    )


@router.get("/knowledge", response_model=ChatKnowledgePublic)
def get_chat_knowledge(chat_id: str, user: ChatsReader, session: SessionDep) -> ChatKnowledgePublic:
    """The knowledge bases attached to the chat and the files uploaded into it."""
    return _public(session, owned_chat(session, user, chat_id))


@router.put("/knowledge", response_model=ChatKnowledgePublic)
def set_chat_knowledge(
    chat_id: str, body: ChatKnowledgeSet, user: ChatsWriter, session: SessionDep
) -> ChatKnowledgePublic:
    """Attach exactly these knowledge bases (the caller's own) to the chat."""
    chat = owned_chat(session, user, chat_id)
    attach_bases(session, user, chat, body.knowledge_base_ids)
    return _public(session, chat)


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
