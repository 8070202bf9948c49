"""Who may use which model, which model answers, and which features are on: one rule set
for the chat UI and the OpenAI gateway.

Model access. `ModelAccessRule` rows grant a role or one user a model: a serve alias
(`champion`), a registered version (`orchard-chat/3`), the bare model name, or `*` (every
served alias and every version). A user may use the union of their own rules and their
role's. A user with no rule of either kind has the defaults: every serve alias and the
bare model name, and for administrators every version too. So a role's first rule
restricts that role to what its rules name; deleting them all restores the defaults. The
bare model name is the first serve alias under another name (serving answers it so), so
granting either grants both.

A/B split. A `TrafficSplit` row sends `challenger_percent` % of the requests for the
`champion` alias to `challenger`: per chat by a hash of the chat id and the percent (one
conversation stays on one side while the split stands), per request for the gateway.
The side is stored on the answer (`Message.variant`) and on a gateway request's usage
(`UsageRecord.variant`).

Feature flags. A `FeatureFlag` row is on for a user when it is `enabled` and its `roles`
list is empty or holds the user's role, and always for the user ids in its `users`. With
no row a flag has its default (`KNOWN_FLAGS`, off for any other key), so adding a flag to
the code changes nothing until an administrator writes its row.

Shared knowledge bases. `KnowledgeAccessRule` rows grant a role or one user a shared
knowledge base (one a pipeline published, e.g. the crawled site) by slug, or `*` for every
one, the way model rules grant models: no rule for the user or their role, every shared
base; otherwise the union of what their rules name.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from sqlalchemy import bindparam, or_
from sqlmodel import Session, select

from orchard.settings import Settings
from platform_api.errors import ApiError
from platform_api.models import (
    VARIANTS,
    FeatureFlag,
    KnowledgeAccessRule,
    ModelAccessRule,
    TrafficSplit,
    User,
)

EVERY_MODEL = "*"
CHAMPION, CHALLENGER = VARIANTS
# Flags the server acts on, with their behaviour while no row exists.
KNOWN_FLAGS: dict[str, tuple[bool, str]] = {
    "shares": (
        True,
        "Share links: creating them, and reading the chats their owners shared. Off for a "
        "user: their links answer 404 and they cannot create new ones.",
    ),
}


@dataclass(frozen=True)
class Models:
    """The models one user may use: `names` (aliases, the bare name, pinned versions) and,
    when `every_version`, any `<model_name>/<n>`."""

    names: tuple[str, ...]
    every_version: bool
    version_prefix: str

    def __contains__(self, model: object) -> bool:
        if model in self.names:
            return True
        return self.every_version and _is_version(str(model), self.version_prefix)

    def aliases(self, settings: Settings) -> list[str]:
        """The serve aliases among them: what a chat may be set to."""
        return [a for a in settings.serve_aliases if a in self.names]

    def describe(self) -> str:
        names = list(self.names)
        if self.every_version:
            names.append(f"{self.version_prefix}<version>")
        return ", ".join(names) or "none"


def _is_version(model: str, prefix: str) -> bool:
    return model.startswith(prefix) and model[len(prefix) :].isdigit()


def valid_model(settings: Settings, model: str) -> bool:
    """What a rule may name: `*`, a serve alias, the bare model name, a version, or the
    embedding model (`embedding_names`)."""
    return (
        model in (EVERY_MODEL, settings.model_name, *settings.serve_aliases)
        or _is_version(model, f"{settings.model_name}/")
        or model in embedding_names(settings)
    )


@cache
def _embedding_names(directory: Path | None) -> tuple[str, str]:
    from orchard.knowledge.embeddings import model_name

    name = model_name(directory)
    return name, name.rsplit("/", 1)[-1]


def embedding_names(settings: Settings) -> tuple[str, str]:
    """The embedding model serving's `/v1/embeddings` runs, under the two names it answers
    to: its full name (`sentence-transformers/all-MiniLM-L6-v2`) and the last part."""
    return _embedding_names(settings.embedding_model)


_RULES = select(ModelAccessRule.model).where(  # built once: every gateway request reads it
    or_(
        ModelAccessRule.user_id == bindparam("p_user_id"),
        ModelAccessRule.role == bindparam("p_role"),
    )
)


def models_for(session: Session, settings: Settings, user: User) -> Models:
    rules = session.execute(_RULES, {"p_user_id": user.id, "p_role": user.role}).scalars().all()
    bare, first = settings.model_name, settings.serve_aliases[0]
    served = (*settings.serve_aliases, bare)
    if not rules:
        return Models(served, user.role == "admin", f"{bare}/")
    granted = set(rules)
    if EVERY_MODEL in granted:
        return Models(served, True, f"{bare}/")
    if granted & {bare, first}:
        granted |= {bare, first}
    # Rules naming an alias no longer served (the settings changed) grant nothing.
    versions = sorted(
        (m for m in granted if _is_version(m, f"{bare}/")), key=lambda m: (len(m), m)
    )  # numeric order
    return Models((*(m for m in served if m in granted), *versions), False, f"{bare}/")


def embedding_route(session: Session, settings: Settings, user: User, model: str) -> bool:
    """Whether `model` names the embedding model and the user may use it: by default every
    user may; once a user's or role's rules exist, only when one names it (by either
    name) or `*`, as for the chat models."""
    names = embedding_names(settings)
    if model not in names:
        return False
    rules = set(session.execute(_RULES, {"p_user_id": user.id, "p_role": user.role}).scalars())
    return not rules or bool(rules & {EVERY_MODEL, *names})


def may_use(session: Session, settings: Settings, user: User, model: str) -> bool:
    return model in models_for(session, settings, user)


def check_chat_alias(session: Session, settings: Settings, user: User, alias: str) -> None:
    """A chat's model: a served alias (422 otherwise) the user may use (403)."""
    served = settings.serve_aliases
    if alias not in served:
        raise ApiError(
            422,
            "unknown_model",
            f"model_alias {alias!r} is not served: use one of {', '.join(served)}",
        )
    usable = models_for(session, settings, user).aliases(settings)
    if alias not in usable:
        choice = f"use one of {', '.join(usable)}" if usable else "ask an administrator"
        raise ApiError(
            403, "model_forbidden", f"your account may not use the model {alias!r}: {choice}"
        )


def default_chat_alias(session: Session, settings: Settings, user: User) -> str:
    """The first serve alias the user may use (the first one, if none: refused later)."""
    usable = models_for(session, settings, user).aliases(settings)
    return usable[0] if usable else settings.serve_aliases[0]


# -- the A/B split ------------------------------------------------------------------------
def challenger_percent(session: Session, settings: Settings) -> int:
    split = session.get(TrafficSplit, settings.model_name)
    return split.challenger_percent if split else 0


def chat_variant(chat_id: str, percent: int) -> str:
    """The side a chat is on: the same for every turn while the percent stands."""
    digest = hashlib.sha256(f"{chat_id}:{percent}".encode()).digest()
    return CHALLENGER if int.from_bytes(digest[:8], "big") % 100 < percent else CHAMPION


def request_variant(percent: int) -> str:
    """The side of one gateway request (no conversation to keep on one side)."""
    return CHALLENGER if random.random() * 100 < percent else CHAMPION  # noqa: S311


def chat_route(session: Session, settings: Settings, user: User, chat) -> tuple[str, str | None]:
    """At send time: the chat's model must still be allowed (a rule may have gone since
    the chat was set), then (the alias serving is asked for, the A/B side or None when the
    chat asked for another alias than the champion)."""
    check_chat_alias(session, settings, user, chat.model_alias)
    if chat.model_alias != CHAMPION:
        return chat.model_alias, None
    variant = chat_variant(chat.id, challenger_percent(session, settings))
    return variant, variant


def gateway_route(
    session: Session, settings: Settings, user: User, model: str
) -> tuple[str, str | None] | None:
    """(the model the gateway forwards `model` as, the A/B side or None when the request
    did not ask for the champion), or None when the user may not use `model`. The champion
    (by alias or by the bare model name) is split per request."""
    if not may_use(session, settings, user, model):
        return None
    if model == CHAMPION or (
        model == settings.model_name and settings.serve_aliases[0] == CHAMPION
    ):
        variant = request_variant(challenger_percent(session, settings))
        return (CHALLENGER if variant == CHALLENGER else model), variant
    return model, None


# -- feature flags ------------------------------------------------------------------------
FLAG_KEY = re.compile(r"[a-z0-9_.-]{1,64}")


def flag_on(flag: FeatureFlag, user: User) -> bool:
    if user.id in json.loads(flag.users):
        return True
    roles = json.loads(flag.roles)
    return flag.enabled and (not roles or user.role in roles)


def feature_enabled(session: Session, user: User, key: str) -> bool:
    flag = session.get(FeatureFlag, key)
    if flag is None:
        return KNOWN_FLAGS.get(key, (False, ""))[0]
    return flag_on(flag, user)


def features_for(session: Session, user: User) -> list[str]:
    """The keys on for `user`: rows that are on, and known flags on by default with no row."""
    rows = {f.key: f for f in session.exec(select(FeatureFlag))}
    keys = {k for k, f in rows.items() if flag_on(f, user)}
    keys |= {k for k, (default, _) in KNOWN_FLAGS.items() if default and k not in rows}
    return sorted(keys)


def require_feature(session: Session, user: User, key: str) -> None:
    if not feature_enabled(session, user, key):
        raise ApiError(403, "feature_disabled", f"{key!r} is switched off for your account")


# -- shared knowledge bases ------------------------------------------------------------------
EVERY_BASE = "*"


def knowledge_bases_for(session: Session, user: User, published: list[str]) -> list[str]:
    """The shared bases (slugs among `published`) `user` may search: every one when
    neither the user nor their role has a rule, else those their rules name (`*`: all)."""
    rules = set(
        session.exec(
            select(KnowledgeAccessRule.knowledge_base).where(
                or_(KnowledgeAccessRule.user_id == user.id, KnowledgeAccessRule.role == user.role)
            )
        )
    )
    if not rules or EVERY_BASE in rules:
        return list(published)
    return [slug for slug in published if slug in rules]
