"""Administrators and the model registry, against the stack's real MLflow: versions with
eval metrics and lineage, promotion to champion, roll-back to the previous champion, and
every action in the audit log."""

from __future__ import annotations

import httpx
import pytest
from mlflow import MlflowClient

from orchard.registry import register_hf_model
from platform_api.app import create_app
from serving.tiny import build_tiny_chat_model
from tests.platform.conftest import FAST_ARGON2, Api, LiveServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NAME = "orchard-admin-test"


@pytest.fixture(scope="module")
def registry(stack, tmp_path_factory):
    """Two versions of a registered model, neither of them champion yet."""
    root = tmp_path_factory.mktemp("admin-models")
    uri = stack.settings().mlflow_uri
    versions = []
    for seed in (0, 1):
        model_dir = build_tiny_chat_model(root / f"m{seed}", seed=seed, max_context=64)
        tags = {"eval.rouge_l": f"0.{seed + 2}", "orchard.lineage.mix": f"/data/mix/m-{seed}"}
        versions.append(register_hf_model(model_dir, tracking_uri=uri, name=NAME, tags=tags))
    return uri, versions


@pytest.fixture
def platform(stack, registry, tmp_path):
    settings = stack.settings().model_copy(
        update={
            "home": tmp_path / "home",
            "database_url": f"sqlite:///{tmp_path / 'platform.db'}",
            "model_name": NAME,
        }
    )
    server = LiveServer(create_app(settings, FAST_ARGON2))
    server.start()
    http = httpx.Client(base_url=f"{server.url}/api/v1", timeout=120)
    api = Api(http=http, root=server.url, settings=settings, database_url=settings.database_url)
    try:
        yield http, {"alice": api.user("alice").headers, "root": api.admin("root").headers}
    finally:
        http.close()
        server.stop()


def champion(uri: str) -> str | None:
    aliases = MlflowClient(uri, registry_uri=uri).get_registered_model(NAME).aliases
    return str(aliases["champion"]) if "champion" in aliases else None


def test_admins_see_versions_with_metrics_and_lineage(platform, registry):
    http, headers = platform
    _, (first, second) = registry
    assert http.get("/admin/models", headers=headers["alice"]).status_code == 403
    listed = http.get("/admin/models", headers=headers["root"]).json()
    assert listed["name"] == NAME
    assert [v["version"] for v in listed["versions"]] == [second, first]  # newest first
    newest = listed["versions"][0]
    assert newest["metrics"] == {"rouge_l": "0.3"}
    assert newest["lineage"]["orchard.lineage.mix"] == "/data/mix/m-1"
    assert newest["run_id"]


def test_promote_and_roll_back_move_champion_and_are_audited(platform, registry):
    http, headers = platform
    uri, (first, second) = registry
    root = headers["root"]
    assert (
        http.post(
            "/admin/models/promote", json={"version": first}, headers=headers["alice"]
        ).status_code
        == 403
    )

    promoted = http.post("/admin/models/promote", json={"version": first}, headers=root)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json() == {"champion": first, "previous": None}
    again = http.post("/admin/models/promote", json={"version": second}, headers=root).json()
    assert again == {"champion": second, "previous": first}
    assert champion(uri) == second
    listed = http.get("/admin/models", headers=root).json()
    assert listed["aliases"]["champion"] == second and listed["champion_history"] == [first]

    same = http.post("/admin/models/promote", json={"version": second}, headers=root)
    assert (same.status_code, same.json()["code"]) == (409, "registry_refused")
    missing = http.post("/admin/models/promote", json={"version": "999"}, headers=root)
    assert (missing.status_code, missing.json()["code"]) == (404, "version_not_found")
    assert (
        http.post("/admin/models/promote", json={"version": "x"}, headers=root).status_code == 422
    )

    rolled = http.post("/admin/models/rollback", headers=root).json()
    assert rolled == {"champion": first, "previous": second}
    assert champion(uri) == first
    nothing = http.post("/admin/models/rollback", headers=root)
    assert (nothing.status_code, nothing.json()["code"]) == (409, "registry_refused")

    log = http.get("/admin/audit", headers=root).json()
    assert [(e["action"], e["target"]) for e in log] == [
        ("model.rollback", f"{NAME}/{first}"),
        ("model.promote", f"{NAME}/{second}"),
        ("model.promote", f"{NAME}/{first}"),
    ]
    assert log[0]["detail"] == {"actor_email": "root@example.org", "replaced": second}
    assert http.get("/admin/audit", headers=headers["alice"]).status_code == 403
