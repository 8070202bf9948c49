"""Model access rules and feature flags (administrators), and what a signed-in user gets
from them: the chat models they may pick and the features on for them. The semantics are
in `platform_api/access.py`."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from sqlmodel import select

from platform_api.access import (
    FLAG_KEY,
    KNOWN_FLAGS,
    embedding_names,
    features_for,
    models_for,
    valid_model,
)
from platform_api.audit import audit
from platform_api.deps import AdminUser, ChatsReader, SessionDep
from platform_api.errors import ApiError, not_found
from platform_api.models import FeatureFlag, KnowledgeAccessRule, ModelAccessRule, User, utcnow
from platform_api.schemas import (
    OFFSET_MAX,
    AccessRuleCreate,
    AccessRulePublic,
    ChatModels,
    FeatureFlagPublic,
    FeatureFlagWrite,
    Features,
    KnowledgeAccessRuleCreate,
    KnowledgeAccessRulePublic,
)

router = APIRouter(tags=["access"])


def _flag_public(flag: FeatureFlag) -> FeatureFlagPublic:
    return FeatureFlagPublic(
        key=flag.key,
        description=flag.description,
        enabled=flag.enabled,
        roles=json.loads(flag.roles),
        users=json.loads(flag.users),
        stored=True,
        updated_at=flag.updated_at,
        updated_by=flag.updated_by,
    )


FlagKey = Annotated[
    str,
    Path(
        pattern="^" + FLAG_KEY.pattern + "$",
        description="Lower-case letters, digits, `_`, `.` and `-`; at most 64.",
    ),
]


# -- for every signed-in user --------------------------------------------------------------
@router.get("/models", response_model=ChatModels)
def list_chat_models(request: Request, user: ChatsReader, session: SessionDep) -> ChatModels:
    """The serve aliases the caller may set a chat to (the chat settings' choices)."""
    aliases = models_for(session, request.app.state.settings, user).aliases(
        request.app.state.settings
    )
    return ChatModels(aliases=aliases, default=aliases[0] if aliases else None)


@router.get("/features", response_model=Features)
def list_features(user: ChatsReader, session: SessionDep) -> Features:
    """The feature flags on for the caller."""
    return Features(features=features_for(session, user))


# -- model access (administrators) ---------------------------------------------------------
@router.get("/admin/model-access", response_model=list[AccessRulePublic])
def list_access_rules(admin: AdminUser, session: SessionDep) -> list[ModelAccessRule]:
    return list(session.exec(select(ModelAccessRule).order_by(ModelAccessRule.id)))


@router.post("/admin/model-access", response_model=AccessRulePublic, status_code=201)
def create_access_rule(
    body: AccessRuleCreate,
    request: Request,
    response: Response,
    admin: AdminUser,
    session: SessionDep,
) -> ModelAccessRule:
    """Grant a role or a user a model. The first rule of a role or user replaces its
    defaults (see access.py). The same rule again answers the existing one (200)."""
    settings = request.app.state.settings
    if not valid_model(settings, body.model):
        raise ApiError(
            422,
            "invalid_request",
            f"model {body.model!r} is not one this platform serves: use *, "
            f"{', '.join((*settings.serve_aliases, settings.model_name))}, "
            f"{settings.model_name}/<version> or the embedding model "
            f"{embedding_names(settings)[0]}",
        )
    if body.user_id is not None and session.get(User, body.user_id) is None:
        raise ApiError(422, "invalid_request", f"user_id: no user has the id {body.user_id!r}")
    existing = session.exec(
        select(ModelAccessRule).where(
            ModelAccessRule.role == body.role
            if body.role
            else ModelAccessRule.user_id == body.user_id,
            ModelAccessRule.model == body.model,
        )
    ).first()
    if existing is not None:
        response.status_code = 200
        return existing
    rule = ModelAccessRule(**body.model_dump(), created_by=admin.id)
    session.add(rule)
    session.flush()
    audit(session, admin, "model_access.grant", body.role or body.user_id, model=body.model)
    session.commit()
    return rule


@router.delete("/admin/model-access/{rule_id}", status_code=204)
def delete_access_rule(
    rule_id: Annotated[int, Path(ge=1, le=OFFSET_MAX)], admin: AdminUser, session: SessionDep
) -> Response:
    """Chats already set to the model are refused at their next send."""
    rule = session.get(ModelAccessRule, rule_id)
    if rule is None:
        raise not_found("model access rule")
    audit(
        session,
        admin,
        "model_access.revoke",
        rule.role or rule.user_id or "",
        model=rule.model,
        rule_id=rule.id,
    )
    session.delete(rule)
    session.commit()
    return Response(status_code=204)


# -- feature flags (administrators) ----------------------------------------------------------
@router.get("/admin/feature-flags", response_model=list[FeatureFlagPublic])
def list_feature_flags(admin: AdminUser, session: SessionDep) -> list[FeatureFlagPublic]:
    """Every stored flag, and the flags the server knows that have no row yet (with their
    built-in default)."""
    flags = {f.key: _flag_public(f) for f in session.exec(select(FeatureFlag))}
    for key, (default, description) in KNOWN_FLAGS.items():
        flags.setdefault(
            key,
            FeatureFlagPublic(
                key=key,
                description=description,
                enabled=default,
                roles=[],
                users=[],
                stored=False,
                updated_at=None,
                updated_by=None,
            ),
        )
    return [flags[k] for k in sorted(flags)]


@router.put("/admin/feature-flags/{key}", response_model=FeatureFlagPublic)
def put_feature_flag(
    key: FlagKey, body: FeatureFlagWrite, admin: AdminUser, session: SessionDep
) -> FeatureFlagPublic:
    """Create or replace the flag `key` (idempotent)."""
    users = list(dict.fromkeys(body.users))
    if users:
        found = set(session.exec(select(User.id).where(User.id.in_(users))))
        missing = [u for u in users if u not in found]
        if missing:
            raise ApiError(
                422, "invalid_request", f"users: no user has the id {', '.join(missing)}"
            )
    flag = session.get(FeatureFlag, key) or FeatureFlag(key=key)
    flag.description = body.description
    flag.enabled = body.enabled
    flag.roles = json.dumps(sorted(set(body.roles)))
    flag.users = json.dumps(users)
    flag.updated_at, flag.updated_by = utcnow(), admin.id
    session.add(flag)
    audit(
        session,
        admin,
        "feature_flag.set",
        key,
        enabled=body.enabled,
        roles=json.loads(flag.roles),
        users=users,
    )
    session.commit()
    return _flag_public(flag)


@router.delete("/admin/feature-flags/{key}", status_code=204)
def delete_feature_flag(key: FlagKey, admin: AdminUser, session: SessionDep) -> Response:
    """The flag goes back to its built-in default."""
    flag = session.get(FeatureFlag, key)
    if flag is None:
        raise not_found("feature flag")
    audit(session, admin, "feature_flag.delete", key)
    session.delete(flag)
    session.commit()
    return Response(status_code=204)


# -- shared knowledge base access (administrators) -----------------------------------------
@router.get("/admin/knowledge-access", response_model=list[KnowledgeAccessRulePublic])
def list_knowledge_rules(admin: AdminUser, session: SessionDep) -> list[KnowledgeAccessRule]:
    return list(session.exec(select(KnowledgeAccessRule).order_by(KnowledgeAccessRule.id)))


@router.post("/admin/knowledge-access", response_model=KnowledgeAccessRulePublic, status_code=201)
def create_knowledge_rule(
    body: KnowledgeAccessRuleCreate,
    request: Request,
    response: Response,
    admin: AdminUser,
    session: SessionDep,
) -> KnowledgeAccessRule:
    """Grant a role or a user a shared knowledge base (or `*`). The first rule of a role
    or user restricts it to what its rules name (see access.py). The same rule again
    answers the existing one (200)."""
    from orchard.knowledge.shared import published

    slugs = list(published(request.app.state.settings))
    if body.knowledge_base != "*" and body.knowledge_base not in slugs:
        raise ApiError(
            422,
            "invalid_request",
            f"knowledge_base {body.knowledge_base!r} is not a published shared knowledge base: "
            f"use * or one of {', '.join(slugs) or 'none yet (run the orchard_index DAG)'}",
        )
    if body.user_id is not None and session.get(User, body.user_id) is None:
        raise ApiError(422, "invalid_request", f"user_id: no user has the id {body.user_id!r}")
    existing = session.exec(
        select(KnowledgeAccessRule).where(
            KnowledgeAccessRule.role == body.role
            if body.role
            else KnowledgeAccessRule.user_id == body.user_id,
            KnowledgeAccessRule.knowledge_base == body.knowledge_base,
        )
    ).first()
    if existing is not None:
        response.status_code = 200
        return existing
    rule = KnowledgeAccessRule(**body.model_dump(), created_by=admin.id)
    session.add(rule)
    session.flush()
    audit(
        session,
        admin,
        "knowledge_access.grant",
        body.role or body.user_id,
        knowledge_base=body.knowledge_base,
    )
    session.commit()
    return rule


@router.delete("/admin/knowledge-access/{rule_id}", status_code=204)
def delete_knowledge_rule(
    rule_id: Annotated[int, Path(ge=1, le=OFFSET_MAX)], admin: AdminUser, session: SessionDep
) -> Response:
    rule = session.get(KnowledgeAccessRule, rule_id)
    if rule is None:
        raise not_found("knowledge access rule")
    audit(
        session,
        admin,
        "knowledge_access.revoke",
        rule.role or rule.user_id or "",
        knowledge_base=rule.knowledge_base,
        rule_id=rule.id,
    )
    session.delete(rule)
    session.commit()
    return Response(status_code=204)
