import stat

import pytest
from fastapi.testclient import TestClient

import orchard
from orchard.settings import load_settings
from platform_api.app import create_app
from platform_api.config import PlatformOptions

FAST_ARGON2 = PlatformOptions(argon2_time_cost=1, argon2_memory_cost_kib=1024, argon2_parallelism=1)


def test_healthz_reports_ok_and_version(clean_env):
    client = TestClient(create_app(load_settings()))
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": orchard.__version__}


def test_start_up_migrates_sqlite_under_home_and_generates_private_secrets(clean_env):
    with TestClient(create_app(load_settings(), FAST_ARGON2)) as client:
        assert (clean_env / "platform.db").is_file()
        for name in ("platform-jwt-secret", "platform-totp-key"):
            mode = (clean_env / "secrets" / name).stat().st_mode
            assert stat.S_IMODE(mode) == 0o600
        response = client.get("/api/v1/users/me")
        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"
    # a second start-up reuses the database and the secrets
    key = (clean_env / "secrets" / "platform-jwt-secret").read_text()
    with TestClient(create_app(load_settings(), FAST_ARGON2)) as client:
        assert client.get("/healthz").status_code == 200
    assert (clean_env / "secrets" / "platform-jwt-secret").read_text() == key


def test_bad_platform_options_say_what_to_fix():
    with pytest.raises(ValueError, match="argon2_memory_cost_kib"):
        PlatformOptions(argon2_memory_cost_kib=4, argon2_parallelism=1)


PUBLIC_ENDPOINTS = {
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
    ("GET", "/api/v1/shared/{token}"),
    # OAuth sign-in: the way to a credential (the exchange answers one).
    ("GET", "/api/v1/auth/oauth/providers"),
    ("GET", "/api/v1/auth/oauth/{name}/login"),
    ("GET", "/api/v1/auth/oauth/{name}/callback"),
    ("POST", "/api/v1/auth/oauth/exchange"),
}


def test_every_endpoint_but_the_public_ones_requires_a_credential(clean_env):
    """A guard for new routes: forgetting the caller dependency shows up here."""
    spec = TestClient(create_app(load_settings())).get("/openapi.json").json()
    endpoints = [
        (method.upper(), path, operation)
        for path, operations in spec["paths"].items()
        if path.startswith("/api/v1/")
        for method, operation in operations.items()
    ]
    assert len(endpoints) > 30
    for method, path, operation in endpoints:
        secured = bool(operation.get("security"))
        assert secured == ((method, path) not in PUBLIC_ENDPOINTS), (method, path)
