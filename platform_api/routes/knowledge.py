"""The caller's knowledge bases and the files in them (docs/knowledge.md).

Uploads are multipart (`file`), checked for size and for their kind (sniffed from the
content) before anything is stored, then ingested in the background: the answer is 202
with the file in state `queued`; `GET .../files/{id}` shows it move to `ready` or to
`failed` with the reason. API keys need `chats:read` to read and search, `chats:write`
to change.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Request, Response, UploadFile
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from platform_api.chat_knowledge import chat_file_base_ids
from platform_api.deps import ChatsReader, ChatsWriter, SessionDep
from platform_api.errors import ApiError
from platform_api.knowledge import Knowledge, accept_upload, owned_base, owned_file
from platform_api.models import KnowledgeBase, KnowledgeFile
from platform_api.schemas import (
    KnowledgeBasePublic,
    KnowledgeBaseWrite,
    KnowledgeChunkPublic,
    KnowledgeFilePublic,
    KnowledgeHit,
    KnowledgeSearch,
)

router = APIRouter(prefix="/knowledge", tags=["knowledge"])


def _knowledge(request: Request) -> Knowledge:
    return request.app.state.knowledge


@router.get("", response_model=list[KnowledgeBasePublic])
def list_bases(user: ChatsReader, session: SessionDep) -> list[KnowledgeBase]:
    """The caller's bases (a chat's own uploads are listed with the chat instead)."""
    query = select(KnowledgeBase).where(
        KnowledgeBase.user_id == user.id, KnowledgeBase.id.not_in(chat_file_base_ids())
    )
    return list(session.exec(query.order_by(KnowledgeBase.name)))


@router.post("", response_model=KnowledgeBasePublic, status_code=201)
def create_base(body: KnowledgeBaseWrite, user: ChatsWriter, session: SessionDep) -> KnowledgeBase:
    base = KnowledgeBase(user_id=user.id, name=body.name, description=body.description)
    session.add(base)
    _commit_name(session, body.name)
    return base


@router.get("/{base_id}", response_model=KnowledgeBasePublic)
def get_base(base_id: str, user: ChatsReader, session: SessionDep) -> KnowledgeBase:
    return owned_base(session, user, base_id)


@router.delete("/{base_id}", status_code=204)
def delete_base(base_id: str, user: ChatsWriter, session: SessionDep, request: Request) -> Response:
    """The base, its files, their originals, chunks and vectors."""
    base = owned_base(session, user, base_id)
    files = list(
        session.exec(select(KnowledgeFile).where(KnowledgeFile.knowledge_base_id == base.id))
    )
    _knowledge(request).delete_base(base, files)
    session.exec(delete(KnowledgeFile).where(KnowledgeFile.knowledge_base_id == base.id))
    session.delete(base)
    session.commit()
    return Response(status_code=204)


@router.get("/{base_id}/files", response_model=list[KnowledgeFilePublic])
def list_files(base_id: str, user: ChatsReader, session: SessionDep) -> list[KnowledgeFile]:
    base = owned_base(session, user, base_id)
    query = select(KnowledgeFile).where(KnowledgeFile.knowledge_base_id == base.id)
    return list(session.exec(query.order_by(KnowledgeFile.created_at)))


@router.post("/{base_id}/files", response_model=KnowledgeFilePublic, status_code=202)
def upload_file(
    base_id: str,
    file: Annotated[UploadFile, File(description="PDF, DOCX, HTML, Markdown, text, PNG or JPEG")],
    user: ChatsWriter,
    session: SessionDep,
    request: Request,
) -> KnowledgeFile:
    """Store the file and queue it for indexing (202): poll its status."""
    return accept_upload(
        session, _knowledge(request), user, owned_base(session, user, base_id), file
    )


@router.get("/{base_id}/files/{file_id}", response_model=KnowledgeFilePublic)
def get_file(base_id: str, file_id: str, user: ChatsReader, session: SessionDep) -> KnowledgeFile:
    return owned_file(session, user, owned_base(session, user, base_id), file_id)


@router.get("/{base_id}/files/{file_id}/chunks", response_model=list[KnowledgeChunkPublic])
def file_chunks(
    base_id: str, file_id: str, user: ChatsReader, session: SessionDep, request: Request
) -> list:
    base = owned_base(session, user, base_id)
    file = owned_file(session, user, base, file_id)
    return _knowledge(request).chunks(user, base, file.id)


@router.delete("/{base_id}/files/{file_id}", status_code=204)
def delete_file(
    base_id: str, file_id: str, user: ChatsWriter, session: SessionDep, request: Request
) -> Response:
    file = owned_file(session, user, owned_base(session, user, base_id), file_id)
    _knowledge(request).delete_file(file)
    session.delete(file)
    session.commit()
    return Response(status_code=204)


@router.post("/{base_id}/search", response_model=list[KnowledgeHit])
def search(
    base_id: str, body: KnowledgeSearch, user: ChatsReader, session: SessionDep, request: Request
) -> list[KnowledgeHit]:
    """The best passages of the caller's files in this base (hybrid BM25 + vector)."""
    base = owned_base(session, user, base_id)
    hits = _knowledge(request).search(user, base, body.query, body.k, body.file_ids)
    return [
        KnowledgeHit(score=hit.score, chunk=KnowledgeChunkPublic.model_validate(hit.chunk))
        for hit in hits
    ]


def _commit_name(session: Session, name: str) -> None:
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ApiError(
            409, "knowledge_base_exists", f"you already have a knowledge base named {name!r}"
        ) from None
