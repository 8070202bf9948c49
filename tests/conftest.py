"""Shared fixtures: free loopback ports, a clean Orchard environment, the running stack.

Airflow reads its configuration when first imported, so the in-process DAG tests get
their own AIRFLOW_HOME here, before any test module imports airflow. `orchard up`
overrides every one of these variables for the stack it starts.
"""

from __future__ import annotations

import os
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
STACK_GROUP = "stack"
# Likewise the three-host test cluster (tests/cluster): one per run, on one worker.
CLUSTER_GROUP = "cluster"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "stops_stack: the test stops the session stack (placed after its users)"
    )
    config.addinivalue_line(
        "markers", "stops_cluster: the test removes the test cluster (placed after its users)"
    )


@pytest.hookimpl(tryfirst=True)  # before xdist names the groups in the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The session stack's tests first, the ones that stop it last among them, then the
    test cluster's tests likewise, then the rest: under xdist the stack group is the
    longest unit, so it starts first."""
    stack = [item for item in items if "stack" in getattr(item, "fixturenames", ())]
    stack.sort(key=lambda item: item.get_closest_marker("stops_stack") is not None)
    for item in stack:
        _group(config, item, STACK_GROUP)
    chosen = set(map(id, stack))
    hosts = [
        item
        for item in items
        if id(item) not in chosen and "cluster_session" in getattr(item, "fixturenames", ())
    ]
    hosts.sort(key=lambda item: item.get_closest_marker("stops_cluster") is not None)
    # A test that needs both the stack and the cluster is in the stack's group: then the
    # cluster's other tests join that group too, so that one worker starts one cluster.
    uses_both = any("cluster_session" in getattr(item, "fixturenames", ()) for item in stack)
    for item in hosts:
        _group(config, item, STACK_GROUP if uses_both else CLUSTER_GROUP)
    chosen |= set(map(id, hosts))
    items[:] = stack + hosts + [item for item in items if id(item) not in chosen]


def _group(config: pytest.Config, item: pytest.Item, name: str) -> None:
    """Put `item` in xdist group `name`. xdist 3.8 names the group in the node id by
    setting `item._nodeid`, which pytest 9 no longer reads (a node id is `item._id`): the
    scheduler would see no group and spread a group's tests over both workers. So the id
    gets its `@group` suffix here, as xdist means it to."""
    item.add_marker(pytest.mark.xdist_group(name))
    if getattr(config.option, "loadgroup", False) and not item.nodeid.endswith(f"@{name}"):
        from _pytest.nodeid import coerce_node_id

        item._id = coerce_node_id(f"{item.nodeid}@{name}")


@pytest.hookimpl(tryfirst=True)  # before the item's fixtures (module ones included) are set up
def pytest_runtest_setup(item: pytest.Item) -> None:
    if _SESSION_STACK and _SESSION_STACK.stopped and "stack" in item.fixturenames:
        _SESSION_STACK.start()


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    from xdist.scheduler import LoadGroupScheduling

    class StackThenModules(LoadGroupScheduling):
        """xdist's loadgroup, with a module as the unit of an ungrouped test (loadgroup
        alone sends each ungrouped test anywhere on its own)."""

        def _split_scope(self, nodeid: str) -> str:
            if "@" in nodeid:
                return nodeid.rsplit("@", 1)[-1]
            return nodeid.split("::", 1)[0]

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

    def settings(self):
        """The stack's settings, built from the same ORCHARD_* values the CLI got."""
        return settings_from_env(self.env)

    def start(self) -> None:
        output = up_or_fail(self.env, self.home).stdout
        self.up_output = self.up_output or output  # the first start shows the password
        self.stopped = False

    def down(self) -> subprocess.CompletedProcess:
        """`orchard down`; the next test that uses the stack starts it again."""
        self.stopped = True
        return orchard(self.env, "down")

    @contextmanager
    def serving(self, model_name: str) -> Iterator[dict[str, str]]:
        """The stack's serving restarted to serve the registered model `model_name` (a
        test's own, so its aliases and versions are the test's alone); yields the CLI
        environment of that serving. After, serving is restarted as it was and the aliases
        it served before are served again."""
        before = httpx.get(f"{self.settings().serving_base_url}/healthz", timeout=30).json()
        env = {**self.env, "ORCHARD_MODEL_NAME": model_name}
        _restart_serve(env, self.home)
        try:
            yield env
        finally:
            _restart_serve(self.env, self.home)
            for alias, version in before["serving"].items():
                wait_serving(self.settings().serving_base_url, alias, version)


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


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole local stack, started once with `orchard up` on free loopback ports."""
    global _SESSION_STACK
    home = tmp_path_factory.mktemp("stack") / "home"
    _SESSION_STACK = Stack(env=stack_env(home), home=home)
    try:
        _SESSION_STACK.start()
        yield _SESSION_STACK
    finally:
        if not _SESSION_STACK.stopped:
            _SESSION_STACK.down()
        _SESSION_STACK = None
