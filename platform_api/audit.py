"""The audit log: every administrator action, written in the transaction of the action
itself (so an action that is rolled back leaves no entry, and one that commits always
has its entry)."""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import Session

from platform_api.models import AuditEntry, User


def audit(session: Session, actor: User, action: str, target: str = "", **detail: Any) -> None:
    """Add the entry to `session`; the caller commits it with the action."""
    session.add(
        AuditEntry(
            actor_id=actor.id,
            action=action,
            target=target[:200],
            detail=json.dumps({"actor_email": actor.email, **detail}, default=str),
        )
    )
