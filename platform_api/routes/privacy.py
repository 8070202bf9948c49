"""Privacy: whether my feedback may train the model, export all of my data, and delete
my account.

"Use my feedback to improve the model" (`PUT /users/me/feedback-consent`, in
routes/users.py with the rest of the account) is on by default; off, the admin feedback
export (and so the `orchard_feedback` DAG) leaves out every rating, regeneration and edit
of the account, past ones included.

Deleting an account erases what is the person's: chats (with their messages, share links
and feedback), folders, knowledge bases (files, their originals, chunks and vectors),
memories (with their vectors), API keys, login sessions, the e-mail address, the display
name, the password hash and the 2FA secret. It keeps what accounting must keep, the credits
ledger (append-only) and the usage records (token counts, no text), attached to an
anonymous account row (`deleted-<id>@deleted.invalid`, no password) that can never log
in again. The e-mail address is free to register again at once.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import delete
from sqlmodel import select

from platform_api.credits import CreditLedger
from platform_api.deps import CurrentUser, KeysDep, LoginPrincipal, SessionDep
from platform_api.errors import ApiError
from platform_api.memory import memory_vector
from platform_api.models import (
    ApiKey,
    AuthSession,
    Chat,
    Folder,
    KnowledgeBase,
    KnowledgeFile,
    Memory,
    Message,
    MessageFeedback,
    OAuthLoginCode,
    ShareLink,
    UsageRecord,
    User,
    utcnow,
)
from platform_api.reauth import ConfirmationDep
from platform_api.schemas import (
    AccountDelete,
    ApiKeyPublic,
    ChatPublic,
    CreditEntryPublic,
    FeedbackPublic,
    FolderPublic,
    KnowledgeBasePublic,
    KnowledgeChunkPublic,
    KnowledgeFilePublic,
    MemoryPublic,
    MessagePublic,
    ShareLinkPublic,
    UserPublic,
)
from platform_api.second_factor import spend_totp_code
from platform_api.security import UNUSABLE_PASSWORD_MARK

router = APIRouter(tags=["privacy"])

DELETED_DOMAIN = "deleted.invalid"  # RFC 2606: can never be a real address
UNUSABLE_PASSWORD = UNUSABLE_PASSWORD_MARK + "deleted"  # no password verifies against it


def _dump(model, rows) -> list[dict]:
    return [model.model_validate(row).model_dump(mode="json") for row in rows]


def _knowledge_export(request: Request, user, session) -> list[dict]:
    """Each knowledge base with its files, and each file with its chunks and vectors."""
    knowledge = request.app.state.knowledge
    bases = session.exec(
        select(KnowledgeBase).where(KnowledgeBase.user_id == user.id).order_by(KnowledgeBase.name)
    )
    exported = []
    for base in bases:
        files = session.exec(
            select(KnowledgeFile)
            .where(KnowledgeFile.knowledge_base_id == base.id, KnowledgeFile.user_id == user.id)
            .order_by(KnowledgeFile.created_at)
        )
        chunks, vectors = knowledge.chunks(user, base), knowledge.vectors(user, base)
        exported.append(
            {
                **KnowledgeBasePublic.model_validate(base).model_dump(mode="json"),
                "files": [
                    {
                        **KnowledgeFilePublic.model_validate(file).model_dump(mode="json"),
                        "chunks": [
                            {
                                **KnowledgeChunkPublic.model_validate(c).model_dump(mode="json"),
                                "vector": vectors.get(c.id),
                            }
                            for c in chunks
                            if c.file_id == file.id
                        ],
                    }
                    for file in files
                ],
            }
        )
    return exported


def _memory_export(user, session) -> list[dict]:
    """Each memory with its vector."""
    memories = session.exec(
        select(Memory).where(Memory.user_id == user.id).order_by(Memory.created_at)
    )
    return [
        {
            **MemoryPublic.model_validate(memory).model_dump(mode="json"),
            "vector": [float(x) for x in memory_vector(memory)],
        }
        for memory in memories
    ]


@router.get("/users/me/export")
def export_my_data(user: CurrentUser, session: SessionDep, request: Request) -> JSONResponse:
    """Everything the platform holds about the caller, as one JSON document."""
    chats = list(
        session.exec(select(Chat).where(Chat.user_id == user.id).order_by(Chat.created_at))
    )
    ids = [c.id for c in chats]
    messages = (
        list(session.exec(select(Message).where(Message.chat_id.in_(ids)).order_by(Message.seq)))
        if ids
        else []
    )
    by_chat: dict[str, list] = {}
    for message in messages:
        by_chat.setdefault(message.chat_id, []).append(message)
    feedback = session.exec(select(MessageFeedback).where(MessageFeedback.user_id == user.id))
    shares = session.exec(select(ShareLink).where(ShareLink.chat_id.in_(ids))) if ids else []
    ledger = CreditLedger(session)
    usage = session.exec(
        select(UsageRecord).where(UsageRecord.user_id == user.id).order_by(UsageRecord.id)
    )
    document = {
        "exported_at": utcnow().isoformat(),
        "account": UserPublic.model_validate(user).model_dump(mode="json"),
        "folders": _dump(
            FolderPublic, session.exec(select(Folder).where(Folder.user_id == user.id))
        ),
        "chats": [
            {
                **ChatPublic.model_validate(chat).model_dump(mode="json"),
                "messages": _dump(MessagePublic, by_chat.get(chat.id, [])),
            }
            for chat in chats
        ],
        "feedback": _dump(FeedbackPublic, feedback),
        "share_links": _dump(ShareLinkPublic, shares),
        "knowledge_bases": _knowledge_export(request, user, session),
        "memories": _memory_export(user, session),
        "api_keys": _dump(
            ApiKeyPublic, session.exec(select(ApiKey).where(ApiKey.user_id == user.id))
        ),
        "credits": {
            "balance": ledger.balance(user.id),
            "ledger": _dump(CreditEntryPublic, ledger.entries(user.id, limit=None)[::-1]),
        },
        "usage": [
            {
                "model": u.model,
                "model_version": u.model_version,
                "source": u.source,
                "status": u.status,
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "credits": u.credits,
                "created_at": u.created_at.isoformat(),
            }
            for u in usage
        ],
    }
    stamp = utcnow().strftime("%Y%m%d")
    return JSONResponse(
        document,
        headers={"Content-Disposition": f'attachment; filename="orchard-data-{stamp}.json"'},
    )


@router.delete("/users/me", status_code=204)
def delete_my_account(
    body: AccountDelete,
    principal: LoginPrincipal,
    session: SessionDep,
    confirmation: ConfirmationDep,
    keys: KeysDep,
    request: Request,
) -> Response:
    """Erase the account (see the module's text). Needs the password (an account without
    one: a recent sign-in, see reauth.py), and a 2FA code when 2FA is on; a personal API
    key cannot do it."""
    user = session.get(User, principal.user.id)
    confirmation.check(body.password)
    if user.totp_enabled:
        if body.totp_code is None:
            raise ApiError(400, "totp_required", "two-factor authentication is on: send totp_code")
        spend_totp_code(session, keys, user, body.totp_code)
    # Knowledge: the vector store's collections and the originals first, then the rows.
    request.app.state.knowledge.erase_user(session, user.id)
    session.exec(delete(KnowledgeFile).where(KnowledgeFile.user_id == user.id))
    session.exec(delete(KnowledgeBase).where(KnowledgeBase.user_id == user.id))
    session.exec(delete(Memory).where(Memory.user_id == user.id))
    # Chats take their messages, share links and feedback with them (ON DELETE CASCADE).
    session.exec(delete(Chat).where(Chat.user_id == user.id))
    session.exec(delete(Folder).where(Folder.user_id == user.id))
    session.exec(delete(MessageFeedback).where(MessageFeedback.user_id == user.id))
    session.exec(delete(ApiKey).where(ApiKey.user_id == user.id))
    session.exec(delete(OAuthLoginCode).where(OAuthLoginCode.user_id == user.id))
    session.exec(delete(AuthSession).where(AuthSession.user_id == user.id))
    now = utcnow()
    user.email = f"deleted-{user.id}@{DELETED_DOMAIN}"
    user.display_name = ""
    user.password_hash = UNUSABLE_PASSWORD
    user.totp_secret, user.totp_enabled, user.totp_last_step = None, False, None
    user.deleted_at, user.updated_at = now, now
    session.add(user)
    session.commit()
    return Response(status_code=204)
