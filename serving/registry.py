"""The model registry as serving reads it. Registration lives in `orchard.registry`
(`register_hf_model`); serving only reads aliases and versions.

`RegistryReader` is what the serving ingress polls: a few small REST calls to the MLflow
server (httpx, no `mlflow` import), never one per request.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class VersionInfo:
    version: str
    created: int  # seconds since the epoch


class RegistryUnavailable(RuntimeError):
    pass


class RegistryReader:
    """Aliases and versions of one registered model, read over MLflow's REST API."""

    def __init__(self, tracking_uri: str, name: str, *, timeout: float = 5.0) -> None:
        self.name = name
        self._client = httpx.AsyncClient(
            base_url=f"{tracking_uri.rstrip('/')}/api/2.0/mlflow", timeout=timeout
        )

    async def _get(self, path: str, **params: str) -> dict | None:
        try:
            response = await self._client.get(path, params=params)
        except httpx.HTTPError as error:
            raise RegistryUnavailable(f"MLflow unreachable: {error}") from error
        if response.status_code == 404 or (
            response.status_code == 400
            and "RESOURCE_DOES_NOT_EXIST" in response.text  # some versions answer 400
        ):
            return None
        if response.status_code != 200:
            raise RegistryUnavailable(f"MLflow answered {response.status_code}: {response.text}")
        return response.json()

    async def aliases(self) -> dict[str, str]:
        """alias -> version; empty when the model is not registered yet."""
        body = await self._get("/registered-models/get", name=self.name)
        if body is None:
            return {}
        aliases = body["registered_model"].get("aliases", [])
        return {item["alias"]: str(item["version"]) for item in aliases}

    async def version(self, version: str) -> VersionInfo | None:
        body = await self._get("/model-versions/get", name=self.name, version=version)
        if body is None:
            return None
        created = int(body["model_version"].get("creation_timestamp", 0)) // 1000
        return VersionInfo(version=str(version), created=created)

    async def aclose(self) -> None:
        await self._client.aclose()


QUANTIZATION_TAG = "orchard.serve.quantization"


def version_tags(tracking_uri: str, name: str, version: str, *, timeout: float = 10.0) -> dict:
    """A registered version's tags (e.g. `orchard.serve.quantization`), one REST call."""
    response = httpx.get(
        f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/model-versions/get",
        params={"name": name, "version": version},
        timeout=timeout,
    )
    if response.status_code != 200:
        raise RegistryUnavailable(f"MLflow answered {response.status_code}: {response.text}")
    tags = response.json()["model_version"].get("tags", [])
    return {item["key"]: item.get("value", "") for item in tags}
