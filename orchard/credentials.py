"""Orchard's credentials: the secrets the local stack generates, and the logins Orchard's
clients present to Airflow and Ray.

Generated secrets live under `<home>/secrets`, one file each (mode 0600, directory 0700),
never in the repository; `get_or_create` makes a secret on first use and reads it after.
The local stack (`orchard.stack`) configures its services with them; the clients read
them back. A production service has no such file: its login comes from settings
(`ORCHARD_AIRFLOW_TOKEN`, or `ORCHARD_AIRFLOW_USERNAME` + `ORCHARD_AIRFLOW_PASSWORD`),
which win over the file whenever they are set.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchard.errors import OrchardError
from orchard.settings import Settings

# The files under <home>/secrets.
AIRFLOW_PASSWORD_SECRET = "airflow-admin-password"
AIRFLOW_PASSWORDS_FILE = "airflow-passwords.json"  # the simple auth manager's user list
AIRFLOW_FERNET_KEY_SECRET = "airflow-fernet-key"
AIRFLOW_API_SECRET_KEY_SECRET = "airflow-api-secret-key"
AIRFLOW_JWT_SECRET = "airflow-jwt-secret"
RAY_TOKEN_SECRET = "ray-auth-token"


class CredentialsError(OrchardError):
    """No credentials for a service; the message says which settings to set."""


def token() -> str:
    return secrets.token_urlsafe(24)


def fernet_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def private_dir(path: Path) -> Path:
    """`path`, created if needed, readable by us only."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def get_or_create(
    secrets_dir: Path, name: str, make: Callable[[], str] = token
) -> tuple[str, bool]:
    """Return (value, created). A new value is written atomically, readable by us only."""
    path = private_dir(secrets_dir) / name
    if path.exists():
        return path.read_text().strip(), False
    value = make()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    tmp.replace(path)
    return value, True


# -- Airflow --------------------------------------------------------------------------


@dataclass(frozen=True)
class AirflowLogin:
    """How to sign in to Airflow's REST API: a bearer token as it is, or a user name and
    password exchanged for one (`POST /auth/token`). `source` says where it came from, for
    error messages."""

    username: str
    password: str | None = None
    token: str | None = None
    source: str = ""


def airflow_password_file(settings: Settings) -> Path:
    return settings.secrets_dir / AIRFLOW_PASSWORD_SECRET


def airflow_admin_password(settings: Settings) -> tuple[str, bool]:
    """The password the local stack gives its Airflow user: (value, created).
    `ORCHARD_AIRFLOW_PASSWORD` when set, else a generated one kept in the secrets."""
    if settings.airflow_password:
        return settings.airflow_password.get_secret_value(), False
    return get_or_create(settings.secrets_dir, AIRFLOW_PASSWORD_SECRET)


def airflow_login(settings: Settings) -> AirflowLogin:
    """The Airflow login from settings (a token, else user name + password), else the
    password file `orchard up` writes for the local stack; an error naming both if neither
    exists."""
    if settings.airflow_token:
        return AirflowLogin(
            settings.airflow_username,
            token=settings.airflow_token.get_secret_value(),
            source="ORCHARD_AIRFLOW_TOKEN",
        )
    if settings.airflow_password:
        return AirflowLogin(
            settings.airflow_username,
            password=settings.airflow_password.get_secret_value(),
            source="ORCHARD_AIRFLOW_PASSWORD",
        )
    path = airflow_password_file(settings)
    if path.is_file():
        return AirflowLogin(
            settings.airflow_username, password=path.read_text().strip(), source=str(path)
        )
    if settings.airflow_url:
        raise CredentialsError(
            f"no credentials for the Airflow at {settings.airflow_url}: set "
            "ORCHARD_AIRFLOW_USERNAME and ORCHARD_AIRFLOW_PASSWORD (a user of that Airflow "
            "allowed to trigger DAGs), or ORCHARD_AIRFLOW_TOKEN (a bearer token of its API)"
        )
    raise CredentialsError(
        f"no Airflow password in {path}: run `orchard up` first (it creates the local "
        "Airflow and that file), or, for another Airflow, set ORCHARD_AIRFLOW_URL with "
        "ORCHARD_AIRFLOW_USERNAME and ORCHARD_AIRFLOW_PASSWORD, or ORCHARD_AIRFLOW_TOKEN"
    )


# -- Ray ------------------------------------------------------------------------------


def ray_auth_env(settings: Settings) -> dict[str, str]:
    """Ray token auth for the local head and its clients (job submission, ray.init),
    creating the token on first use.

    Ray's gRPC servers bind every interface whatever --node-ip-address says, so the
    local head requires a token that only processes started by Orchard can read.
    """
    if settings.ray_address:
        return {}
    get_or_create(settings.secrets_dir, RAY_TOKEN_SECRET)
    return {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(settings.secrets_dir / RAY_TOKEN_SECRET),
    }


def ray_auth_headers(settings: Settings) -> dict[str, str]:
    """The header the local Ray head's dashboard and job API want (none for an external
    cluster, or before the local head made its token)."""
    path = settings.secrets_dir / RAY_TOKEN_SECRET
    if settings.ray_address or not path.exists():
        return {}
    return {"Authorization": f"Bearer {path.read_text().strip()}"}
