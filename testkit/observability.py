"""A small workload across the local stack, so every dashboard panel has something to show:
a chat model served (answers, an error), a user chatting through the platform API and
rating an answer, a training run reporting its metrics, and the smoke DAG succeeding and
failing in Airflow. Then the Prometheus HTTP API, to read back what was scraped."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx

from orchard.settings import Settings
from testkit.stack import REPO


def serve_champion(settings: Settings, root: Path) -> str:
    """A tiny chat model registered as `champion`, once serving answers with it."""
    from orchard.registry import register_hf_model
    from serving.tiny import build_tiny_chat_model
    from testkit.stack import wait_champion

    model_dir = build_tiny_chat_model(root / "tiny-chat", seed=0, max_context=256)
    register_hf_model(
        str(model_dir), tracking_uri=settings.mlflow_uri, name=settings.model_name, alias="champion"
    )
    return wait_champion(settings.serving_base_url, timeout=180)


def chat_through_serving(settings: Settings, answers: int = 4) -> None:
    url = f"{settings.serving_base_url}/v1/chat/completions"
    hello = [{"role": "user", "content": "Hello! Tell me about apples."}]
    for index in range(answers):
        body = {"model": "champion", "messages": hello, "max_tokens": 8, "stream": index % 2 == 1}
        response = httpx.post(url, json=body, timeout=60)
        assert response.status_code == 200, response.text
    unknown = httpx.post(url, json={"model": "no-such-model", "messages": hello}, timeout=60)
    assert unknown.status_code == 404, unknown.text


def chat_through_the_api(settings: Settings) -> None:
    """A user signs up, chats (metered: credits reserved and settled), rates the answer."""
    from platform_api.db import database_url
    from testkit.platform import Api

    with httpx.Client(base_url=f"{settings.api_url}/api/v1", timeout=60) as http:
        api = Api(
            http=http, root=settings.api_url, settings=settings, database_url=database_url(settings)
        )
        user = api.user(f"observer-{int(time.time())}")
        chat = api.chat(user)
        with http.stream(
            "POST", f"/chats/{chat['id']}/messages", json={"content": "Hi"}, headers=user.headers
        ) as response:
            assert response.status_code == 200
            response.read()
        messages = http.get(f"/chats/{chat['id']}/messages", headers=user.headers).json()
        answer = messages[-1]
        rated = http.put(
            f"/chats/{chat['id']}/messages/{answer['id']}/feedback",
            json={"rating": "up"},
            headers=user.headers,
        )
        assert rated.status_code == 200, rated.text


def train(settings: Settings, run: str, seconds: float = 12) -> None:
    from orchard.ray_submit import run_ray_job

    run_ray_job(
        settings,
        base_id=run,
        # testkit is not an installed package: the job finds it from the repository root
        entrypoint=f"env PYTHONPATH={REPO} {sys.executable} -m testkit.train_workload "
        f"--run {run} --seconds {seconds}",
        log=lambda line: None,
    )


class Prometheus:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr} | ({"time": str(at)} if at else {})
        body = self.http.get("/api/v1/query", params=params).json()
        if body["status"] != "success":
            raise AssertionError(f"{expr}: {body.get('error')}")
        return body["data"]["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        params = {"query": expr, "start": str(start), "end": str(end), "step": str(step)}
        body = self.http.get("/api/v1/query_range", params=params).json()
        if body["status"] != "success":
            raise AssertionError(f"{expr}: {body.get('error')}")
        return body["data"]["result"]

    def targets(self) -> list[dict[str, Any]]:
        return self.http.get("/api/v1/targets").json()["data"]["activeTargets"]

    def wait(self, expr: str, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(1)
