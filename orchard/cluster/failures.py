"""A test host dying and coming back: what the node-failure test and `bench/cluster.py`
do to a worker host.

`power_off` is a machine losing power: every process in the host's namespace gets
SIGKILL at once, with no SIGTERM first (a dying machine runs no shutdown, so Ray learns
of it only from broken connections and missed health checks). The namespace, its
address and its local dir stay, as a machine's disk and network port do. `power_on` is
the machine booting again: Ray's worker starts on it as on first boot (a new Ray node
id, the same address) and joins the head.
"""

from __future__ import annotations

import os
import signal
import time

from orchard.cluster import layout as cluster_layout
from orchard.cluster import network, ray_nodes
from orchard.settings import Settings


def power_off(host: cluster_layout.Host, timeout: float = 10.0) -> int:
    """SIGKILL every process of `host` until none is left; return how many there were."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while pids := network.netns_pids(host):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise cluster_layout.ClusterError(
                f"host {host.name} still has processes {pids[:5]} after {timeout:.0f} s of "
                "SIGKILL: run `orchard cluster down`"
            )
        time.sleep(0.05)
    return len(killed)


def power_on(settings: Settings, layout: cluster_layout.Layout, name: str) -> None:
    """Start host `name`'s Ray worker again (it must be a powered-off worker host);
    returns once `ray start` has (the node registers with the head right after)."""
    from orchard.cluster import node_env

    host = layout.host(name)
    if host.role != "worker":
        raise cluster_layout.ClusterError(f"host {name} is the head: only a worker host comes back")
    if network.netns_pids(host):
        raise cluster_layout.ClusterError(f"host {name} is still running: power it off first")
    ray_nodes.start_node(layout, host, node_env(settings, layout))
