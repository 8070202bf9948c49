"""The hosts' network: one namespace per host, a veth pair into a bridge, nothing else.

    root namespace ── bridge orc<id>br (x.y.z.1/24)
                         ├── orc<id>a ══ eth0 in orchard-<id>-a (x.y.z.10)  head
                         ├── orc<id>b ══ eth0 in orchard-<id>-b (x.y.z.11)  worker
                         └── orc<id>c ══ eth0 in orchard-<id>-c (x.y.z.12)  worker

Each namespace has its loopback and the /24's connected route and no default route, and
the root namespace adds no NAT or forwarding rule: a packet for any address outside the
test's hosts and loopback has nowhere to go. IPv6 is off on every link of the cluster,
so not even link-local neighbour discovery leaves a host.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchard.cluster.layout import TEST_NETWORK, ClusterError, Host, Layout

NETNS_DIR = Path("/run/netns")
# Held only while a subnet is chosen. Not /tmp/orchard-cluster.lock: that one is for
# people and CI to run whole cluster test sessions one at a time
# (`flock /tmp/orchard-cluster.lock pytest tests/cluster`), and a second flock of the same
# file from inside such a session would wait for ever.
_LOCK = Path("/tmp/orchard-cluster-subnet.lock")


def check_can_create() -> None:
    """Root and iproute2 are needed; say what to do when either is missing."""
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            raise ClusterError(
                f"`{tool}` is not installed: install {package} (apt-get install {package})"
            )
    if os.geteuid() != 0:
        raise ClusterError(
            "the test cluster needs root (it creates network namespaces): run it as root, "
            "e.g. with sudo, or in a container started with --cap-add NET_ADMIN,SYS_ADMIN"
        )
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise ClusterError(
            f"`ip netns list` failed ({probe.stderr.strip()}): this machine does not allow "
            "network namespaces; run where `ip netns add` works (a VM, or a privileged container)"
        )


def ip(*args: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise ClusterError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result.stdout


def netns_exec(host: Host, *command: str) -> list[str]:
    return ["ip", "netns", "exec", host.netns, *command]


@contextmanager
def creation_lock() -> Iterator[None]:
    """Two runs choosing a subnet at the same moment must not choose the same one."""
    with open(_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def subnets_in_use() -> set[str]:
    """The /24s of the test range that an address or route of the root namespace uses."""
    text = ip("-4", "-o", "addr", "show") + ip("-4", "route", "show")
    used = set()
    for match in re.finditer(r"\b(198\.1[89]\.\d+\.\d+)(?:/(\d+))?", text):
        network = ipaddress.ip_network(f"{match[1]}/{match[2] or 32}", strict=False)
        for subnet in TEST_NETWORK.subnets(new_prefix=24):
            if subnet.overlaps(network):
                used.add(str(subnet))
    return used


def _disable_ipv6(interface: str, host: Host | None = None) -> None:
    path = f"/proc/sys/net/ipv6/conf/{interface}/disable_ipv6"
    if host is None:
        if os.path.exists(path):
            Path(path).write_text("1")
        return
    subprocess.run(netns_exec(host, "sh", "-c", f"[ ! -e {path} ] || echo 1 > {path}"), check=True)


def create(layout: Layout) -> None:
    """The bridge with the root namespace's address, then each host on it."""
    prefix = ipaddress.ip_network(layout.subnet).prefixlen
    ip("link", "add", layout.bridge, "type", "bridge")
    _disable_ipv6(layout.bridge)
    ip("addr", "add", f"{layout.root_address}/{prefix}", "dev", layout.bridge)
    ip("link", "set", layout.bridge, "up")
    for host in layout.hosts:
        ip("netns", "add", host.netns)
        ip("link", "add", host.veth, "type", "veth", "peer", "name", f"{host.veth}p")
        _disable_ipv6(host.veth)
        ip("link", "set", f"{host.veth}p", "netns", host.netns)
        ip("link", "set", host.veth, "master", layout.bridge)
        ip("link", "set", host.veth, "up")
        ip("-n", host.netns, "link", "set", f"{host.veth}p", "name", "eth0")
        _disable_ipv6("eth0", host)
        ip("-n", host.netns, "addr", "add", f"{host.address}/{prefix}", "dev", "eth0")
        ip("-n", host.netns, "link", "set", "eth0", "up")
        ip("-n", host.netns, "link", "set", "lo", "up")


def netns_pids(host: Host) -> list[int]:
    out = ip("netns", "pids", host.netns, check=False)
    return [int(pid) for pid in out.split()]


def _netns_inode(host: Host) -> int | None:
    try:
        return (NETNS_DIR / host.netns).stat().st_ino
    except OSError:
        return None


def kill_hosts(hosts: list[Host], grace: float = 3.0) -> dict[str, int]:
    """Every process in the hosts' namespaces, as if the machines died: SIGTERM, then
    SIGKILL after `grace` seconds. Returns how many there were per host."""
    counts = {host.name: len(netns_pids(host)) for host in hosts}

    def remaining() -> list[int]:
        return [pid for host in hosts for pid in netns_pids(host)]

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        for pid in remaining():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while remaining() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not remaining():
            break
    return counts


def destroy(layout: Layout) -> dict[str, int]:
    """Stop every process of every host, then remove the namespaces, veths, bridge and
    the hosts' dirs. Idempotent: what is already gone is skipped. Returns the number of
    processes stopped per host."""
    stopped = kill_hosts([host for host in layout.hosts if _netns_inode(host) is not None])
    for host in layout.hosts:
        ip("link", "del", host.veth, check=False)  # removes both ends of the pair
        ip("netns", "del", host.netns, check=False)
    ip("link", "del", layout.bridge, check=False)
    shutil.rmtree(layout.base_dir, ignore_errors=True)
    return stopped


def leftovers(layout: Layout, netns_inodes: dict[str, int] | None = None) -> list[str]:
    """What of this cluster still exists: namespaces, links, processes (in one of its
    namespaces, or with its dirs on their command line), dirs. Empty once torn down."""
    found = []
    existing = set(ip("netns", "list", check=False).split())
    found += [f"namespace {h.netns}" for h in layout.hosts if h.netns in existing]
    links = set(re.findall(r"^\d+: ([^:@\s]+)", ip("-o", "link", "show"), re.M))
    names = [layout.bridge, *(h.veth for h in layout.hosts), *(f"{h.veth}p" for h in layout.hosts)]
    found += [f"link {name}" for name in names if name in links]
    inodes = set((netns_inodes or {}).values())
    inodes |= {inode for h in layout.hosts if (inode := _netns_inode(h)) is not None}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            netns = os.readlink(proc / "ns" / "net")
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        inode = int(netns.split("[")[1].rstrip("]"))
        if inode in inodes or layout.base_dir in cmdline:
            found.append(f"process {proc.name} ({cmdline[:80].strip()})")
    if os.path.exists(layout.base_dir):
        found.append(f"dir {layout.base_dir}")
    return found


def netns_inodes(layout: Layout) -> dict[str, int]:
    """The hosts' namespace ids, to recognise their processes after the names are gone."""
    return {h.name: inode for h in layout.hosts if (inode := _netns_inode(h)) is not None}
