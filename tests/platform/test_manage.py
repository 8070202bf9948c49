"""The operator commands: migrate, and make the first administrator."""

from __future__ import annotations

import subprocess
import sys

import pytest

from platform_api.manage import main
from tests.conftest import REPO


@pytest.fixture
def operator_env(api, monkeypatch):
    """The environment an operator runs `python -m platform_api.manage` in."""
    monkeypatch.setenv("ORCHARD_DATABASE_URL", api.database_url)


def test_make_admin_promotes_a_registered_account(api, operator_env, capsys):
    alice = api.user("alice")
    assert main(["make-admin", "Alice@example.org"]) == 0
    assert "is now an administrator" in capsys.readouterr().out
    assert api.http.get("/admin/users", headers=alice.headers).status_code == 200


def test_make_admin_of_an_unknown_account_says_to_register_first(api, operator_env, capsys):
    assert main(["make-admin", "ghost@example.org"]) == 1
    error = capsys.readouterr().err.strip()
    assert error == "error: no account with e-mail 'ghost@example.org': register it first"


def test_bad_usage_prints_the_usage(clean_env, capsys):
    for args in ([], ["promote"], ["make-admin"]):
        assert main(args) == 2
        assert "usage:" in capsys.readouterr().err


def test_the_command_line_migrates_the_default_database(clean_env):
    env = {"PATH": "/usr/bin:/bin", "ORCHARD_HOME": str(clean_env)}
    result = subprocess.run(
        [sys.executable, "-m", "platform_api.manage", "migrate"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (clean_env / "platform.db").is_file()
