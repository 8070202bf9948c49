"""A stand-in for Grafana's HTTP API, for testing `orchard grafana push` (no Grafana server
runs here). NOT Grafana: it implements only the endpoints grafana-client calls for
folders, datasources and dashboards, with Grafana 11's paths, status codes, response
shapes and auth rules as its HTTP API documentation gives them:

- `Authorization: Bearer <service account token>`; an unknown token is 401
  `{"message": "Invalid API key", "messageId": "api-key.invalid", ...}`; a token whose
  role lacks the permission is 403 (Viewers write nothing, Editors write folders and
  dashboards but not datasources, as Grafana's default RBAC has it);
- `GET/POST /api/folders[/:uid]`, `PUT /api/folders/:uid` (version check unless
  `overwrite`);
- `GET/PUT /api/datasources/uid/:uid`, `POST /api/datasources` (409 on a taken name);
- `GET /api/dashboards/uid/:uid` → `{"dashboard", "meta"}`, `POST /api/dashboards/db`
  (400 for an unknown folder, 412 on a version mismatch without `overwrite`); every save
  stores a new version, as Grafana does, so a test can tell a no-op push from a rewrite.
"""

from __future__ import annotations

import copy
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from testkit.http import JsonHandler, LoopbackServer

ROLES = ("Viewer", "Editor", "Admin")
WRITE_ROLE = {"folders": "Editor", "dashboards": "Editor", "datasources": "Admin"}
ACTIONS = {
    "folders": "folders:create",
    "dashboards": "dashboards:create",
    "datasources": "datasources:create",
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


@dataclass
class GrafanaState:
    tokens: dict[str, str]  # token → role
    folders: dict[str, dict] = field(default_factory=dict)
    datasources: dict[str, dict] = field(default_factory=dict)
    dashboards: dict[str, dict] = field(default_factory=dict)  # uid → {"dashboard", "meta"}
    writes: int = 0  # successful POST/PUT requests
    next_id: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


class GrafanaStandIn(LoopbackServer):
    def __init__(self, tokens: dict[str, str]) -> None:
        self.state = GrafanaState(tokens=dict(tokens))
        state = self.state

        class Handler(JsonHandler):
            def _role(self) -> str | None:
                auth = self.headers.get("Authorization", "")
                if not auth.startswith("Bearer "):
                    return None
                return state.tokens.get(auth.removeprefix("Bearer "))

            def _route(self, method: str) -> None:
                role = self._role()
                if role is None:
                    self.reply(
                        401,
                        {
                            "extra": None,
                            "message": "Invalid API key",
                            "messageId": "api-key.invalid",
                            "statusCode": 401,
                            "traceID": "",
                        },
                    )
                    return
                path = self.path.split("?", 1)[0]
                body = self.json_body() if method in ("POST", "PUT") else {}
                kind = path.split("/")[2] if path.count("/") >= 2 else ""
                if method != "GET" and kind in WRITE_ROLE:
                    if ROLES.index(role) < ROLES.index(WRITE_ROLE[kind]):
                        action = ACTIONS[kind]
                        self.reply(
                            403,
                            {
                                "accessErrorId": "ACE0000000001",
                                "message": "You'll need additional permissions to perform "
                                f"this action. Permissions needed: {action}",
                                "title": "Access denied",
                            },
                        )
                        return
                with state.lock:
                    status, reply = _dispatch(state, method, path, body)
                    if method != "GET" and status == 200:
                        state.writes += 1
                self.reply(status, reply)

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_PUT(self) -> None:
                self._route("PUT")

        super().__init__(Handler)


def _not_found(what: str) -> tuple[int, dict]:
    return 404, {"message": f"{what} not found", "statusCode": 404, "traceID": ""}


def _dispatch(state: GrafanaState, method: str, path: str, body: dict) -> tuple[int, Any]:
    parts = path.strip("/").split("/")
    match method, parts:
        case "GET", ["api", "folders", uid]:
            folder = state.folders.get(uid)
            return (200, copy.deepcopy(folder)) if folder else _not_found("Folder")
        case "POST", ["api", "folders"]:
            return _create_folder(state, body)
        case "PUT", ["api", "folders", uid]:
            return _update_folder(state, uid, body)
        case "GET", ["api", "datasources", "uid", uid]:
            source = state.datasources.get(uid)
            return (200, copy.deepcopy(source)) if source else _not_found("Data source")
        case "POST", ["api", "datasources"]:
            return _save_datasource(state, None, body)
        case "PUT", ["api", "datasources", "uid", uid]:
            if uid not in state.datasources:
                return _not_found("Data source")
            return _save_datasource(state, uid, body)
        case "GET", ["api", "dashboards", "uid", uid]:
            board = state.dashboards.get(uid)
            return (200, copy.deepcopy(board)) if board else _not_found("Dashboard")
        case "POST", ["api", "dashboards", "db"]:
            return _save_dashboard(state, body)
    return 404, {"message": "Not found"}


def _create_folder(state: GrafanaState, body: dict) -> tuple[int, dict]:
    title = (body.get("title") or "").strip()
    if not title:
        return 400, {"message": "folder title cannot be empty"}
    uid = body.get("uid") or f"f{state.next_id}"
    if uid in state.folders:
        return 409, {"message": "a folder with the same uid already exists"}
    if any(f["title"] == title for f in state.folders.values()):
        return 409, {"message": "a folder with the same name already exists"}
    now = _now()
    folder = {
        "id": state.new_id(),
        "uid": uid,
        "orgId": 1,
        "title": title,
        "url": f"/dashboards/f/{uid}/{_slug(title)}",
        "hasAcl": False,
        "canSave": True,
        "canEdit": True,
        "canAdmin": True,
        "canDelete": True,
        "createdBy": "service-account",
        "created": now,
        "updatedBy": "service-account",
        "updated": now,
        "version": 1,
    }
    state.folders[uid] = folder
    return 200, copy.deepcopy(folder)


def _update_folder(state: GrafanaState, uid: str, body: dict) -> tuple[int, dict]:
    folder = state.folders.get(uid)
    if folder is None:
        return _not_found("Folder")
    if not body.get("overwrite") and body.get("version") != folder["version"]:
        return 412, {
            "message": "the folder has been changed by someone else",
            "status": "version-mismatch",
        }
    if body.get("title"):
        folder["title"] = body["title"]
        folder["url"] = f"/dashboards/f/{uid}/{_slug(body['title'])}"
    folder["version"] += 1
    folder["updated"] = _now()
    return 200, copy.deepcopy(folder)


DATASOURCE_DEFAULTS = {
    "orgId": 1,
    "typeLogoUrl": "public/app/plugins/datasource/prometheus/img/prometheus_logo.svg",
    "user": "",
    "database": "",
    "basicAuth": False,
    "basicAuthUser": "",
    "withCredentials": False,
    "isDefault": False,
    "jsonData": {},
    "secureJsonFields": {},
    "readOnly": False,
}


def _save_datasource(state: GrafanaState, uid: str | None, body: dict) -> tuple[int, dict]:
    for required in ("name", "type", "access"):
        if not body.get(required):
            return 400, {
                "message": f"Required field {required!r} is missing",
                "messageId": "datasource.invalid",
            }
    name = body["name"]
    target_uid = uid or body.get("uid") or f"ds{state.next_id}"
    taken = [s for s in state.datasources.values() if s["name"] == name and s["uid"] != target_uid]
    if taken or (uid is None and target_uid in state.datasources):
        return 409, {"message": "data source with the same name already exists"}
    old = state.datasources.get(target_uid)
    source = {
        **DATASOURCE_DEFAULTS,
        **{k: v for k, v in body.items() if k not in ("secureJsonData", "version")},
        "id": old["id"] if old else state.new_id(),
        "uid": target_uid,
        "version": old["version"] + 1 if old else 1,
    }
    state.datasources[target_uid] = source
    message = "Datasource updated" if old else "Datasource added"
    return 200, {
        "datasource": copy.deepcopy(source),
        "id": source["id"],
        "message": message,
        "name": name,
    }


def _save_dashboard(state: GrafanaState, body: dict) -> tuple[int, dict]:
    board = copy.deepcopy(body.get("dashboard") or {})
    title = (board.get("title") or "").strip()
    if not title:
        return 400, {"message": "Dashboard title cannot be empty", "status": "empty-name"}
    folder_uid = body.get("folderUid") or ""
    if folder_uid and folder_uid not in state.folders:
        return 400, {"message": "folder not found", "status": "folder-not-found"}
    uid = board.get("uid") or f"d{state.next_id}"
    old = state.dashboards.get(uid)
    if old and not body.get("overwrite") and board.get("version") != old["dashboard"]["version"]:
        return 412, {
            "message": "The dashboard has been changed by someone else",
            "status": "version-mismatch",
        }
    version = old["dashboard"]["version"] + 1 if old else 1
    board.update(
        {"uid": uid, "id": old["dashboard"]["id"] if old else state.new_id(), "version": version}
    )
    slug = _slug(title)
    folder = state.folders.get(folder_uid)
    now = _now()
    state.dashboards[uid] = {
        "dashboard": board,
        "meta": {
            "type": "db",
            "canSave": True,
            "canEdit": True,
            "canAdmin": True,
            "canStar": True,
            "canDelete": True,
            "slug": slug,
            "url": f"/d/{uid}/{slug}",
            "expires": "0001-01-01T00:00:00Z",
            "created": old["meta"]["created"] if old else now,
            "updated": now,
            "updatedBy": "service-account",
            "createdBy": old["meta"]["createdBy"] if old else "service-account",
            "version": version,
            "hasAcl": False,
            "isFolder": False,
            "folderId": folder["id"] if folder else 0,
            "folderUid": folder_uid,
            "folderTitle": folder["title"] if folder else "General",
            "folderUrl": folder["url"] if folder else "",
            "provisioned": False,
            "provisionedExternalId": "",
        },
    }
    return 200, {
        "id": board["id"],
        "uid": uid,
        "url": f"/d/{uid}/{slug}",
        "status": "success",
        "version": version,
        "slug": slug,
    }
