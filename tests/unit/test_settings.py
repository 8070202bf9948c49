from __future__ import annotations

from pathlib import Path

import pytest

from orchard.settings import SettingsError, load_settings


def test_defaults_are_the_embedded_local_stack(clean_env):
    settings = load_settings()
    assert settings.home == clean_env
    assert settings.data_dir == str(clean_env / "data")
    assert settings.mlflow_uri == "http://127.0.0.1:5000"
    assert settings.airflow_base_url == "http://127.0.0.1:8080"
    assert settings.ray_dashboard_url == "http://127.0.0.1:8265"
    assert settings.model_name == "orchard-chat"
    assert settings.database_url is None and settings.redis_url is None


def test_home_defaults_to_dot_orchard_in_the_working_directory(clean_env, monkeypatch):
    monkeypatch.delenv("ORCHARD_HOME")
    assert load_settings().home == Path.cwd() / ".orchard"


def test_environment_overrides_and_production_urls(clean_env, monkeypatch):
    monkeypatch.setenv("ORCHARD_AIRFLOW_PORT", "9090")
    monkeypatch.setenv("ORCHARD_MLFLOW_TRACKING_URI", "http://mlflow.prod:5000/")
    settings = load_settings()
    assert settings.airflow_base_url == "http://127.0.0.1:9090"
    assert settings.mlflow_uri == "http://mlflow.prod:5000"


def test_orchard_toml_in_the_working_directory_is_read(clean_env, monkeypatch):
    Path("orchard.toml").write_text('api_port = 8111\nmodel_name = "my-chat"\n')
    monkeypatch.setenv("ORCHARD_MODEL_NAME", "env-wins")
    settings = load_settings()
    assert settings.api_port == 8111
    assert settings.model_name == "env-wins"


def test_orchard_config_names_another_toml(clean_env, monkeypatch, tmp_path):
    config = tmp_path / "elsewhere.toml"
    config.write_text("mlflow_port = 5050\n")
    monkeypatch.setenv("ORCHARD_CONFIG", str(config))
    assert load_settings().mlflow_port == 5050
    monkeypatch.setenv("ORCHARD_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings()


def test_unknown_environment_setting_is_named_with_a_suggestion(clean_env, monkeypatch):
    monkeypatch.setenv("ORCHARD_AIRFLOW_PROT", "1")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert "ORCHARD_AIRFLOW_PROT" in str(error.value)
    assert "ORCHARD_AIRFLOW_PORT" in str(error.value)


def test_unknown_toml_key_is_named(clean_env):
    Path("orchard.toml").write_text("mlfow_port = 1\n")
    with pytest.raises(SettingsError, match="unknown setting 'mlfow_port'.*mlflow_port"):
        load_settings()


def test_bad_value_names_the_variable_to_fix(clean_env, monkeypatch):
    monkeypatch.setenv("ORCHARD_API_PORT", "99999")
    with pytest.raises(SettingsError, match="99999.*ORCHARD_API_PORT"):
        load_settings()


def test_malformed_toml_is_reported(clean_env):
    Path("orchard.toml").write_text("api_port = = 1\n")
    with pytest.raises(SettingsError, match="cannot read orchard.toml"):
        load_settings()


def test_two_services_on_one_port_are_refused(clean_env, monkeypatch):
    monkeypatch.setenv("ORCHARD_MLFLOW_PORT", "8080")
    with pytest.raises(SettingsError, match="airflow_port and mlflow_port are both 8080"):
        load_settings()


def test_to_env_round_trips_and_keeps_secrets_out_of_repr(clean_env, monkeypatch):
    monkeypatch.setenv("ORCHARD_S3_SECRET_KEY", "s3cr3t")
    monkeypatch.setenv("ORCHARD_RAY_NUM_CPUS", "2")
    settings = load_settings()
    assert "s3cr3t" not in repr(settings)
    env = settings.to_env()
    assert env["ORCHARD_S3_SECRET_KEY"] == "s3cr3t"
    for key, value in env.items():  # what a process the stack starts sees
        monkeypatch.setenv(key, value)
    assert load_settings() == settings


def test_a_malformed_rate_limit_names_the_variable_and_the_notation(clean_env, monkeypatch):
    monkeypatch.setenv("ORCHARD_RATE_LIMIT_USER", "fast please")
    with pytest.raises(SettingsError, match="'120/minute'.*ORCHARD_RATE_LIMIT_USER"):
        load_settings()
    monkeypatch.setenv("ORCHARD_RATE_LIMIT_USER", "10/second;1000/hour")
    assert load_settings().rate_limit_user == "10/second;1000/hour"
