"""Rate limits per user, per API key and per client IP, on the `limits` library.

A limit is a `limits` string such as "120/minute" or "10/second;1000/hour" (every part
must hold). Counters use a moving window, so a burst at a window edge cannot double the
rate. They live in-process by default and in Redis when `ORCHARD_REDIS_URL` is set, so
every API process of a deployment shares them. An exhausted limit answers 429 with a
`Retry-After` header (whole seconds until the oldest counted request leaves the window).

Which limit applies:
- every request under /api/v1 counts against its client IP (`rate_limit_ip`);
- the unauthenticated auth endpoints (register, login, refresh) also count against a
  stricter per-IP limit (`rate_limit_auth_ip`), which slows password guessing;
- an authenticated request counts against its user (`rate_limit_user`) when it carries an
  access token, and against its API key (`rate_limit_api_key`) when it carries a key.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from limits import RateLimitItem, parse_many
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.requests import HTTPConnection

from orchard.errors import OrchardError
from orchard.settings import Settings
from platform_api.errors import ApiError

KEY_PREFIX = "orchard-ratelimit"


@dataclass(frozen=True)
class Scope:
    """One kind of caller and its limits."""

    name: str  # user, api_key, ip, auth_ip
    setting: str  # the Settings field, for messages
    items: tuple[RateLimitItem, ...]


class RateLimiter:
    def __init__(self, storage: Storage, scopes: dict[str, Scope]) -> None:
        self.storage = storage
        self.scopes = scopes
        self._limiter = MovingWindowRateLimiter(storage)
        self.in_memory = "redis" not in type(storage).__name__.lower()

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        scopes = {}
        for name in ("user", "api_key", "ip", "auth_ip"):
            field = f"rate_limit_{name}"
            # Settings has checked the notation already.
            scopes[name] = Scope(name, field, tuple(parse_many(getattr(settings, field))))
        uri = settings.redis_url or "memory://"
        if not uri.startswith(("redis://", "rediss://", "redis+unix://", "memory://")):
            raise OrchardError(
                f"ORCHARD_REDIS_URL={uri!r} is not a Redis URL: use redis://host:port/db"
            )
        storage = storage_from_string(uri, key_prefix=KEY_PREFIX)
        return cls(storage, scopes)

    @property
    def backend(self) -> str:
        return "memory" if self.in_memory else "redis"

    def check_storage(self) -> None:
        """Fails at start-up, with the URL to fix, when the store cannot be reached."""
        try:
            healthy = self.storage.check()
        except Exception:  # noqa: BLE001 - the client's own error names the cause
            healthy = False
        if not healthy:
            raise OrchardError(
                "cannot reach the rate-limit store at ORCHARD_REDIS_URL: start Redis there "
                "or unset the setting to count in-process"
            )

    def hit(self, scope_name: str, identifier: str) -> None:
        """Counts one request of `identifier`; raises 429 when any limit of the scope is spent.

        A refused request is not counted, so a client that waits `Retry-After` seconds
        gets through."""
        scope = self.scopes[scope_name]
        for item in scope.items:
            if not self._limiter.test(item, scope.name, identifier):
                raise self._refusal(scope, item, identifier)
        for item in scope.items:
            if not self._limiter.hit(item, scope.name, identifier):
                raise self._refusal(scope, item, identifier)

    def _refusal(self, scope: Scope, item: RateLimitItem, identifier: str) -> ApiError:
        stats = self._limiter.get_window_stats(item, scope.name, identifier)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        who = {
            "user": "this account",
            "api_key": "this API key",
            "ip": "this address",
            "auth_ip": "sign-in attempts from this address",
        }[scope.name]
        return ApiError(
            429,
            "rate_limited",
            f"too many requests for {who} (limit {item}): retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


def client_ip(request: HTTPConnection) -> str:
    return request.client.host if request.client else "unknown"


def limit_ip(request: HTTPConnection) -> None:
    """Every request (and WebSocket handshake, and WebSocket action) counts against its
    client address."""
    request.app.state.rate_limiter.hit("ip", client_ip(request))


async def limit_request_ip(request: HTTPConnection) -> None:
    """`limit_ip` as a router dependency: counted on the event loop when the counters are
    in-process (microseconds, no thread-pool hop on every request), in a worker thread
    when they are in Redis (a network round trip must not block the loop)."""
    limiter: RateLimiter = request.app.state.rate_limiter
    if limiter.in_memory:
        limit_ip(request)
    else:
        await run_in_threadpool(limit_ip, request)


def limit_auth_ip(request: Request) -> None:
    """For the endpoints that take a password or a refresh token without a login."""
    request.app.state.rate_limiter.hit("auth_ip", client_ip(request))
