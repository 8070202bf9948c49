"""The caller's long-term memories: list, add, edit, disable and delete them
(platform_api/memory.py says how they are extracted and recalled). Another user's memory
is 404, like one that does not exist. API keys need `chats:read` to list, `chats:write`
to change."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy import delete
from sqlmodel import Session, select

from orchard.knowledge.embeddings import load_embedder
from platform_api.deps import ChatsReader, ChatsWriter, SessionDep
from platform_api.errors import ApiError, not_found
from platform_api.memory import add_memory, set_content
from platform_api.models import Memory, User, utcnow
from platform_api.schemas import MemoryCreate, MemoryPublic, MemoryUpdate

router = APIRouter(prefix="/memories", tags=["memory"])


def _owned(session: Session, user: User, memory_id: str) -> Memory:
    memory = session.exec(
        select(Memory).where(Memory.id == memory_id, Memory.user_id == user.id)
    ).first()
    if memory is None:
        raise not_found("memory")
    return memory


def _duplicate() -> ApiError:
    return ApiError(409, "memory_exists", "you already have this memory (or one nearly the same)")


@router.get("", response_model=list[MemoryPublic])
def list_memories(user: ChatsReader, session: SessionDep) -> list[Memory]:
    """Newest first."""
    query = select(Memory).where(Memory.user_id == user.id)
    return list(session.exec(query.order_by(Memory.created_at.desc(), Memory.id)))


@router.post("", response_model=MemoryPublic, status_code=201)
def create_memory(
    body: MemoryCreate, user: ChatsWriter, session: SessionDep, request: Request
) -> Memory:
    """Something later chats should know (written by the user)."""
    embedder = load_embedder(request.app.state.settings.embedding_model)
    memory = add_memory(session, embedder, user.id, body.content, "user")
    if memory is None:
        raise _duplicate()
    return memory


@router.patch("/{memory_id}", response_model=MemoryPublic)
def update_memory(
    memory_id: str, body: MemoryUpdate, user: ChatsWriter, session: SessionDep, request: Request
) -> Memory:
    """Edit its text (embedded again) and/or switch it on or off."""
    memory = _owned(session, user, memory_id)
    if body.content is not None and body.content != memory.content:
        if session.exec(
            select(Memory.id).where(Memory.user_id == user.id, Memory.content == body.content)
        ).first():
            raise _duplicate()
        set_content(session, load_embedder(request.app.state.settings.embedding_model), memory,
                    body.content)  # fmt: skip
    if body.enabled is not None:
        memory.enabled = body.enabled
        memory.updated_at = utcnow()
    session.add(memory)
    session.commit()
    return memory


@router.delete("/{memory_id}", status_code=204)
def delete_memory(memory_id: str, user: ChatsWriter, session: SessionDep) -> Response:
    session.delete(_owned(session, user, memory_id))
    session.commit()
    return Response(status_code=204)


@router.delete("", status_code=204)
def forget_everything(user: ChatsWriter, session: SessionDep) -> Response:
    """Delete every memory of the caller."""
    session.exec(delete(Memory).where(Memory.user_id == user.id))
    session.commit()
    return Response(status_code=204)
