"""Fixtures of the web UI's end-to-end tests: the built UI, a headless Chromium, and the
product behind them — the session stack's serving, restarted to serve a registered model
of these tests' own (`Stack.serving`), two tiny chat models registered in the stack's
MLflow (the first one champion and served), and the platform API (LiveServer) pointed at
them, serving `ui/dist`.

Without a UI build or without the browser these tests skip with what to run, and fail
under CI=true. Screenshots, and the page of a failed test, go to test-artifacts/ui/.
"""

from __future__ import annotations

import os
import shutil
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from orchard.registry import register_hf_model
from orchard.settings import Settings
from platform_api.app import create_app
from serving.tiny import build_tiny_chat_model
from tests.conftest import REPO, private_tmpdir, settings_from_env, wait_serving
from tests.platform.conftest import FAST_ARGON2, Account, Api, LiveServer
from testkit.browser import chromium, missing_browser

UI_DIST = REPO / "ui" / "dist"
ARTIFACTS = REPO / "test-artifacts" / "ui"
# Room for the chats' default 512-token answers (streams that last a while) after a long
# message: the tiny model's tokenizer spends about a token per character.
MAX_CONTEXT = 2048
# Which engine serves the two registered models (docs/serving.md, "The rule"), from
# ORCHARD_UI_E2E_ENGINE: `hf`, the default, keeps serving.tiny's 16-wide heads (the
# hand-written engine, loaded in seconds); `vllm` registers 32-wide heads (64 / 2), which
# vLLM serves. These tests pass on both; `vllm` costs each version a vLLM engine start
# (~20-25 s idle, ~50 s at load 12): 0.5-2 min of suite time (docs/serving.md, "UI e2e").
ENGINES = {"hf": {}, "vllm": {"heads": 2, "kv_heads": 1}}


def chosen_engine() -> str:
    engine = os.environ.get("ORCHARD_UI_E2E_ENGINE", "hf")
    if engine not in ENGINES:
        raise ValueError(f"ORCHARD_UI_E2E_ENGINE={engine!r}: set it to one of {list(ENGINES)}")
    return engine


def served_engine(serving_url: str) -> str:
    """The champion's engine, as a client tells them apart: the hand-written engine refuses
    `logprobs` with a 400 that names itself."""
    answer = httpx.post(
        f"{serving_url}/v1/chat/completions",
        json={"model": "champion", "messages": [{"role": "user", "content": "Hi"}],
              "max_tokens": 1, "logprobs": True},
        timeout=120,
    )  # fmt: skip
    if answer.status_code == 400 and "hand-written engine" in answer.text:
        return "hf"
    assert answer.status_code == 200, answer.text
    return "vllm"


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the web UI's browser tests: {reason}")
    pytest.skip(reason)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def ui_dist() -> Path:
    if not (UI_DIST / "index.html").is_file():
        unavailable(f"the web UI is not built ({UI_DIST} has no index.html): run `make install`")
    shutil.rmtree(ARTIFACTS / "failures", ignore_errors=True)  # a previous run's
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return UI_DIST


@pytest.fixture(scope="module")
def browser(ui_dist):
    if reason := missing_browser():
        unavailable(reason)
    with chromium() as browser:
        yield browser


@dataclass
class Product:
    url: str  # the platform API, which serves the UI
    api: Api
    settings: Settings
    serving_url: str
    versions: list[str]  # registered versions, oldest first; the first is champion
    accounts: dict[str, Account] = field(default_factory=dict)

    def wait_champion(self, version: str) -> None:
        wait_serving(self.serving_url, "champion", version)

    def set_champion(self, version: str) -> None:
        """What an admin's promotion does, through the registry; waits until served."""
        uri = self.settings.mlflow_uri
        client = MlflowClient(uri, registry_uri=uri)
        client.set_registered_model_alias(self.settings.model_name, "champion", version)
        self.wait_champion(version)


@pytest.fixture(scope="module")
def product(browser, stack, tmp_path_factory) -> Iterator[Product]:
    root = tmp_path_factory.mktemp("ui-e2e")
    # letters only: the tests look for version numbers in what the UI shows
    name = "ui-e2e-" + "".join(random.choices(string.ascii_lowercase, k=8))
    engine = chosen_engine()
    with private_tmpdir(root), stack.serving(name) as env:
        served = settings_from_env(env)
        versions = []
        for seed, alias in ((0, "champion"), (1, None)):
            model = build_tiny_chat_model(
                root / f"m{seed}", seed=seed, max_context=MAX_CONTEXT, **ENGINES[engine]
            )
            tags = {"eval.rouge_l": f"0.{seed + 2}", "orchard.test": f"ui-e2e-{seed}"}
            versions.append(
                register_hf_model(
                    model,
                    tracking_uri=served.mlflow_uri,
                    name=served.model_name,
                    alias=alias,
                    tags=tags,
                )
            )
        wait_serving(served.serving_base_url, "champion", versions[0])
        assert served_engine(served.serving_base_url) == engine
        settings = served.model_copy(
            update={
                "home": root / "platform-home",
                "database_url": f"sqlite:///{root / 'platform.db'}",
                "ui_dir": UI_DIST,
                # one browser logs in many times a minute; these tests are not about limits
                "rate_limit_auth_ip": "1000/minute",
                "rate_limit_user": "1000/minute",
                "rate_limit_ip": "5000/minute",
            }
        )
        server = LiveServer(create_app(settings, FAST_ARGON2))
        server.start()
        http = httpx.Client(base_url=f"{server.url}/api/v1", timeout=120)
        api = Api(http=http, root=server.url, settings=settings, database_url=settings.database_url)
        try:
            yield Product(
                url=server.url,
                api=api,
                settings=settings,
                serving_url=served.serving_base_url,
                versions=versions,
            )
        finally:
            http.close()
            server.stop()


class PageErrors:
    """What the page reported that a user would not see: uncaught exceptions, console
    errors (a CSP refusal among them)."""

    def __init__(self, page) -> None:
        self.messages: list[str] = []
        page.on("pageerror", lambda error: self.messages.append(f"pageerror: {error}"))
        page.on(
            "console",
            lambda message: (
                message.type == "error" and self.messages.append(f"console: {message.text}")
            ),
        )

    def csp(self) -> list[str]:
        return [m for m in self.messages if "Content Security Policy" in m]


def new_page(browser, request, **context_options):
    """A page in a fresh browser context (its own storage: nobody logged in)."""
    context = browser.new_context(**context_options)
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.errors = PageErrors(page)
    pages = request.node.__dict__.setdefault("ui_pages", [])
    pages.append(page)
    request.addfinalizer(lambda: close_page(request, page, len(pages)))
    return page


def close_page(request, page, number: int) -> None:
    report = getattr(request.node, "report_call", None)
    try:
        if report is not None and report.failed:
            stem = ARTIFACTS / "failures" / f"{request.node.name}-page{number}"
            stem.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=f"{stem}.png", full_page=True)
            stem.with_suffix(".html").write_text(page.content())
            stem.with_suffix(".log").write_text("\n".join(page.errors.messages))
    finally:
        page.context.close()


@pytest.fixture
def page(browser, product, request):
    """A desktop-sized page; the test fails if the CSP refused anything on it."""
    page = new_page(browser, request, viewport={"width": 1280, "height": 800})
    yield page
    assert not page.errors.csp(), page.errors.csp()
