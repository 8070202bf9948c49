"""The demo question `orchard run` ends with: a user of the platform asks the champion about
the crawled site, through the platform API, the way the chat UI does.

The demo user (`demo@orchard.example.org`) is an ordinary account with the default plan; its
password is generated on first use and kept under `<home>/secrets` (never in the
repository), so the same login works in the web UI afterwards. The question's chat
retrieves from the shared `crawled-site` knowledge base that `orchard_index` published,
so the answer comes with numbered citations of the crawled pages.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import httpx

from orchard.credentials import get_or_create
from orchard.errors import OrchardError
from orchard.knowledge.shared import CRAWLED_SITE
from orchard.settings import Settings

DEMO_EMAIL = "demo@orchard.example.org"
DEMO_PASSWORD_SECRET = "demo-user-password"
# On a page the demo crawl reaches (its 600-page limit stops before json.html).
DEMO_QUESTION = "What does csv.writer return in Python?"


class DemoError(OrchardError):
    """The demo turn could not be asked; the message names the step that failed."""


@dataclass
class DemoAnswer:
    question: str
    answer: str
    model_version: str | None
    status: str
    sources: list[str] = field(default_factory=list)  # the cited pages, numbered in order


def wait_for_champion(settings: Settings, timeout: float = 600.0) -> str | None:
    """Wait until serving answers the champion alias with the version the registry names
    (a new champion is served only once its replica has loaded it, which takes a model
    load after the alias moves); the version, or None when there is no champion."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=settings.mlflow_uri, registry_uri=settings.mlflow_uri)
    try:
        wanted = client.get_model_version_by_alias(settings.model_name, "champion").version
    except MlflowException:
        return None
    deadline = time.monotonic() + timeout
    served = None
    while time.monotonic() < deadline:
        try:
            health = httpx.get(f"{settings.serving_base_url}/healthz", timeout=10).json()
            served = (health.get("serving") or {}).get("champion")
        except (httpx.HTTPError, ValueError):
            served = None
        if served == str(wanted):
            return str(wanted)
        time.sleep(2.0)
    raise DemoError(
        f"serving still answers the champion with version {served}, not the registry's "
        f"{wanted}, after {timeout:.0f} s: `orchard logs serving` says why"
    )


def demo_login(settings: Settings) -> tuple[str, str]:
    """(email, password) of the demo user; the password is made on first use."""
    return DEMO_EMAIL, get_or_create(settings.secrets_dir, DEMO_PASSWORD_SECRET)[0]


def _checked(response: httpx.Response, what: str) -> dict:
    if response.status_code >= 400:
        raise DemoError(
            f"{what}: the platform API answered {response.status_code}: {response.text[:300]}"
        )
    return response.json() if response.content else {}


def _token(http: httpx.Client, email: str, password: str) -> str:
    body = {"email": email, "password": password}
    registered = http.post("/auth/register", json=body)
    if registered.status_code >= 400 and "email_taken" not in registered.text:
        _checked(registered, f"registering {email}")
    return _checked(http.post("/auth/login", json=body), f"logging in as {email}")["access_token"]


def streamed_answer(http: httpx.Client, path: str, body: dict | None, headers: dict) -> dict:
    """The saved answer of one streamed chat turn (POST `path` on the platform API: a
    message, a regeneration), from its `done` or `failed` event."""
    event, answer = None, None
    with http.stream("POST", path, json=body, headers=headers) as response:
        if response.status_code != 200:
            raise DemoError(
                f"asking the question: the platform API answered "
                f"{response.status_code}: {response.read()[:300]!r}"
            )
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event in ("done", "failed"):
                answer = json.loads(line[len("data: ") :])
    if answer is None:
        raise DemoError(f"POST {path}: the stream ended without an answer")
    return answer


def ask(
    settings: Settings,
    question: str = DEMO_QUESTION,
    knowledge: str | None = CRAWLED_SITE,
    timeout: float = 600,
    api_url: str | None = None,
) -> DemoAnswer:
    """Ask `question` as the demo user in a new chat on the platform's default model,
    retrieving from the shared base `knowledge` (None: no retrieval), on the platform API
    at `api_url` (default: the local stack's)."""
    email, password = demo_login(settings)
    root = api_url or settings.api_url
    with httpx.Client(base_url=f"{root}/api/v1", timeout=timeout) as http:
        headers = {"Authorization": f"Bearer {_token(http, email, password)}"}
        chat = _checked(
            http.post("/chats", json={"title": question[:60]}, headers=headers),
            "creating the demo chat",
        )
        if knowledge:
            _checked(
                http.put(
                    f"/chats/{chat['id']}/knowledge",
                    json={"knowledge_base_ids": [], "shared_knowledge_bases": [knowledge]},
                    headers=headers,
                ),
                f"attaching the shared knowledge base {knowledge!r} (has orchard_index run?)",
            )
        answer = streamed_answer(
            http, f"/chats/{chat['id']}/messages", {"content": question}, headers
        )
    return DemoAnswer(
        question=question,
        answer=answer.get("content", ""),
        model_version=answer.get("model_version"),
        status=answer.get("status", "?"),
        sources=[c["source"] for c in sorted(answer.get("citations") or [], key=lambda c: c["n"])],
    )
