"""Generated passwords and keys, kept under `<home>/secrets` (mode 0600), never in the repo."""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from pathlib import Path


def token() -> str:
    return secrets.token_urlsafe(24)


def fernet_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def get_or_create(
    secrets_dir: Path, name: str, make: Callable[[], str] = token
) -> tuple[str, bool]:
    """Return (value, created). A new value is written atomically, readable by us only."""
    secrets_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    path = secrets_dir / name
    if path.exists():
        return path.read_text().strip(), False
    value = make()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    tmp.replace(path)
    return value, True
