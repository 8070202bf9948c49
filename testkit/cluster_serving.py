"""Serving on the three-host test cluster (orchard.cluster): an MLflow server on the root
namespace's bridge address with its artifacts in the S3 stand-in's bucket, a tiny model
registered in it the way `python -m serving.tiny --register` does, and Orchard's Serve
application deployed to the head through the dashboard's Serve REST API (what
`serving.deploy` and `serve deploy` use) with one ModelServer replica per worker host.
Shared by tests/cluster/test_serving_cluster.py and whatever else serves on the cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from orchard import cluster
from orchard.credentials import ray_auth_headers
from orchard.settings import Settings
from serving.config import APP_NAME, Resources, ServingConfig, serve_config
from testkit.cluster_pretrain import KEYS
from testkit.stack import REPO, free_port

# One ModelServer replica on each worker host; the ingress (and the embedding server,
# which loads on first use) on the head's host, beside the proxy the test calls. No CPUs
# reserved: each test host has one, which the training tests' workers take.
CLUSTER_RESOURCES = Resources(
    min_replicas=2,
    max_replicas=2,
    num_cpus=0,
    ingress_num_cpus=0,
    max_replicas_per_node=1,
    label_selector={"orchard-host": "in(b,c)"},
    ingress_label_selector={"orchard-host": "a"},
)


@contextmanager
def bridge_mlflow(layout: cluster.Layout, endpoint: str, bucket: str, state: Path) -> Iterator[str]:
    """`mlflow server` on the root namespace's bridge address (the hosts reach it, nothing
    else does), its artifacts under `s3://<bucket>/mlflow-artifacts` (served through it,
    so clients need no S3 keys). Yields its URL; stops it (its process group) after."""
    port = free_port()
    url = f"http://{layout.root_address}:{port}"
    state.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "MLFLOW_ALLOW_FILE_STORE": "true",  # its file store: no database migrations to wait for
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": KEYS["access_key"],
        "AWS_SECRET_ACCESS_KEY": KEYS["secret_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        (state / "store").as_uri(),
        "--artifacts-destination",
        f"s3://{bucket}/mlflow-artifacts",
        "--host",
        layout.root_address,
        "--port",
        str(port),
        "--workers",
        "1",
        "--allowed-hosts",
        f"{layout.root_address}:{port},{layout.root_address}",
    ]
    log = state / "mlflow.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not up in 180 s: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def register_tiny_model(tracking_uri: str, name: str, tmp: Path, max_context: int = 256) -> str:
    """A tiny random chat model (serving.tiny), registered as `name`@champion the way
    its command line does it; returns the version."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ORCHARD_")},
        "ORCHARD_HOME": str(tmp / "home"),
        "ORCHARD_MLFLOW_TRACKING_URI": tracking_uri,
        "ORCHARD_MODEL_NAME": name,
        "TMPDIR": str(tmp),  # mlflow.transformers leaves temporary directories behind
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving.tiny",
            str(tmp / "tiny"),
            "--register",
            f"--max-context={max_context}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    line = [x for x in result.stdout.splitlines() if x.startswith("registered ")][-1]
    return line.split(" version ")[1].split()[0]


class ClusterServe:
    """Orchard's Serve application on the cluster, through the head's Serve REST API."""

    def __init__(self, hosts_settings: Settings, layout: cluster.Layout) -> None:
        self.layout = layout
        self.port = hosts_settings.serve_port
        self.client = httpx.Client(
            base_url=layout.dashboard_url, headers=ray_auth_headers(hosts_settings), timeout=120
        )

    @property
    def base_url(self) -> str:
        """The proxy on host a (the ingress's host): the OpenAI API's address."""
        return f"http://{self.layout.head.address}:{self.port}"

    def deploy(self, serving: ServingConfig, resources: Resources = CLUSTER_RESOURCES) -> None:
        # Every host has its own network stack: its proxy listens on all of its addresses.
        settings = Settings(host="0.0.0.0", serve_port=self.port)
        config = serve_config(settings, serving, resources)
        response = self.client.put("/api/serve/applications/", json=config)
        assert response.status_code == 200, response.text

    def application(self) -> dict[str, Any] | None:
        response = self.client.get("/api/serve/applications/")
        response.raise_for_status()
        return (response.json().get("applications") or {}).get(APP_NAME)

    def replicas(self, deployment: str = "ModelServer") -> list[dict[str, Any]]:
        app = self.application() or {}
        return (app.get("deployments") or {}).get(deployment, {}).get("replicas", [])

    def wait_running(self, timeout: float = 240) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        app = None
        while time.monotonic() < deadline:
            app = self.application()
            if app and app.get("status") == "RUNNING":
                return app
            if app and app.get("status") == "DEPLOY_FAILED":
                break
            time.sleep(1)
        raise AssertionError(f"the Serve application is not running: {app}")

    def wait_serving(self, alias: str, version: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = httpx.get(f"{self.base_url}/healthz", timeout=10)
                if last.json()["serving"].get(alias) == version:
                    return
            except (httpx.HTTPError, ValueError, KeyError) as error:
                last = error
            time.sleep(0.5)
        raise AssertionError(f"{alias} never served version {version}: {last!r}")

    def delete(self, timeout: float = 120) -> None:
        """Remove the application (Serve's proxies and replicas stop with it)."""
        try:
            self.client.delete("/api/serve/applications/")
        except httpx.HTTPError:
            return  # the head is gone: nothing left to stop
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.application() is None:
                    return
            except httpx.HTTPError:
                return
            time.sleep(1)

    def close(self) -> None:
        self.client.close()
