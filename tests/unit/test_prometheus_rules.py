"""The alert rules of infra/prometheus/: valid for Prometheus, and every alert unit-tested
by `promtool test rules` (firing on the series that should fire it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES = Path(__file__).resolve().parents[2] / "infra" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        reason = (
            "no promtool: on Debian `apt-get install prometheus` (scripts/install-test-services)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI must check the alert rules: {reason}")
        pytest.skip(reason)
    return binary


def alerts() -> set[str]:
    return {
        rule["alert"]
        for path in RULES.glob("*.rules.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_the_rules_pass_promtool_check(promtool):
    files = sorted(map(str, RULES.glob("*.rules.yml")))
    result = subprocess.run([promtool, "check", "rules", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass_and_cover_every_alert_firing(promtool):
    tests = sorted(RULES.glob("tests/*.test.yml"))
    result = subprocess.run(
        [promtool, "test", "rules", *map(str, tests)],
        capture_output=True,
        text=True,
        cwd=RULES / "tests",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    fired = {
        case["alertname"]
        for path in tests
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    missing = alerts() - fired
    assert not missing, f"alerts without a promtool test that fires them: {sorted(missing)}"
    print(f"{len(alerts())} alerts, each fired by a promtool unit test")


def test_a_wrong_expectation_fails_promtool(promtool, tmp_path):
    """The unit tests can fail: the same tests with one summary changed do."""
    tests = (RULES / "tests" / "orchard.test.yml").read_text()
    broken = tests.replace("Training run pretrain-a has a NaN loss", "all is well", 1)
    assert broken != tests
    (tmp_path / "broken.test.yml").write_text(
        broken.replace("../orchard.rules.yml", str(RULES / "orchard.rules.yml"))
    )
    result = subprocess.run(
        [promtool, "test", "rules", "broken.test.yml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "OrchardTrainingLossNaN" in result.stdout + result.stderr
