"""Where Orchard's Airflow login comes from: settings first (a production Airflow), else
the password file the local stack writes; and what a person is told when neither exists.

The client talks to a small Airflow stand-in on loopback that implements the two calls
involved (`POST /auth/token`, one authenticated GET) and records what it was sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from orchard import credentials
from orchard.airflow_client import AirflowClient, AirflowError
from orchard.settings import load_settings
from orchard.stack.services import airflow_env
from testkit.http import JsonHandler, LoopbackServer

USERS = {"orchard-bot": "s3cret-from-settings", "admin": "generated-by-orchard-up"}
ISSUED = {"token-for-orchard-bot": "orchard-bot", "token-for-admin": "admin"}


class AirflowStandIn:
    """`POST /auth/token` → a token per user; `GET /api/v2/dags/x` → 200 with the user the
    bearer token belongs to, 401 for any other token."""

    def __init__(self) -> None:
        self.logins: list[dict] = []
        self.bearers: list[str] = []
        stand_in = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                body = self.json_body()
                stand_in.logins.append(body)
                if USERS.get(body.get("username")) != body.get("password"):
                    self.reply(401, {"detail": "Invalid credentials"})
                else:
                    self.reply(201, {"access_token": f"token-for-{body['username']}"})

            def do_GET(self) -> None:
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                stand_in.bearers.append(token)
                if token in ISSUED:
                    self.reply(200, {"dag_id": "x", "user": ISSUED[token]})
                else:
                    self.reply(401, {"detail": "Invalid token"})

        self.http = LoopbackServer(Handler)
        self.url = self.http.url


@pytest.fixture
def airflow() -> Iterator[AirflowStandIn]:
    stand_in = AirflowStandIn()
    yield stand_in
    stand_in.http.stop()


def signed_in_user(client: AirflowClient) -> str:
    with client:
        response = client.request("GET", "/api/v2/dags/x")
    assert response.status_code == 200, response.text
    return response.json()["user"]


def test_an_external_airflow_takes_user_and_password_from_settings(clean_env, monkeypatch, airflow):
    monkeypatch.setenv("ORCHARD_AIRFLOW_URL", airflow.url)
    monkeypatch.setenv("ORCHARD_AIRFLOW_USERNAME", "orchard-bot")
    monkeypatch.setenv("ORCHARD_AIRFLOW_PASSWORD", "s3cret-from-settings")
    settings = load_settings()
    assert not credentials.airflow_password_file(settings).exists()
    assert signed_in_user(AirflowClient.from_settings(settings)) == "orchard-bot"
    assert airflow.logins == [{"username": "orchard-bot", "password": "s3cret-from-settings"}]
    assert "s3cret" not in repr(settings)


def test_a_token_setting_is_sent_as_it_is_without_a_login(clean_env, monkeypatch, airflow):
    monkeypatch.setenv("ORCHARD_AIRFLOW_URL", airflow.url)
    monkeypatch.setenv("ORCHARD_AIRFLOW_TOKEN", "token-for-orchard-bot")
    assert signed_in_user(AirflowClient.from_settings(load_settings())) == "orchard-bot"
    assert airflow.logins == [] and airflow.bearers == ["token-for-orchard-bot"]


def test_a_refused_token_says_which_setting_to_renew(clean_env, monkeypatch, airflow):
    monkeypatch.setenv("ORCHARD_AIRFLOW_URL", airflow.url)
    monkeypatch.setenv("ORCHARD_AIRFLOW_TOKEN", "expired")
    with pytest.raises(AirflowError, match="ORCHARD_AIRFLOW_TOKEN") as error:
        signed_in_user(AirflowClient.from_settings(load_settings()))
    assert "expired" in str(error.value) and airflow.url in str(error.value)


def test_a_refused_password_names_where_it_came_from(clean_env, monkeypatch, airflow):
    monkeypatch.setenv("ORCHARD_AIRFLOW_URL", airflow.url)
    monkeypatch.setenv("ORCHARD_AIRFLOW_USERNAME", "orchard-bot")
    monkeypatch.setenv("ORCHARD_AIRFLOW_PASSWORD", "wrong")
    with pytest.raises(AirflowError) as error:
        signed_in_user(AirflowClient.from_settings(load_settings()))
    assert "'orchard-bot'" in str(error.value) and "ORCHARD_AIRFLOW_PASSWORD" in str(error.value)


def test_without_settings_the_local_stacks_password_file_is_used(clean_env, monkeypatch, airflow):
    monkeypatch.setenv("ORCHARD_AIRFLOW_URL", airflow.url)
    settings = load_settings()
    path = credentials.airflow_password_file(settings)
    path.parent.mkdir(parents=True)
    path.write_text("generated-by-orchard-up\n")
    assert signed_in_user(AirflowClient.from_settings(settings)) == "admin"


def test_an_external_airflow_without_credentials_names_the_settings_to_set(clean_env, monkeypatch):
    monkeypatch.setenv("ORCHARD_AIRFLOW_URL", "https://airflow.example.org")
    with pytest.raises(AirflowError) as error:
        AirflowClient.from_settings(load_settings())
    message = str(error.value)
    assert "https://airflow.example.org" in message
    for variable in (
        "ORCHARD_AIRFLOW_USERNAME",
        "ORCHARD_AIRFLOW_PASSWORD",
        "ORCHARD_AIRFLOW_TOKEN",
    ):
        assert variable in message


def test_the_local_airflow_without_its_password_file_says_run_orchard_up(clean_env):
    settings = load_settings()
    with pytest.raises(AirflowError) as error:
        AirflowClient.from_settings(settings)
    message = str(error.value)
    assert "`orchard up`" in message and str(credentials.airflow_password_file(settings)) in message
    assert "ORCHARD_AIRFLOW_PASSWORD" in message


def test_the_local_stack_gives_its_airflow_user_the_password_setting(clean_env, monkeypatch):
    monkeypatch.setenv("ORCHARD_AIRFLOW_USERNAME", "orchard-bot")
    monkeypatch.setenv("ORCHARD_AIRFLOW_PASSWORD", "chosen-by-me")
    settings = load_settings()
    env = airflow_env(settings)
    users = json.loads((settings.secrets_dir / credentials.AIRFLOW_PASSWORDS_FILE).read_text())
    assert users == {"orchard-bot": "chosen-by-me"}
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "orchard-bot:admin"
    # No generated password lies around to contradict the setting.
    assert not credentials.airflow_password_file(settings).exists()


def test_ray_jobs_do_not_get_the_airflow_login(clean_env, monkeypatch):
    from orchard.ray_submit import job_env

    monkeypatch.setenv("ORCHARD_AIRFLOW_PASSWORD", "s3cret-from-settings")
    monkeypatch.setenv("ORCHARD_AIRFLOW_TOKEN", "a-token")
    settings = load_settings()
    env = job_env(settings)
    assert "s3cret-from-settings" not in env.values() and "a-token" not in env.values()
    assert env["ORCHARD_HOME"] == str(settings.home)
    # Airflow's own processes (the stack's) do get it: DAG tasks sign in with it.
    assert settings.to_env()["ORCHARD_AIRFLOW_PASSWORD"] == "s3cret-from-settings"


def test_a_file_mlflow_store_the_user_named_is_allowed_in_ray_jobs(clean_env, monkeypatch):
    from orchard.ray_submit import job_env

    assert "MLFLOW_ALLOW_FILE_STORE" not in job_env(load_settings())
    monkeypatch.setenv("ORCHARD_MLFLOW_TRACKING_URI", "file:///srv/mlruns")
    assert job_env(load_settings())["MLFLOW_ALLOW_FILE_STORE"] == "true"


def test_generated_secrets_are_private_and_stable(clean_env):
    secrets_dir = load_settings().secrets_dir
    value, created = credentials.get_or_create(secrets_dir, "some-key")
    assert created and len(value) >= 32
    assert credentials.get_or_create(secrets_dir, "some-key") == (value, False)
    assert (secrets_dir / "some-key").stat().st_mode & 0o777 == 0o600
    assert secrets_dir.stat().st_mode & 0o777 == 0o700
