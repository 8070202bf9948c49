"""What a cluster of test hosts is made of: names, addresses, directories and ports.

A layout is decided before anything is created and saved under ORCHARD_HOME, so
`orchard cluster down` (or a test's finalizer) removes exactly what `up` made, even
when `up` stopped half-way.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orchard.errors import OrchardError

# 198.18.0.0/15 is reserved for network tests (RFC 2544): nothing real lives there.
TEST_NETWORK = ipaddress.ip_network("198.18.0.0/15")
HOST_NAMES = ("a", "b", "c")  # a: the Ray head; b, c: Ray workers
ROOT_HOST = 1  # the root namespace's address on the bridge: x.y.z.1
FIRST_HOST = 10  # host a is x.y.z.10, b .11, c .12


class ClusterError(OrchardError):
    """The test cluster cannot be created, found or removed; the message says what to do."""


@dataclass(frozen=True)
class Host:
    name: str  # "a", "b", "c"
    role: str  # "head" or "worker"
    netns: str  # the network namespace
    veth: str  # the root-side end of its veth pair (the other end is eth0 inside)
    address: str
    hostname: str  # its own UTS name, so tasks see which machine they run on
    local_dir: str  # its "local disk": Ray's temp dir lives here; other hosts cannot see it

    @property
    def resource(self) -> str:
        """The custom Ray resource that pins a task to this host."""
        return f"host_{self.name}"

    @property
    def ray_temp_dir(self) -> str:
        return f"{self.local_dir}/ray"


@dataclass(frozen=True)
class RayPorts:
    gcs: int
    dashboard: int
    client: int
    # `ray start` option -> port (node manager, object manager, agents, worker range);
    # every host has its own network stack, so all hosts use the same numbers.
    internal: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Layout:
    run_id: str
    owner_pid: int
    subnet: str  # e.g. 198.18.37.0/24
    bridge: str
    root_address: str  # the root namespace on the bridge (Airflow, MLflow, the platform)
    base_dir: str  # the hosts' local dirs are under it
    token_path: str  # Ray's auth token, readable by root only
    ports: RayPorts
    hosts: tuple[Host, ...]
    object_store_bytes: int
    # True for a test run's cluster: it dies with owner_pid, and a later run removes it
    # if that process was killed before its finalizer ran (see `sweep_orphans`).
    owner_bound: bool = False

    @property
    def head(self) -> Host:
        return self.hosts[0]

    @property
    def workers(self) -> tuple[Host, ...]:
        return self.hosts[1:]

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise ClusterError(f"no host {name!r} in the cluster: choose from {', '.join(HOST_NAMES)}")

    @property
    def gcs_address(self) -> str:
        """What `ray.init(address=...)` and `ray start --address` take."""
        return f"{self.head.address}:{self.ports.gcs}"

    @property
    def dashboard_url(self) -> str:
        """The head's dashboard and job submission API (what ORCHARD_RAY_ADDRESS takes)."""
        return f"http://{self.head.address}:{self.ports.dashboard}"

    def client_env(self) -> dict[str, str]:
        """What a Ray driver or job client in the root namespace needs to join."""
        return {
            "RAY_ADDRESS": self.gcs_address,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": self.token_path,
            "RAY_USAGE_STATS_ENABLED": "0",
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Layout:
        data = json.loads(text)
        data["ports"] = RayPorts(**data["ports"])
        data["hosts"] = tuple(Host(**host) for host in data["hosts"])
        return cls(**data)


def state_path(home: Path) -> Path:
    return home / "cluster" / "layout.json"


# A copy of each layout also sits in its base dir, where a later run can find it.
BASE_DIR_GLOB = "/tmp/orc-*/layout.json"


def new_layout(
    taken_subnets: set[str],
    token_path: Path,
    ports: RayPorts,
    object_store_bytes: int,
    owner_bound: bool = False,
) -> Layout:
    """A fresh layout: a random run id (names never collide with another run's) and a
    /24 of the test range that no interface or route of this machine uses yet."""
    run_id = secrets.token_hex(3)
    subnets = list(TEST_NETWORK.subnets(new_prefix=24))
    free = [subnet for subnet in subnets if str(subnet) not in taken_subnets]
    if not free:
        raise ClusterError(
            f"every /24 of {TEST_NETWORK} is in use on this machine: "
            "run `orchard cluster down` for clusters left behind"
        )
    subnet = free[secrets.randbelow(len(free))]
    address = list(subnet.hosts())
    # Ray's unix sockets live under its temp dir and a socket path must stay under 107
    # bytes, so the hosts' dirs sit at a short path, not under ORCHARD_HOME.
    base_dir = f"/tmp/orc-{run_id}"
    hosts = tuple(
        Host(
            name=name,
            role="head" if index == 0 else "worker",
            netns=f"orchard-{run_id}-{name}",
            veth=f"orc{run_id}{name}",
            address=str(address[FIRST_HOST - 1 + index]),
            hostname=f"host-{name}",
            local_dir=f"{base_dir}/{name}",
        )
        for index, name in enumerate(HOST_NAMES)
    )
    return Layout(
        run_id=run_id,
        owner_pid=os.getpid(),
        subnet=str(subnet),
        bridge=f"orc{run_id}br",
        root_address=str(address[ROOT_HOST - 1]),
        base_dir=base_dir,
        token_path=str(token_path),
        ports=ports,
        hosts=hosts,
        object_store_bytes=object_store_bytes,
        owner_bound=owner_bound,
    )
