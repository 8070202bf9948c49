"""The `serve` service of `orchard up`: keep Orchard's Serve application deployed.

A small process (no Ray or torch import) that the stack supervises like any server:
1. waits for the local Ray head's dashboard;
2. writes the Serve config file (`<home>/serve/serve-config.yaml`, see serving.config) and
   deploys it through the dashboard's Serve REST API (`PUT /api/serve/applications/`, the
   API `serve deploy` uses), authenticated with the head's token;
3. every few seconds checks the application is still there and redeploys it if the head
   lost it (e.g. Ray was restarted under it);
4. on SIGTERM (`orchard down`) deletes the application, which stops Serve's proxy and
   replicas and frees the serving port.

    python -m serving.deploy     # run by `orchard up`; reads the ORCHARD_* settings
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any

import httpx
import yaml

from orchard.credentials import ray_auth_headers
from orchard.settings import Settings, load_settings
from serving.config import APP_NAME, local_serving_config, serve_config

CHECK_EVERY_S = 5.0
DEPLOY_TIMEOUT_S = 120.0


class ServeDeployer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = serve_config(settings, local_serving_config(settings))
        self.client = httpx.Client(
            base_url=settings.ray_dashboard_url, headers=ray_auth_headers(settings), timeout=30
        )
        self.stopping = threading.Event()

    def write_config(self) -> None:
        path = self.settings.home / "serve" / "serve-config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        print(f"serve config: {path}", flush=True)

    def wait_for_ray(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.stopping.is_set():
            try:
                if self.client.get("/api/version").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"no Ray dashboard at {self.settings.ray_dashboard_url}")
            self.stopping.wait(1.0)

    def deploy(self) -> None:
        """Apply the config; it is declarative, so a timed-out attempt is simply repeated."""
        while not self.stopping.is_set():
            try:
                response = self.client.put(
                    "/api/serve/applications/", json=self.config, timeout=DEPLOY_TIMEOUT_S
                )
            except httpx.HTTPError as error:  # a busy head can take long to start Serve
                print(f"deploying: {error!r}; trying again", flush=True)
                continue
            if response.status_code == 200:
                print(f"deployed {APP_NAME} on {self.settings.serving_base_url}", flush=True)
                return
            if response.status_code < 500:
                raise SystemExit(f"deploying failed ({response.status_code}): {response.text}")
            print(f"deploying: {response.status_code} {response.text}; trying again", flush=True)
            self.stopping.wait(2.0)

    def app_status(self) -> dict[str, Any] | None:
        response = self.client.get("/api/serve/applications/")
        response.raise_for_status()
        return (response.json().get("applications") or {}).get(APP_NAME)

    def watch(self) -> None:
        last = None
        while not self.stopping.wait(CHECK_EVERY_S):
            try:
                app = self.app_status()
            except (httpx.HTTPError, ValueError) as error:
                print(f"Ray dashboard unreachable: {error}", flush=True)
                continue
            if app is None:
                print("application missing on the Ray head: deploying again", flush=True)
                self.deploy()
                continue
            status = (app.get("status"), app.get("message"))
            if status != last:
                print(f"application {status[0]} {status[1] or ''}".rstrip(), flush=True)
                last = status

    def undeploy(self) -> None:
        try:
            self.client.delete("/api/serve/applications/", timeout=25)
            print("Serve shut down", flush=True)
        except httpx.HTTPError as error:  # the head is already gone: nothing to stop
            print(f"Serve not shut down ({error})", flush=True)


def main() -> None:
    deployer = ServeDeployer(load_settings())

    def on_signal(signum: int, frame: Any) -> None:
        deployer.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    deployer.write_config()
    deployer.wait_for_ray()
    if deployer.stopping.is_set():
        return
    deployer.deploy()
    try:
        deployer.watch()
    finally:
        deployer.undeploy()
    sys.exit(0)


if __name__ == "__main__":
    main()
