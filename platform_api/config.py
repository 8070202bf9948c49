"""Knobs of the platform API that are not (yet) `orchard.settings.Settings` fields.

`create_app(settings, options)` takes them; the defaults are what production runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import argon2


@dataclass(frozen=True, kw_only=True)
class PlatformOptions:
    argon2_time_cost: int = argon2.DEFAULT_TIME_COST
    """Argon2 iterations. The default is argon2-cffi's (RFC 9106's low-memory profile)."""
    argon2_memory_cost_kib: int = argon2.DEFAULT_MEMORY_COST
    """Argon2 memory per hash, KiB (default 64 MiB). Lower it only for tests."""
    argon2_parallelism: int = argon2.DEFAULT_PARALLELISM
    """Argon2 lanes."""

    def __post_init__(self) -> None:
        if self.argon2_time_cost < 1 or self.argon2_parallelism < 1:
            raise ValueError("argon2_time_cost and argon2_parallelism must be at least 1")
        if self.argon2_memory_cost_kib < 8 * self.argon2_parallelism:
            raise ValueError("argon2_memory_cost_kib must be at least 8 × argon2_parallelism")
