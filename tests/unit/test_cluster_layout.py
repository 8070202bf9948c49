"""The test cluster's layout and preflight, without creating anything (no root needed)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path

import pytest

from orchard.cluster.layout import TEST_NETWORK, ClusterError, Layout, RayPorts, new_layout
from tests.conftest import ORCHARD_BIN, REPO

PORTS = RayPorts(gcs=6380, dashboard=8265, client=10001, internal={"node-manager-port": 20100})


def layout(taken: set[str] = frozenset()) -> Layout:
    return new_layout(set(taken), Path("/secrets/ray-auth-token"), PORTS, 200 * 2**20)


def test_names_are_unique_per_run_and_fit_linux_interface_names():
    first, second = layout(), layout()
    assert first.run_id != second.run_id
    for one in (first, second):
        links = [one.bridge, *(h.veth for h in one.hosts), *(f"{h.veth}p" for h in one.hosts)]
        assert all(len(name) <= 15 for name in links), links  # IFNAMSIZ - 1
        assert len(set(links)) == len(links)
        # The hosts' dirs hold Ray's unix sockets: their paths must stay short.
        assert all(len(h.ray_temp_dir) <= 30 for h in one.hosts)
    names = lambda one: {one.bridge, *(h.netns for h in one.hosts), one.base_dir}  # noqa: E731
    assert not names(first) & names(second)


def test_addresses_come_from_the_test_range_and_avoid_subnets_in_use():
    subnets = [str(s) for s in TEST_NETWORK.subnets(new_prefix=24)]
    free = subnets[137]
    chosen = layout(set(subnets) - {free})
    assert chosen.subnet == free
    network = ipaddress.ip_network(free)
    addresses = [chosen.root_address, *(h.address for h in chosen.hosts)]
    assert all(ipaddress.ip_address(a) in network for a in addresses)
    assert len(set(addresses)) == 4
    assert [h.role for h in chosen.hosts] == ["head", "worker", "worker"]
    assert chosen.gcs_address == f"{chosen.head.address}:6380"
    with pytest.raises(ClusterError, match="orchard cluster down"):
        layout(set(subnets))


def test_layout_survives_its_state_file():
    one = layout()
    assert Layout.from_json(one.to_json()) == one


def test_cluster_up_without_root_says_what_to_do_and_creates_nothing(tmp_path):
    home = tmp_path / "home"
    command = [ORCHARD_BIN, "cluster", "up"]
    if os.geteuid() == 0:  # as an unprivileged user, as a developer without sudo would
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    env = {"PATH": os.environ["PATH"], "ORCHARD_HOME": str(home), "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: the test cluster needs root (it creates network namespaces): run it as "
        "root, e.g. with sudo, or in a container started with --cap-add NET_ADMIN,SYS_ADMIN"
    ]
    assert not home.exists()


def test_cluster_status_and_down_without_a_cluster(clean_env):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    status = subprocess.run(
        [ORCHARD_BIN, "cluster", "status"], env=env, capture_output=True, text=True
    )
    assert status.returncode == 1
    assert "No test cluster" in status.stdout and "orchard cluster up" in status.stdout
    down = subprocess.run([ORCHARD_BIN, "cluster", "down"], env=env, capture_output=True, text=True)
    assert down.returncode == 0 and "Nothing to remove" in down.stdout
