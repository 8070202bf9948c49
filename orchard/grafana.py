"""`orchard grafana push`: provision Orchard's folder, Prometheus datasource and dashboards
into a Grafana (ORCHARD_GRAFANA_URL, ORCHARD_GRAFANA_TOKEN) with grafana-client.

Idempotent: each object is read first and written only when it differs from what the
checkout holds, so a second push reports every object unchanged and bumps no dashboard
version. The token needs the Editor role for folders and dashboards and the datasource
write permission (an Admin service account, or a custom role).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import (
    GrafanaClientError,
    GrafanaException,
    GrafanaUnauthorizedError,
)

from orchard import dashboards
from orchard.errors import OrchardError
from orchard.settings import Settings

FOLDER_UID = "orchard"
DATASOURCE_NAME = "Orchard Prometheus"
# Keys Grafana adds to a stored dashboard that the checkout's JSON does not carry.
GRAFANA_OWNED = ("id", "version")


class GrafanaError(OrchardError):
    pass


@dataclass(frozen=True)
class Change:
    kind: str  # folder, datasource, dashboard
    name: str
    action: str  # created, updated, unchanged


def _client(settings: Settings) -> GrafanaApi:
    if not settings.grafana_url:
        raise GrafanaError(
            "no Grafana to push to: set ORCHARD_GRAFANA_URL (and ORCHARD_GRAFANA_TOKEN)"
        )
    if not settings.grafana_token:
        raise GrafanaError(
            "no Grafana token: set ORCHARD_GRAFANA_TOKEN to a service account token of "
            f"{settings.grafana_url}"
        )
    return GrafanaApi.from_url(
        settings.grafana_url, credential=settings.grafana_token.get_secret_value()
    )


def _missing(error: GrafanaClientError) -> bool:
    return getattr(error, "status_code", None) == 404


def datasource_spec(settings: Settings) -> dict[str, Any]:
    url = settings.grafana_prometheus_url or settings.prometheus_base_url
    return {
        "uid": dashboards.DATASOURCE_UID,
        "name": DATASOURCE_NAME,
        "type": "prometheus",
        "access": "proxy",
        "url": url,
        "isDefault": False,
        "jsonData": {
            "httpMethod": "POST",
            "timeInterval": f"{settings.prometheus_scrape_interval_s}s",
        },
    }


def _push_folder(api: GrafanaApi, title: str) -> Change:
    try:
        folder = api.folder.get_folder(FOLDER_UID)
    except GrafanaClientError as error:
        if not _missing(error):
            raise
        api.folder.create_folder(title, uid=FOLDER_UID)
        return Change("folder", title, "created")
    if folder["title"] == title:
        return Change("folder", title, "unchanged")
    api.folder.update_folder(FOLDER_UID, title=title, overwrite=True)
    return Change("folder", title, "updated")


def _push_datasource(api: GrafanaApi, spec: dict[str, Any]) -> Change:
    try:
        current = api.datasource.get_datasource_by_uid(spec["uid"])
    except GrafanaClientError as error:
        if not _missing(error):
            raise
        api.datasource.create_datasource(spec)
        return Change("datasource", spec["name"], "created")
    if all(current.get(key) == value for key, value in spec.items()):
        return Change("datasource", spec["name"], "unchanged")
    api.datasource.update_datasource_by_uid(spec["uid"], spec)
    return Change("datasource", spec["name"], "updated")


def _push_dashboard(api: GrafanaApi, board: dict[str, Any]) -> Change:
    try:
        current = api.dashboard.get_dashboard(board["uid"])
    except GrafanaClientError as error:
        if not _missing(error):
            raise
        current = None
    if current is not None:
        stored = {k: v for k, v in current["dashboard"].items() if k not in GRAFANA_OWNED}
        if stored == board and current["meta"].get("folderUid") == FOLDER_UID:
            return Change("dashboard", board["title"], "unchanged")
    api.dashboard.update_dashboard(
        {
            "dashboard": board,
            "folderUid": FOLDER_UID,
            "overwrite": True,
            "message": "orchard grafana push",
        }
    )
    return Change("dashboard", board["title"], "created" if current is None else "updated")


def push(settings: Settings) -> list[Change]:
    """Provision the folder, the datasource and every committed dashboard."""
    api = _client(settings)
    boards = dashboards.load()
    if not boards:
        raise GrafanaError(
            f"no dashboards in {dashboards.DASHBOARDS_DIR}: run `orchard grafana write`"
        )
    try:
        changes = [
            _push_folder(api, settings.grafana_folder),
            _push_datasource(api, datasource_spec(settings)),
        ]
        changes += [_push_dashboard(api, board) for board in boards.values()]
    except GrafanaUnauthorizedError:
        raise GrafanaError(
            f"Grafana at {settings.grafana_url} refused the token (401): "
            "set ORCHARD_GRAFANA_TOKEN to a valid service account token"
        ) from None
    except GrafanaClientError as error:
        status = getattr(error, "status_code", "?")
        if status == 403:
            raise GrafanaError(
                f"Grafana at {settings.grafana_url} denied the token (403): it needs the "
                "Editor role on folders and dashboards and datasource write access"
            ) from None
        raise GrafanaError(
            f"Grafana at {settings.grafana_url} answered {status}: {error}"
        ) from None
    except GrafanaException as error:
        raise GrafanaError(f"Grafana at {settings.grafana_url} failed: {error}") from None
    except OSError as error:  # connection refused, DNS: niquests' errors are OSErrors
        raise GrafanaError(f"cannot reach Grafana at {settings.grafana_url}: {error}") from None
    return changes
