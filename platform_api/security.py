"""Passwords, tokens and one-time codes: the cryptography of the platform, in one place.

- Passwords: Argon2id through pwdlib, at argon2-cffi's parameters unless `PlatformOptions`
  says otherwise; a hash made with other parameters is replaced at the next good login.
- Access tokens: JWT, HS256 only (a token naming any other algorithm, `none` included, is
  refused), 15 minutes, bound to a login session (`sid`) so logout and refresh-token
  reuse end them at once. The key is generated under `<home>/secrets`.
- Refresh tokens, API keys, share tokens: random strings with at least 192 bits of
  entropy, stored as SHA-256 (a fast hash is enough for secrets nobody can guess; Argon2
  is for passwords people choose).
- TOTP secrets are stored encrypted (Fernet, key under `<home>/secrets`); each code's
  time step is accepted once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as random
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
import pyotp
from cryptography.fernet import Fernet
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from orchard import credentials
from orchard.settings import Settings
from platform_api.config import PlatformOptions

ACCESS_TOKEN_TTL = timedelta(minutes=15)
REFRESH_TOKEN_TTL = timedelta(days=30)
JWT_ALGORITHM = "HS256"
JWT_ISSUER = "orchard-platform"
API_KEY_PREFIX = "orch_"
TOTP_ISSUER = "Orchard"
# A stored password hash that no password verifies against: "!" and why (no Argon2 hash
# starts with "!"). An account an OAuth sign-in made has NO_PASSWORD until it sets one.
UNUSABLE_PASSWORD_MARK = "!"
NO_PASSWORD = "!oauth"


class InvalidToken(Exception):
    """The token is malformed, forged, expired or not an access token."""


class Passwords:
    """Argon2id hashing at the configured parameters (the library's by default)."""

    def __init__(self, options: PlatformOptions) -> None:
        self._hash = PasswordHash(
            (
                Argon2Hasher(
                    time_cost=options.argon2_time_cost,
                    memory_cost=options.argon2_memory_cost_kib,
                    parallelism=options.argon2_parallelism,
                ),
            )
        )
        # Checked when the e-mail is unknown, so both cases cost one Argon2 verification.
        self._dummy = self._hash.hash("orchard-no-such-user")

    def hash(self, password: str) -> str:
        return self._hash.hash(password)

    def verify(self, password: str, password_hash: str | None) -> tuple[bool, str | None]:
        """(matches, a new hash to store when the stored one used other parameters)."""
        if not has_usable_password(password_hash):
            self._hash.verify(password, self._dummy)
            return False, None
        return self._hash.verify_and_update(password, password_hash)


def has_usable_password(password_hash: str | None) -> bool:
    """False for accounts no password can log in to (made by an OAuth sign-in, erased)."""
    return password_hash is not None and not password_hash.startswith(UNUSABLE_PASSWORD_MARK)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_refresh_token() -> str:
    return random.token_urlsafe(32)


def new_api_key() -> str:
    return API_KEY_PREFIX + random.token_urlsafe(32)


def new_share_token() -> str:
    return random.token_urlsafe(24)


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    session_id: str


@dataclass(frozen=True)
class Keys:
    """The platform's generated secrets, read once at start-up."""

    jwt_secret: str
    totp_fernet: Fernet

    @classmethod
    def load(cls, settings: Settings) -> Keys:
        directory = settings.secrets_dir
        jwt_secret, _ = credentials.get_or_create(
            directory, "platform-jwt-secret", lambda: random.token_urlsafe(48)
        )
        fernet_key, _ = credentials.get_or_create(
            directory, "platform-totp-key", credentials.fernet_key
        )
        return cls(jwt_secret=jwt_secret, totp_fernet=Fernet(fernet_key))

    # -- access tokens ------------------------------------------------------------------
    def issue_access_token(self, user_id: str, session_id: str, now: datetime) -> str:
        claims = {
            "iss": JWT_ISSUER,
            "sub": user_id,
            "sid": session_id,
            "typ": "access",
            "iat": int(now.timestamp()),
            "exp": int((now + ACCESS_TOKEN_TTL).timestamp()),
        }
        return jwt.encode(claims, self.jwt_secret, algorithm=JWT_ALGORITHM)

    def read_access_token(self, token: str) -> AccessClaims:
        try:
            claims = jwt.decode(
                token,
                self.jwt_secret,
                algorithms=[JWT_ALGORITHM],
                issuer=JWT_ISSUER,
                options={"require": ["exp", "iat", "sub", "sid", "typ", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("access token expired: refresh it or log in again") from None
        except jwt.PyJWTError:
            raise InvalidToken("access token is not valid: log in again") from None
        if claims["typ"] != "access" or not all(isinstance(claims[k], str) for k in ("sub", "sid")):
            raise InvalidToken("access token is not valid: log in again")
        return AccessClaims(user_id=claims["sub"], session_id=claims["sid"])

    # -- TOTP ---------------------------------------------------------------------------
    def seal_totp_secret(self, secret: str) -> str:
        return self.totp_fernet.encrypt(secret.encode()).decode()

    def open_totp_secret(self, sealed: str) -> str:
        return self.totp_fernet.decrypt(sealed.encode()).decode()


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=TOTP_ISSUER)


def match_totp(secret: str, code: str, now: datetime, last_step: int | None) -> int | None:
    """The time step `code` belongs to (now, or one step either side for clock drift), or
    None when it matches none or that step was already used (a replayed code)."""
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for step in (current - 1, current, current + 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None
