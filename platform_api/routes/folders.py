"""The caller's chat folders. Deleting a folder keeps its chats (they leave the folder)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from platform_api.chats import owned_folder
from platform_api.deps import ChatsReader, ChatsWriter, SessionDep
from platform_api.errors import ApiError
from platform_api.models import Folder
from platform_api.schemas import FolderPublic, FolderWrite

router = APIRouter(prefix="/folders", tags=["chats"])


@router.get("", response_model=list[FolderPublic])
def list_folders(user: ChatsReader, session: SessionDep) -> list[Folder]:
    return list(session.exec(select(Folder).where(Folder.user_id == user.id).order_by(Folder.name)))


@router.post("", response_model=FolderPublic, status_code=201)
def create_folder(body: FolderWrite, user: ChatsWriter, session: SessionDep) -> Folder:
    folder = Folder(user_id=user.id, name=body.name)
    session.add(folder)
    _commit_name(session, body.name)
    return folder


@router.patch("/{folder_id}", response_model=FolderPublic)
def rename_folder(
    folder_id: str, body: FolderWrite, user: ChatsWriter, session: SessionDep
) -> Folder:
    folder = owned_folder(session, user, folder_id)
    folder.name = body.name
    session.add(folder)
    _commit_name(session, body.name)
    return folder


@router.delete("/{folder_id}", status_code=204)
def delete_folder(folder_id: str, user: ChatsWriter, session: SessionDep) -> Response:
    session.delete(owned_folder(session, user, folder_id))
    session.commit()
    return Response(status_code=204)


def _commit_name(session: Session, name: str) -> None:
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ApiError(409, "folder_exists", f"you already have a folder named {name!r}") from None
