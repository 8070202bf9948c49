"""Dashboards as code and `orchard grafana push`, against a stand-in of Grafana's HTTP API
(testkit/grafana_standin.py: no Grafana server runs here)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from orchard import dashboards
from orchard.grafana import push as grafana_push
from orchard.settings import Settings
from testkit.grafana_standin import GrafanaStandIn
from tests.conftest import ORCHARD_BIN

TOKENS = {"admin-token": "Admin", "editor-token": "Editor"}


@pytest.fixture
def grafana():
    server = GrafanaStandIn(TOKENS)
    yield server
    server.stop()


def push(env_home, grafana, token: str, **extra: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(env_home),
        "ORCHARD_HOME": str(env_home / "home"),
        "ORCHARD_GRAFANA_URL": grafana.url,
        "ORCHARD_GRAFANA_TOKEN": token,
        "ORCHARD_GRAFANA_PROMETHEUS_URL": "http://prometheus.monitoring:9090",
        **extra,
    }
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    return subprocess.run(
        [ORCHARD_BIN, "grafana", "push"], env=env, capture_output=True, text=True, timeout=120
    )


def test_the_committed_dashboards_are_the_generated_ones(tmp_path):
    written = dashboards.write(tmp_path)
    committed = dashboards.load()
    assert sorted(committed) == sorted(p.stem for p in written)
    for path in written:
        assert json.loads(path.read_text()) == committed[path.stem], (
            f"{path.name} is stale: run `orchard grafana write`"
        )
    panels = sum(len(board["panels"]) for board in committed.values())
    print(f"{len(committed)} dashboards, {panels} panels")


def test_every_panel_queries_the_provisioned_datasource():
    for board in dashboards.load().values():
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == dashboards.DATASOURCE_UID, panel["title"]
            assert panel["targets"], f"{board['title']}: {panel['title']} has no query"


def test_push_provisions_folder_datasource_and_dashboards_then_changes_nothing(tmp_path, grafana):
    first = push(tmp_path, grafana, "admin-token")
    assert first.returncode == 0, first.stderr
    boards = dashboards.load()
    state = grafana.state
    assert [f["title"] for f in state.folders.values()] == ["Orchard"]
    source = state.datasources[dashboards.DATASOURCE_UID]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus.monitoring:9090")
    assert sorted(state.dashboards) == sorted(b["uid"] for b in boards.values())
    for board in boards.values():
        stored = state.dashboards[board["uid"]]
        assert stored["meta"]["folderUid"] == "orchard"
        assert stored["dashboard"]["panels"] == board["panels"]
    assert f"{len(boards) + 2} of {len(boards) + 2} objects changed" in first.stdout

    writes, versions = (
        state.writes,
        {u: d["dashboard"]["version"] for u, d in state.dashboards.items()},
    )
    settings = Settings(
        home=tmp_path / "home",
        grafana_url=grafana.url,
        grafana_token="admin-token",
        grafana_prometheus_url="http://prometheus.monitoring:9090",
    )
    assert {c.action for c in grafana_push(settings)} == {"unchanged"}
    assert state.writes == writes  # nothing written at all
    assert {u: d["dashboard"]["version"] for u, d in state.dashboards.items()} == versions

    # A dashboard edited in Grafana is put back; the rest stay as they are.
    serving = state.dashboards["orchard-serving"]["dashboard"]
    serving["panels"] = serving["panels"][:1]
    moved = settings.model_copy(update={"grafana_folder": "ML platform"})
    changed = {(c.kind, c.name) for c in grafana_push(moved) if c.action != "unchanged"}
    assert changed == {("folder", "ML platform"), ("dashboard", "Orchard · Serving")}
    assert state.dashboards["orchard-serving"]["dashboard"]["panels"] == boards["serving"]["panels"]


def test_a_wrong_token_says_so_in_one_line(tmp_path, grafana):
    result = push(tmp_path, grafana, "not-a-token")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: Grafana at {grafana.url} refused the token (401): "
        "set ORCHARD_GRAFANA_TOKEN to a valid service account token"
    ]
    assert not grafana.state.folders


def test_a_token_without_datasource_rights_is_named(tmp_path, grafana):
    result = push(tmp_path, grafana, "editor-token")
    assert result.returncode == 1
    assert "denied the token (403)" in result.stderr
    assert "datasource write access" in result.stderr
