"""The three-host test cluster, started once per pytest run (tests/conftest.py puts every
test that uses it in one xdist group) and removed by the session's finalizer, also when
a test fails. A test that removes it (`stops_cluster`) runs last among its users; a test
that still needs it afterwards gets a fresh one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchard import cluster
from orchard.cluster import network
from orchard.settings import Settings
from testkit.cluster_pretrain import ClusterPretrain, bridge_s3, cluster_pretrain
from tests.conftest import CLUSTER_GROUP


@dataclass
class ClusterHosts:
    settings: Settings
    layout: cluster.Layout | None = None
    # The hosts' namespace ids, to find their processes once the names are gone.
    netns_inodes: dict[str, int] = field(default_factory=dict)

    def ensure_up(self) -> cluster.Layout:
        if self.layout is None:
            self.layout = cluster.up(self.settings, owner_bound=True)
            self.netns_inodes = network.netns_inodes(self.layout)
        return self.layout

    def down(self) -> dict[str, int] | None:
        self.layout = None
        return cluster.down(self.settings)

    def run_driver(self, body: str) -> Any:
        """Run `body` in a Ray driver joined from the root namespace (as Airflow's tasks
        would); it assigns `result`, returned here through JSON."""
        assert self.layout is not None
        script = "import json, ray\nray.init(log_to_driver=False)\n"
        script += textwrap.dedent(body) + "\nprint('RESULT=' + json.dumps(result))\n"
        result = subprocess.run(
            [sys.executable, "-c", script],
            env=cluster.node_env(self.settings, self.layout) | self.layout.client_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        line = [x for x in result.stdout.splitlines() if x.startswith("RESULT=")][-1]
        return json.loads(line.removeprefix("RESULT="))


@pytest.fixture(scope="session", params=[CLUSTER_GROUP])  # see tests/conftest.py
def cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHosts]:
    try:
        network.check_can_create()
    except cluster.ClusterError as error:
        if os.environ.get("CI"):  # CI runs every test: a machine that cannot is a failure
            pytest.fail(f"CI must run the test cluster: {error}")
        pytest.skip(f"no test cluster here: {error}")
    cluster.sweep_orphans()  # what a killed earlier run left behind
    home: Path = tmp_path_factory.mktemp("cluster-home")
    hosts = ClusterHosts(Settings(home=home))
    try:
        yield hosts
    finally:
        cluster.down(hosts.settings)


@pytest.fixture
def cluster_hosts(cluster_session: ClusterHosts) -> ClusterHosts:
    """The running cluster (started again if a `stops_cluster` test removed it)."""
    cluster_session.ensure_up()
    return cluster_session


@pytest.fixture(scope="module")
def cluster_s3(cluster_session: ClusterHosts) -> Iterator[str]:
    """moto's S3 server on the root namespace's bridge address, which the hosts reach
    (testkit.cluster_pretrain.bridge_s3), for a module's tests: its endpoint URL."""
    with bridge_s3(cluster_session.ensure_up()) as endpoint:
        yield endpoint


@pytest.fixture
def cluster_pretraining(
    cluster_hosts: ClusterHosts, cluster_s3: str, tmp_path: Path
) -> Iterator[ClusterPretrain]:
    """A fresh bucket with a tokenized corpus, and a job submitter's settings
    (testkit.cluster_pretrain.ClusterPretrain)."""
    layout = cluster_hosts.ensure_up()
    with cluster_pretrain(cluster_hosts.settings, layout, cluster_s3, tmp_path) as setup:
        yield setup
