"""A cluster of test hosts on one machine: three Linux network namespaces on a bridge,
a Ray head on host a and Ray workers on hosts b and c.

`up` decides the layout (names unique to the run, a free /24 of 198.18.0.0/15), saves it
under ORCHARD_HOME, creates the network, starts Ray and waits for three alive nodes;
if anything fails or is interrupted on the way, it removes what it made. `down` stops
every process of every host and removes the namespaces, links and dirs; it is idempotent.
The root namespace sits on the bridge too, so Airflow, MLflow and the platform, run where
a user runs them, reach the head at `layout.dashboard_url` / `layout.gcs_address`.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

from orchard import credentials
from orchard.cluster import network, ray_nodes
from orchard.cluster.layout import (
    BASE_DIR_GLOB,
    ClusterError,
    Host,
    Layout,
    RayPorts,
    new_layout,
    state_path,
)
from orchard.settings import Settings

__all__ = [
    "ClusterError",
    "Host",
    "Layout",
    "RayPorts",
    "down",
    "load",
    "status",
    "sweep_orphans",
    "up",
]

RAY_START_WAIT = 90.0
DEFAULT_OBJECT_STORE_MB = 200


def _ports(settings: Settings) -> RayPorts:
    return RayPorts(
        gcs=settings.ray_port,
        dashboard=settings.ray_dashboard_port,
        client=settings.ray_client_port,
        internal=dict(settings.ray_ports),
    )


def node_env(settings: Settings, layout: Layout) -> dict[str, str]:
    """The environment of every Ray process of the cluster (and of its drivers)."""
    from orchard.stack.services import base_env

    env = base_env(settings)
    env.update(layout.client_env())
    env.pop("RAY_ADDRESS")  # `ray start --head` refuses to run with it set
    return env


def load(settings: Settings) -> Layout | None:
    path = state_path(settings.home)
    if not path.exists():
        return None
    return Layout.from_json(path.read_text())


def up(settings: Settings, owner_bound: bool = False) -> Layout:
    """Create the hosts and start Ray on them; return once three nodes are alive.
    `owner_bound`: the cluster belongs to this process (a test run), see `sweep_orphans`."""
    network.check_can_create()
    existing = load(settings)
    if existing is not None:
        raise ClusterError(
            f"a cluster ({existing.run_id}) is already recorded in {state_path(settings.home)}: "
            "`orchard cluster status` shows it, `orchard cluster down` removes it"
        )
    token_path = settings.secrets_dir / credentials.RAY_TOKEN_SECRET
    credentials.get_or_create(settings.secrets_dir, credentials.RAY_TOKEN_SECRET)
    object_store_mb = settings.ray_object_store_mb or DEFAULT_OBJECT_STORE_MB
    path = state_path(settings.home)
    path.parent.mkdir(parents=True, exist_ok=True)
    layout = None
    try:
        with network.creation_lock():
            layout = new_layout(
                network.subnets_in_use(),
                token_path,
                _ports(settings),
                object_store_mb * 2**20,
                owner_bound,
            )
            # Saved before anything exists: an interrupted `up` leaves a layout `down` can use.
            path.write_text(layout.to_json())
            for host in layout.hosts:
                Path(host.local_dir).mkdir(parents=True, exist_ok=True)
            (Path(layout.base_dir) / "layout.json").write_text(layout.to_json())
            network.create(layout)
        env = node_env(settings, layout)
        ray_nodes.start(layout, env)
        nodes = ray_nodes.alive_nodes(layout, env, len(layout.hosts), RAY_START_WAIT)
        if len(nodes) < len(layout.hosts):
            raise ClusterError(
                f"only {len(nodes)} of {len(layout.hosts)} Ray nodes came up in "
                f"{RAY_START_WAIT:.0f} s"
            )
    except ClusterError as error:
        if layout is None:
            raise
        kept = _keep_logs(layout, settings.logs_dir / f"cluster-{layout.run_id}")
        down(settings)
        if kept is None:
            raise
        raise ClusterError(f"{error}; the hosts' logs are kept in {kept}") from None
    except BaseException:  # another failure, or Ctrl-C half-way: remove what was made
        if path.exists():
            down(settings)
        raise
    return layout


def _keep_logs(layout: Layout, dest: Path) -> Path | None:
    """Copy each host's `ray start` output and Ray logs out of its dir before teardown;
    None when there were none (Ray never started)."""
    kept = False
    for host in layout.hosts:
        start_log = Path(host.local_dir) / "ray-start.log"
        ray_logs = Path(host.ray_temp_dir) / "session_latest" / "logs"
        if start_log.exists():
            (dest / host.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(start_log, dest / host.name)
            kept = True
        if ray_logs.is_dir():
            shutil.copytree(ray_logs, dest / host.name / "ray", dirs_exist_ok=True)
    return dest if kept else None


def sweep_orphans() -> list[str]:
    """Remove the test runs' clusters whose owning process is gone (a pytest run killed
    before its finalizer ran); return their run ids. A cluster made by `orchard cluster
    up` is never swept: it lives until `orchard cluster down`."""
    swept: list[str] = []
    if os.geteuid() != 0:  # only root can have made (and can remove) one
        return swept
    for path in glob.glob(BASE_DIR_GLOB):
        try:
            layout = Layout.from_json(Path(path).read_text())
        except (OSError, ValueError, TypeError, KeyError):
            continue
        if layout.owner_bound and not _alive(layout.owner_pid):
            network.destroy(layout)
            swept.append(layout.run_id)
    return swept


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def down(settings: Settings) -> dict[str, int] | None:
    """Stop and remove the recorded cluster; None when there is none."""
    layout = load(settings)
    if layout is None:
        return None
    stopped = network.destroy(layout)
    remaining = network.leftovers(layout)
    if remaining:
        raise ClusterError(
            f"cluster {layout.run_id} is not fully removed ({', '.join(remaining[:3])}): "
            "run `orchard cluster down` again"
        )
    state_path(settings.home).unlink(missing_ok=True)
    return stopped


def status(settings: Settings) -> tuple[Layout, dict[str, dict]] | None:
    """The recorded cluster and, per host, its process count and Ray node (None: down)."""
    layout = load(settings)
    if layout is None:
        return None
    try:
        nodes = ray_nodes.alive_nodes(layout, node_env(settings, layout), timeout=0)
    except ClusterError:
        nodes = []
    by_address = {node["address"]: node for node in nodes}
    hosts = {
        host.name: {
            "processes": len(network.netns_pids(host)),
            "node": by_address.get(host.address),
        }
        for host in layout.hosts
    }
    return layout, hosts
