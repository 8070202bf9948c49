"""Ray on the test hosts: the head on host a, a worker on b and on c.

Each node runs inside its host's network namespace, with its own hostname (a UTS
namespace), its own /dev/shm, and a mount namespace in which the other hosts' local
dirs are covered by an empty read-only tmpfs: a task sees its own host's files only,
as on separate machines. `ray start` daemonizes; the processes stay in the namespace,
which is how teardown finds every one of them.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from orchard.cluster.layout import ClusterError, Host, Layout
from orchard.cluster.network import netns_exec

START_TIMEOUT = 120.0


def _host_shell(layout: Layout, host: Host, command: list[str]) -> str:
    """The shell line that makes a namespace look like its own machine, then runs `command`."""
    lines = [f"hostname {shlex.quote(host.hostname)}", "mount -t tmpfs -o size=50% shm /dev/shm"]
    # Its own /etc/hosts, in which the hosts' names resolve to their addresses, as on VMs
    # and Kubernetes pods: gloo binds to the address of the hostname (else to loopback,
    # which another host cannot reach).
    lines.append(f"mount --bind {shlex.quote(hosts_file(host))} /etc/hosts")
    for other in layout.hosts:
        if other is not host:
            lines.append(f"mount -t tmpfs -o ro,size=4k other-host {shlex.quote(other.local_dir)}")
    lines.append("exec " + shlex.join(command))
    return " && ".join(lines)


def hosts_file(host: Host) -> str:
    return f"{host.local_dir}/hosts"


def write_hosts_file(layout: Layout, host: Host) -> None:
    names = "".join(f"{other.address}\t{other.hostname}\n" for other in layout.hosts)
    Path(hosts_file(host)).write_text(f"127.0.0.1\tlocalhost\n{names}")


def start_command(layout: Layout, host: Host) -> list[str]:
    ports = layout.ports
    command = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        f"--node-ip-address={host.address}",
        "--num-cpus=1",
        f"--resources={json.dumps({host.resource: 1})}",
        f"--labels=orchard-host={host.name}",
        f"--object-store-memory={layout.object_store_bytes}",
        f"--temp-dir={host.ray_temp_dir}",
        "--disable-usage-stats",
    ]
    if host.role == "head":
        command += [
            "--head",
            f"--port={ports.gcs}",
            f"--ray-client-server-port={ports.client}",
            "--include-dashboard=true",
            f"--dashboard-host={host.address}",
            f"--dashboard-port={ports.dashboard}",
        ]
    else:
        command.append(f"--address={layout.gcs_address}")
    command += [f"--{option}={port}" for option, port in ports.internal.items()]
    return command


def start_node(layout: Layout, host: Host, env: dict[str, str]) -> None:
    Path(host.ray_temp_dir).mkdir(parents=True, exist_ok=True)
    write_hosts_file(layout, host)
    log = Path(host.local_dir) / "ray-start.log"
    shell = _host_shell(layout, host, start_command(layout, host))
    with open(log, "w") as out:
        result = subprocess.run(
            netns_exec(host, "unshare", "--uts", "--", "sh", "-c", shell),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=START_TIMEOUT,
        )
    if result.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise ClusterError(
            f"`ray start` on host {host.name} ({host.address}) failed: " + " | ".join(tail)
        )


def start(layout: Layout, env: dict[str, str]) -> None:
    """The head first (the workers join it), then both workers at once."""
    start_node(layout, layout.head, env)
    with ThreadPoolExecutor(len(layout.workers)) as pool:
        for future in [pool.submit(start_node, layout, w, env) for w in layout.workers]:
            future.result()


# Run in a child process, so the caller (the CLI, a pytest worker) never imports Ray nor
# has Ray's environment variables set in its own process.
_NODES_SCRIPT = """
import json, sys, time, ray
expected, timeout = int(sys.argv[1]), float(sys.argv[2])
ray.init(logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + timeout
while True:
    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) >= expected or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps([
    {"address": n["NodeManagerAddress"], "hostname": n["NodeManagerHostname"],
     "node_id": n["NodeID"], "resources": n["Resources"], "labels": n.get("Labels", {})}
    for n in nodes
]))
"""


def alive_nodes(layout: Layout, env: dict[str, str], wait_for: int = 0, timeout: float = 0):
    """The cluster's alive Ray nodes as seen from the root namespace (a driver joining
    the head's GCS); with `wait_for`, wait up to `timeout` s until that many are alive."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", _NODES_SCRIPT, str(wait_for), str(timeout)],
            env={**env, **layout.client_env()},
            capture_output=True,
            text=True,
            timeout=timeout + 60,
        )
    except subprocess.TimeoutExpired:
        raise ClusterError(f"the Ray head at {layout.gcs_address} did not answer") from None
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ClusterError(f"cannot reach the Ray head at {layout.gcs_address}: {detail}")
    return json.loads(result.stdout.strip().splitlines()[-1])
