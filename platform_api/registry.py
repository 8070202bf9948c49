"""The model registry as administrators see it: versions of the registered chat model in
MLflow with their eval metrics and lineage, promotion to `champion`, and roll-back.

Only an administrator's promotion (or its roll-back) moves `champion`; the pipeline
moves `challenger`. Each promotion pushes the champion it replaces onto a history kept
on the registered model itself (tag `orchard.champion_history`, a JSON list), so a
roll-back returns to exactly the previous champion, from any API process. Serving
follows the alias within its polling interval (no restart, no dropped stream).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from orchard.errors import OrchardError

CHAMPION = "champion"
HISTORY_TAG = "orchard.champion_history"
HISTORY_KEEP = 50


class RegistryError(OrchardError):
    """The registry cannot do what was asked; the message says why."""


class VersionNotFound(RegistryError):
    pass


class RegistryUnavailable(OrchardError):
    pass


@dataclass(frozen=True)
class VersionInfo:
    version: str
    aliases: list[str]
    created_at_ms: int
    status: str
    run_id: str | None
    metrics: dict[str, str]  # eval.* tags
    lineage: dict[str, str]  # orchard.* tags
    description: str
    review: dict | None = None  # the latest A/B review (tag ab.review)


HEALTH_TIMEOUT_S = 3.0
REVIEW_TAG = "ab.review"


def _review(tags: dict[str, str]) -> dict | None:
    try:
        return json.loads(tags[REVIEW_TAG]) if REVIEW_TAG in tags else None
    except ValueError:
        return None


class Registry:
    def __init__(self, tracking_uri: str, name: str) -> None:
        self.name = name
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._checked = False

    def _reachable(self) -> None:
        """MLflow's client retries a dead server with backoff for minutes; an admin page
        should say at once that the registry is down. One quick probe per request."""
        if self._checked or not self.tracking_uri.startswith(("http://", "https://")):
            return
        try:
            httpx.get(f"{self.tracking_uri}/health", timeout=HEALTH_TIMEOUT_S).raise_for_status()
        except httpx.HTTPError as error:
            raise RegistryUnavailable(
                f"the MLflow registry at {self.tracking_uri} does not answer "
                f"({type(error).__name__}): start it or fix ORCHARD_MLFLOW_TRACKING_URI"
            ) from None
        self._checked = True

    def _call(self, what: str, fn, *args):
        """One MLflow call: a missing model or version is `VersionNotFound`, any other
        failure `RegistryUnavailable`, each saying what was being done."""
        self._reachable()
        try:
            return fn(*args)
        except MlflowException as error:
            if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise VersionNotFound(f"{what}: {error.message}") from None
            raise RegistryUnavailable(
                f"the MLflow registry failed ({what}): {error.message}"
            ) from None
        except Exception as error:  # noqa: BLE001 - connection errors of the REST client
            raise RegistryUnavailable(
                f"the MLflow registry cannot be reached ({type(error).__name__})"
            ) from None

    def _registered(self):
        """The registered model, or None before its first version."""
        try:
            return self._call("reading the model", self.client.get_registered_model, self.name)
        except VersionNotFound:
            return None

    @staticmethod
    def _aliases(model) -> dict[str, str]:
        return {a: str(v) for a, v in model.aliases.items()} if model else {}

    @staticmethod
    def _history(model) -> list[str]:
        try:
            return json.loads((model.tags or {}).get(HISTORY_TAG, "[]")) if model else []
        except ValueError:
            return []

    def overview(self) -> tuple[dict[str, str], list[str], list[VersionInfo]]:
        """(alias -> version, earlier champions oldest first, versions newest first)."""
        model = self._registered()
        if model is None:
            return {}, [], []
        aliases = self._aliases(model)
        found = self._call(
            "listing versions", self.client.search_model_versions, f"name = '{self.name}'"
        )
        infos = [
            VersionInfo(
                version=str(v.version),
                aliases=sorted(a for a, version in aliases.items() if version == str(v.version)),
                created_at_ms=int(v.creation_timestamp or 0),
                status=str(v.status),
                run_id=v.run_id,
                metrics={
                    k.removeprefix("eval."): val
                    for k, val in v.tags.items()
                    if k.startswith("eval.")
                },
                lineage={k: val for k, val in v.tags.items() if k.startswith("orchard.")},
                description=v.description or "",
                review=_review(v.tags),
            )
            for v in found
        ]
        return aliases, self._history(model), sorted(infos, key=lambda i: -int(i.version))

    def _move_champion(self, version: str, history: list[str]) -> None:
        self._call(
            "recording the history",
            self.client.set_registered_model_tag,
            self.name,
            HISTORY_TAG,
            json.dumps(history[-HISTORY_KEEP:]),
        )
        self._call(
            "moving the alias", self.client.set_registered_model_alias, self.name, CHAMPION, version
        )

    def promote(self, version: str) -> str | None:
        """Point `champion` at `version`; returns the champion it replaced."""
        self._call(f"finding version {version}", self.client.get_model_version, self.name, version)
        model = self._registered()
        previous = self._aliases(model).get(CHAMPION)
        if previous == version:
            raise RegistryError(f"version {version} is already the champion")
        history = self._history(model)
        self._move_champion(version, [*history, previous] if previous else history)
        return previous

    def rollback(self) -> tuple[str | None, str]:
        """Back to the previous champion; returns (replaced, restored)."""
        model = self._registered()
        history = self._history(model)
        if not history:
            raise RegistryError("there is no previous champion to roll back to")
        replaced = self._aliases(model).get(CHAMPION)
        self._move_champion(history[-1], history[:-1])
        return replaced, history[-1]

    def version_tags(self, version: str) -> dict[str, str]:
        found = self._call(
            f"finding version {version}", self.client.get_model_version, self.name, version
        )
        return dict(found.tags)

    def set_version_tag(self, version: str, key: str, value: str) -> None:
        self._call(
            f"tagging version {version}",
            self.client.set_model_version_tag,
            self.name,
            version,
            key,
            value,
        )

    def card(self, version: str, mlflow_url: str | None, airflow_url: str | None) -> dict:
        """Version `version`'s model card (orchard.model_card)."""
        from orchard.model_card import card_for_version

        return self._call(
            f"building the card of version {version}",
            lambda: card_for_version(
                self.tracking_uri,
                self.name,
                version,
                mlflow_url=mlflow_url,
                airflow_url=airflow_url,
            ),
        )
