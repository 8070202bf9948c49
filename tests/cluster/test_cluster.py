"""Three hosts on one machine: their own addresses and hostnames, Ray nodes that see
only their own local disk, a network that reaches nothing outside, and a teardown that
leaves nothing behind."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import subprocess

import httpx
import pytest

from orchard import cluster
from orchard.cluster import network, ray_nodes
from orchard.cluster.layout import TEST_NETWORK, new_layout, state_path

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_three_ray_nodes_alive_each_with_its_own_address(cluster_hosts):
    layout = cluster_hosts.layout
    env = cluster.node_env(cluster_hosts.settings, layout)
    nodes = {n["address"]: n for n in ray_nodes.alive_nodes(layout, env)}
    assert sorted(nodes) == sorted(host.address for host in layout.hosts)
    for host in layout.hosts:
        assert ipaddress.ip_address(host.address) in TEST_NETWORK
        node = nodes[host.address]
        assert node["hostname"] == host.hostname
        assert node["resources"][host.resource] == 1
        assert node["labels"]["orchard-host"] == host.name
        assert node["resources"]["CPU"] == 1
        assert ("node:__internal_head__" in node["resources"]) == (host.role == "head")
    assert len({host.address for host in layout.hosts} | {layout.root_address}) == 4
    # The job API, which Airflow's tasks in the root namespace submit to, answers there.
    token = open(layout.token_path).read().strip()
    version = httpx.get(
        f"{layout.dashboard_url}/api/version",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert version.status_code == 200 and version.json()["ray_version"]


def test_each_host_routes_only_to_the_test_hosts(cluster_hosts):
    layout = cluster_hosts.layout
    for host in layout.hosts:
        routes = network.ip("-n", host.netns, "-4", "route", "show").strip().splitlines()
        assert len(routes) == 1 and routes[0].startswith(f"{layout.subnet} dev eth0"), routes
        assert network.ip("-n", host.netns, "-6", "route", "show").strip() == ""
        outside = subprocess.run(
            ["ip", "-n", host.netns, "route", "get", "192.0.2.1"], capture_output=True, text=True
        )
        assert outside.returncode != 0 and "unreachable" in outside.stderr
    # From the root namespace the hosts are on the bridge and nowhere else.
    assert f"dev {layout.bridge}" in network.ip("-4", "route", "show", layout.subnet)


@pytest.mark.parametrize("name, other", [("b", "c"), ("c", "b")])
def test_a_task_pinned_to_a_host_runs_there_and_sees_only_its_own_disk(cluster_hosts, name, other):
    layout = cluster_hosts.layout
    host, other_host = layout.host(name), layout.host(other)
    report = cluster_hosts.run_driver(
        f"""
        import os, socket

        @ray.remote(num_cpus=0, resources={{{host.resource!r}: 0.01}})
        def probe(own, other):
            marker = os.path.join(own, "written-by-task")
            with open(marker, "w") as handle:
                handle.write(socket.gethostname())
            return {{
                "hostname": socket.gethostname(),
                "address": ray.util.get_node_ip_address(),
                "node_id": ray.get_runtime_context().get_node_id(),
                "own": sorted(os.listdir(own)),
                "other": sorted(os.listdir(other)),
            }}

        result = ray.get(probe.remote({host.local_dir!r}, {other_host.local_dir!r}))
        """
    )
    assert report["hostname"] == host.hostname
    assert report["address"] == host.address
    assert "ray" in report["own"] and "written-by-task" in report["own"]
    # The other host's disk exists (the root namespace sees its Ray dir) but not from here.
    assert "ray" in os.listdir(other_host.local_dir)
    assert report["other"] == []
    marker = os.path.join(host.local_dir, "written-by-task")
    assert open(marker).read() == host.hostname
    os.remove(marker)


@pytest.mark.stops_cluster
def test_teardown_leaves_no_namespace_link_process_or_dir(cluster_hosts):
    layout, inodes = cluster_hosts.layout, cluster_hosts.netns_inodes
    assert network.leftovers(layout, inodes)  # the check sees a running cluster
    stopped = cluster_hosts.down()
    assert set(stopped) == {"a", "b", "c"} and all(stopped.values())
    assert network.leftovers(layout, inodes) == []
    assert not any(h.netns in network.ip("netns", "list") for h in layout.hosts)
    assert not state_path(cluster_hosts.settings.home).exists()
    assert cluster.down(cluster_hosts.settings) is None  # idempotent


def test_a_killed_runs_hosts_are_swept_by_the_next_run(tmp_path):
    try:
        network.check_can_create()
    except cluster.ClusterError as error:
        pytest.skip(str(error))
    dead = subprocess.Popen(["true"])
    dead.wait()  # a test run killed before its finalizer: its owner pid is gone
    ports = cluster.RayPorts(gcs=1, dashboard=2, client=3)
    with network.creation_lock():
        layout = new_layout(network.subnets_in_use(), tmp_path / "token", ports, 2**20, True)
        layout = dataclasses.replace(layout, owner_pid=dead.pid)
        os.makedirs(layout.base_dir)
        with open(os.path.join(layout.base_dir, "layout.json"), "w") as handle:
            handle.write(layout.to_json())
        network.create(layout)
    sleeper = subprocess.Popen(network.netns_exec(layout.hosts[1], "sleep", "300"))
    try:
        assert network.leftovers(layout)
        assert layout.run_id in cluster.sweep_orphans()
        assert sleeper.wait(timeout=30) != 0  # killed with its host
        assert network.leftovers(layout) == []
    finally:
        sleeper.kill()
        network.destroy(layout)
