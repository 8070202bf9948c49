"""Which model version answers a request's `model` field, kept in step with the registry.

The ingress asks `resolve(model)` on every request and it answers from memory. `refresh`
(polled every few seconds) reads the aliases from MLflow; when an alias moves, the new
version is loaded on a ModelServer replica first (`warm`) and only then does the alias
point at it, so the switch costs no request a cold load and streams already running on
the old version finish on it (it stays resident; Serve's multiplexing keeps several).

Accepted `model` values (name = the registered model, e.g. orchard-chat):
    champion | challenger           an alias served (ServingConfig.aliases)
    <name>@<alias>, models:/<name>@<alias>
    <name>                          the first alias (champion)
    <name>/<version>                a pinned version, if it is registered
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from serving.openai_api import OpenAIError, model_not_found, no_model_loaded
from serving.registry import RegistryReader, RegistryUnavailable, VersionInfo

logger = logging.getLogger(__name__)
RETRY_FAILED_AFTER_S = 60.0


@dataclass(frozen=True)
class Resolved:
    version: str
    model: str  # what responses name: <name>/<version>


class ModelDirectory:
    def __init__(
        self,
        name: str,
        aliases: tuple[str, ...],
        reader: RegistryReader,
        warm: Callable[[str], Awaitable[object]],
    ) -> None:
        self.name = name
        self.aliases = aliases
        self._reader = reader
        self._warm = warm
        self.serving: dict[str, str] = {}  # alias -> version it answers with now
        self.registry: dict[str, str] = {}  # alias -> version MLflow says (may be loading)
        self.versions: dict[str, VersionInfo] = {}
        self.context: dict[str, int] = {}  # version -> its context length, once warmed
        self._failed: dict[str, tuple[float, str]] = {}  # version -> (when, why)
        self.reachable = False

    # -- requests -------------------------------------------------------------------------
    def examples(self) -> list[str]:
        name, first = self.name, self.aliases[0]
        return [*self.aliases, name, f"{name}@{first}", f"{name}/<version>"]

    async def resolve(self, model: str) -> Resolved:
        requested = model.strip().removeprefix("models:/")
        if requested in self.aliases:
            return self._alias(requested)
        if requested == self.name:
            return self._alias(self.aliases[0])
        name, sep, alias = requested.partition("@")
        if sep and name == self.name:
            if alias in self.aliases:
                return self._alias(alias)
            raise model_not_found(model, self.examples())
        name, sep, version = requested.partition("/")
        if sep and name == self.name and version.isdigit():
            return await self._pinned(model, version)
        raise model_not_found(model, self.examples())

    def _alias(self, alias: str) -> Resolved:
        version = self.serving.get(alias)
        if version is not None:
            return Resolved(version, f"{self.name}/{version}")
        pending = self.registry.get(alias)
        if pending is None:
            raise no_model_loaded(
                f"No version of {self.name} has the alias {alias!r} yet: register one "
                f"(orchard.registry.register_hf_model) and set the alias in MLflow."
                + ("" if self.reachable else " (The MLflow registry is not reachable.)")
            )
        if pending in self._failed:
            raise no_model_loaded(
                f"Version {pending} of {self.name} ({alias}) cannot be loaded: "
                f"{self._failed[pending][1]}"
            )
        raise no_model_loaded(
            f"Version {pending} of {self.name} ({alias}) is loading: retry in a few seconds."
        )

    async def _pinned(self, model: str, version: str) -> Resolved:
        if version not in self.versions:
            try:
                info = await self._reader.version(version)
            except RegistryUnavailable as error:
                raise no_model_loaded(f"Cannot check {model} in the registry: {error}") from None
            if info is None:
                raise OpenAIError(
                    404,
                    f"The model {model!r} does not exist: {self.name} has no version {version}.",
                    param="model",
                    code="model_not_found",
                )
            self.versions[version] = info
        return Resolved(version, f"{self.name}/{version}")

    def listing(self) -> list[dict]:
        """Entries of GET /v1/models: the bare name, each alias, each aliased version."""
        entries = []

        def entry(model_id: str, version: str) -> dict:
            info = self.versions.get(version)
            listed = {
                "id": model_id,
                "object": "model",
                "created": info.created if info else 0,
                "owned_by": "orchard",
                "version": version,
                "aliases": sorted(a for a, v in self.serving.items() if v == version),
            }
            if version in self.context:  # prompt + completion tokens it takes (vLLM's name)
                listed["max_model_len"] = self.context[version]
            return listed

        first = self.serving.get(self.aliases[0])
        if first:
            entries.append(entry(self.name, first))
        for alias in self.aliases:
            if alias in self.serving:
                entries.append(entry(alias, self.serving[alias]))
        for version in sorted(set(self.serving.values()), key=int):
            entries.append(entry(f"{self.name}/{version}", version))
        return entries

    # -- keeping up with the registry --------------------------------------------------------
    async def refresh(self) -> None:
        """Read the aliases; warm and switch to moved ones; drop removed ones."""
        try:
            registry = await self._reader.aliases()
        except RegistryUnavailable as error:
            if self.reachable:
                logger.warning("registry unreachable, serving what is loaded: %s", error)
            self.reachable = False
            return
        self.reachable = True
        self.registry = {a: v for a, v in registry.items() if a in self.aliases}
        for alias in self.aliases:
            target = self.registry.get(alias)
            if target is None:
                if self.serving.pop(alias, None) is not None:
                    logger.info("alias %s removed from the registry: no longer served", alias)
                continue
            if self.serving.get(alias) == target:
                continue
            if await self._load(target):
                previous = self.serving.get(alias)
                self.serving[alias] = target
                logger.info("alias %s now serves version %s (was %s)", alias, target, previous)

    async def _load(self, version: str) -> bool:
        failed = self._failed.get(version)
        if failed and time.monotonic() - failed[0] < RETRY_FAILED_AFTER_S:
            return False
        try:
            if version not in self.versions:
                info = await self._reader.version(version)
                self.versions[version] = info or VersionInfo(version, 0)
            loaded = await self._warm(version)
            if isinstance(loaded, dict) and loaded.get("max_context"):
                self.context[version] = int(loaded["max_context"])
        except Exception as error:  # whatever the replica raised; reported, retried later
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
            self._failed[version] = (time.monotonic(), reason)
            logger.error("version %s of %s failed to load: %s", version, self.name, error)
            return False
        self._failed.pop(version, None)
        return True
