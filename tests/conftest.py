"""Shared fixtures: free loopback ports, a clean Orchard environment, the running stack.

Airflow reads its configuration when first imported, so the in-process DAG tests get
their own AIRFLOW_HOME here, before any test module imports airflow. `orchard up`
overrides every one of these variables for the stack it starts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

# Re-exported: test modules import these from here.
from testkit.stack import ORCHARD_BIN as ORCHARD_BIN
from testkit.stack import REPO, orchard, stack_env
from testkit.stack import free_port as free_port
from testkit.stack import free_port_block as free_port_block
from testkit.stack import wait_champion as wait_champion

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="orchard-test-airflow-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    }
)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


# -- running on two cores (pytest-xdist) --------------------------------------------------
# `make test` runs `pytest -n 2 --dist loadgroup`. Every test that uses the session's
# `stack` runs on one worker (one stack, started once); every other module is a unit of
# its own, so its module-scoped fixtures (the platform tests' servers) start once.
# No test relies on another having run: a test that stops the stack (marked
# `stops_stack`) is placed last only so that nothing has to start it again, and if a
# stack test still follows it, the stack is started again before that test.
#
# xdist's scheduler sees only node ids. The `stack` fixture has one parameter, `@stack`,
# so every test that uses it, directly or through another fixture, carries that id in its
# node id (`test_x[@stack]`); the scheduler below sends those tests to one worker as one
# unit. Likewise the three-host test cluster (tests/cluster, `cluster_session`: `@cluster`).
STACK_GROUP = "@stack"
CLUSTER_GROUP = "@cluster"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "stops_stack: the test stops the session stack (placed after its users)"
    )
    config.addinivalue_line(
        "markers", "stops_cluster: the test removes the test cluster (placed after its users)"
    )
    config.addinivalue_line(
        "markers",
        "borrows_serving: the test serves a model of its own on the stack's serving "
        "(`Stack.serving`); such tests are placed together, so serving switches once",
    )


def _uses(item: pytest.Item, fixture: str) -> bool:
    return fixture in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)  # after pytest's own reordering by fixture
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The session stack's tests first: those that borrow its serving together, then the
    ones that stop it; then the test cluster's likewise; then the other modules, those
    with a `slow` test first. Under xdist the stack's group is the longest unit, so it
    starts first, and the other worker ends on short modules, so the two finish together."""
    stack = [item for item in items if _uses(item, "stack")]
    stack.sort(
        key=lambda item: (
            item.get_closest_marker("stops_stack") is not None,
            item.get_closest_marker("borrows_serving") is not None,
        )
    )
    hosts = [item for item in items if _uses(item, "cluster_session") and not _uses(item, "stack")]
    hosts.sort(key=lambda item: item.get_closest_marker("stops_cluster") is not None)
    chosen = set(map(id, stack + hosts))
    rest = [item for item in items if id(item) not in chosen]
    slow = {getattr(item, "module", None) for item in rest if item.get_closest_marker("slow")}
    rest.sort(key=lambda item: getattr(item, "module", None) not in slow)
    items[:] = stack + hosts + rest


@pytest.hookimpl(tryfirst=True)  # before the item's fixtures (module ones included) are set up
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A stack test finds the stack running (started again after a `stops_stack` test),
    and serving as the stack started it unless the test borrows serving itself."""
    if _SESSION_STACK is None or "stack" not in item.fixturenames:
        return
    if _SESSION_STACK.stopped:
        _SESSION_STACK.start()
    elif not any(item.get_closest_marker(m) for m in ("borrows_serving", "stops_stack")):
        _SESSION_STACK.restore_serving()


def xdist_group(nodeid: str) -> str | None:
    """The group of a node id: `@stack`, `@cluster`, or None (a test of its module's unit)."""
    ids = set(re.split(r"[\[\]-]", nodeid.rsplit("::", 1)[-1]))
    return next((group for group in (STACK_GROUP, CLUSTER_GROUP) if group in ids), None)


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    from xdist.scheduler import LoadScopeScheduling

    class StackThenModules(LoadScopeScheduling):
        """xdist's loadscope with the stack's and the cluster's tests each one unit, and a
        module the unit of every other test. A test that needs both the stack and the
        cluster puts the cluster's other tests in the stack's unit: one worker, one
        cluster."""

        cluster_joins_stack = False

        def schedule(self) -> None:
            if self.collection is None and self.registered_collections:
                collection = next(iter(self.registered_collections.values()))
                self.cluster_joins_stack = any(
                    STACK_GROUP in nodeid and CLUSTER_GROUP in nodeid for nodeid in collection
                )
            super().schedule()

        def _split_scope(self, nodeid: str) -> str:
            group = xdist_group(nodeid)
            if group == CLUSTER_GROUP and self.cluster_joins_stack:
                return STACK_GROUP
            return group or nodeid.split("::", 1)[0]

    return StackThenModules(config, log)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ORCHARD_* variable from the caller's shell; a private home; cwd without toml."""
    for key in list(os.environ):
        if key.startswith("ORCHARD_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    monkeypatch.setenv("ORCHARD_HOME", str(home))
    return home


@dataclass
class Stack:
    env: dict[str, str]
    home: Path
    up_output: str = ""
    stopped: bool = True
    # While serving serves a model of a `serving` block: what it served before the first
    # block (alias -> version), and how many blocks are open.
    served_before: dict[str, str] | None = None
    open_blocks: int = 0

    def settings(self):
        """The stack's settings, built from the same ORCHARD_* values the CLI got."""
        return settings_from_env(self.env)

    def start(self) -> None:
        output = up_or_fail(self.env, self.home).stdout
        self.up_output = self.up_output or output  # the first start shows the password
        self.stopped = False
        self.served_before = None

    def down(self) -> subprocess.CompletedProcess:
        """`orchard down`; the next test that uses the stack starts it again."""
        self.stopped = True
        return orchard(self.env, "down")

    @contextmanager
    def serving(self, model_name: str) -> Iterator[dict[str, str]]:
        """The stack's serving restarted to serve the registered model `model_name` (a
        test's own, so its aliases and versions are the test's alone); yields the CLI
        environment of that serving.

        After the block serving goes on serving that model: the next block switches
        straight to its own, and a stack test that does not borrow serving gets serving
        as it was before it starts (`restore_serving`, from `pytest_runtest_setup`)."""
        if self.served_before is None:
            health = httpx.get(f"{self.settings().serving_base_url}/healthz", timeout=30)
            self.served_before = health.json()["serving"]
        env = {**self.env, "ORCHARD_MODEL_NAME": model_name}
        _restart_serve(env, self.home)
        self.open_blocks += 1
        try:
            yield env
        finally:
            self.open_blocks -= 1

    def restore_serving(self) -> None:
        """Outside every `serving` block: serving restarted as the stack started it, once
        the aliases it served before are served again."""
        if self.served_before is None or self.open_blocks or self.stopped:
            return
        _restart_serve(self.env, self.home)
        for alias, version in self.served_before.items():
            wait_serving(self.settings().serving_base_url, alias, version)
        self.served_before = None


def _restart_serve(env: dict[str, str], home: Path) -> None:
    result = orchard(env, "down", "serve")
    assert result.returncode == 0, result.stdout + result.stderr
    up_or_fail(env, home, "serve")


def settings_from_env(env: dict[str, str]):
    """Settings from the ORCHARD_* values of an `orchard` CLI environment."""
    from orchard.settings import ENV_PREFIX, Settings

    values = {
        key.removeprefix(ENV_PREFIX).lower(): value
        for key, value in env.items()
        if key.startswith(ENV_PREFIX)
    }
    return Settings(**values)


def up_or_fail(env: dict[str, str], home: Path, *services: str) -> subprocess.CompletedProcess:
    """`orchard up [services]`; on failure, stop what started and fail with the logs."""
    result = orchard(env, "up", *services)
    if result.returncode != 0:
        logs = "".join(
            f"\n--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted((home / "logs").glob("*.log"))
        )
        orchard(env, "down")
        pytest.fail(f"orchard up failed:\n{result.stdout}\n{result.stderr}{logs}")
    return result


@contextmanager
def private_tmpdir(root: Path) -> Iterator[Path]:
    """TMPDIR points into `root` meanwhile: mlflow.transformers.log_model leaves
    temporary directories behind."""
    saved_tmp = (os.environ.get("TMPDIR"), tempfile.tempdir)
    os.environ["TMPDIR"] = tempfile.tempdir = str(root)
    try:
        yield root
    finally:
        if saved_tmp[0] is None:
            os.environ.pop("TMPDIR")
        else:
            os.environ["TMPDIR"] = saved_tmp[0]
        tempfile.tempdir = saved_tmp[1]


def wait_serving(base_url: str, alias: str, version: str, timeout: float = 180) -> None:
    """Until serving at `base_url` answers `alias` with `version` (it polls the registry)."""
    import httpx

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"{base_url}/healthz", timeout=30)
            if last.json()["serving"].get(alias) == version:
                return
        except (httpx.HTTPError, ValueError, KeyError) as error:
            last = error  # a busy machine: keep asking until the deadline
        time.sleep(0.5)
    detail = last.text if isinstance(last, httpx.Response) else repr(last)
    raise AssertionError(f"{alias} never served version {version}: {detail}")


_SESSION_STACK: Stack | None = None


@pytest.fixture(scope="session", params=[STACK_GROUP])  # the parameter: see xdist_group
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole local stack, started once with `orchard up` on free loopback ports."""
    global _SESSION_STACK
    home = tmp_path_factory.mktemp("stack") / "home"
    # Ray Train's controller polls its workers every 2 s, and a checkpoint report waits
    # for that poll: the tests' runs of a few steps report every few steps.
    env = stack_env(home) | {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}
    _SESSION_STACK = Stack(env=env, home=home)
    try:
        _SESSION_STACK.start()
        yield _SESSION_STACK
    finally:
        if not _SESSION_STACK.stopped:
            _SESSION_STACK.down()
        _SESSION_STACK = None
