"""Rate limits: per user, per API key and per client IP, 429 with `Retry-After`, in-process
by default and shared through a real Redis server when `ORCHARD_REDIS_URL` is set.

Limits do not depend on the database, so these tests run on SQLite only."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest

from orchard.errors import OrchardError
from orchard.settings import Settings
from platform_api.app import create_app
from platform_api.ratelimit import KEY_PREFIX, RateLimiter
from tests.conftest import free_port
from tests.platform.conftest import FAST_ARGON2, Api, LiveServer
from tests.platform.redis_server import RedisServer, RedisUnavailable, start_redis

MakeApi = Callable[..., Api]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = start_redis()
    except RedisUnavailable as error:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test the Redis rate limits: {error}")
        pytest.skip(f"Redis unavailable: {error}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_api(clean_env, tmp_path, serving) -> Iterator[MakeApi]:
    """Starts platform APIs with the given limits, all on one SQLite database (like replicas
    of one deployment); stops them at the end."""
    started: list[tuple[LiveServer, httpx.Client]] = []
    database_url = f"sqlite:///{tmp_path / 'platform.db'}"

    def make(**limits: str) -> Api:
        settings = Settings(
            home=clean_env, database_url=database_url, serving_url=serving.url, **limits
        )
        server = LiveServer(create_app(settings, FAST_ARGON2))
        server.start()
        http = httpx.Client(base_url=f"{server.url}/api/v1", timeout=60)
        started.append((server, http))
        return Api(http=http, root=server.url, settings=settings, database_url=database_url)

    try:
        yield make
    finally:
        for server, http in started:
            http.close()
            server.stop()


def assert_limited(response: httpx.Response, window_s: int) -> int:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["code"] == "rate_limited"
    assert "retry in" in body["detail"]
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= window_s
    return retry_after


def test_a_user_over_the_limit_gets_429_with_retry_after_and_others_go_on(make_api):
    api = make_api(rate_limit_user="5/minute")
    alice, bob = api.user("alice"), api.user("bob")
    for _ in range(5):
        assert api.http.get("/users/me", headers=alice.headers).status_code == 200
    refused = api.http.get("/chats", headers=alice.headers)
    assert_limited(refused, 60)
    assert "this account" in refused.json()["detail"]
    # Another user has a budget of their own.
    assert api.http.get("/users/me", headers=bob.headers).status_code == 200


def test_a_client_that_waits_retry_after_gets_through(make_api):
    api = make_api(rate_limit_user="3/second")
    alice = api.user("alice")
    for _ in range(50):  # the 4th within a second is refused
        refused = api.http.get("/users/me", headers=alice.headers)
        if refused.status_code != 200:
            break
    time.sleep(assert_limited(refused, 1))
    assert api.http.get("/users/me", headers=alice.headers).status_code == 200


def test_an_api_key_has_its_own_limit(make_api):
    api = make_api(rate_limit_api_key="3/minute", rate_limit_user="100/minute")
    alice = api.user("alice")
    body = {"name": "script", "scopes": ["chats:read"]}
    created = api.http.post("/api-keys", json=body, headers=alice.headers)
    key = {"Authorization": f"Bearer {created.json()['key']}"}
    for _ in range(3):
        assert api.http.get("/chats", headers=key).status_code == 200
    refused = api.http.get("/chats", headers=key)
    assert_limited(refused, 60)
    assert "this API key" in refused.json()["detail"]
    # The same account at its login is counted separately.
    assert api.http.get("/chats", headers=alice.headers).status_code == 200


def test_password_guessing_from_one_address_is_slowed_down(make_api):
    api = make_api(rate_limit_auth_ip="4/minute")
    api.register("alice")  # one attempt
    for _ in range(3):
        wrong = {"email": "alice@example.org", "password": "not the password"}
        assert api.http.post("/auth/login", json=wrong).status_code == 401
    # Even the right password waits now: the guesser cannot tell a hit from a miss.
    right = {"email": "alice@example.org", "password": "correct horse battery"}
    refused = api.http.post("/auth/login", json=right)
    assert_limited(refused, 60)
    assert "sign-in attempts" in refused.json()["detail"]


def test_every_request_counts_against_its_address(make_api):
    api = make_api(rate_limit_ip="6/minute", rate_limit_user="100/minute")
    alice = api.user("alice")  # register + login: 2
    for _ in range(4):
        assert api.http.get("/users/me", headers=alice.headers).status_code == 200
    assert_limited(api.http.get("/users/me", headers=alice.headers), 60)
    # Unauthenticated requests are counted (and refused) as well.
    assert_limited(api.http.get("/chats"), 60)
    # The liveness probe is not an API call and is never limited.
    assert httpx.get(f"{api.root}/healthz").status_code == 200


def test_with_redis_every_api_process_shares_the_counters(make_api, redis_server):
    first = make_api(rate_limit_user="4/minute", redis_url=redis_server.url)
    second = make_api(rate_limit_user="4/minute", redis_url=redis_server.url)
    alice = first.user("alice")
    for api in (first, second, first, second):
        assert api.http.get("/users/me", headers=alice.headers).status_code == 200
    # Two replicas do not double the budget: the fifth request is refused by either.
    assert_limited(second.http.get("/users/me", headers=alice.headers), 60)
    assert_limited(first.http.get("/users/me", headers=alice.headers), 60)
    keys = redis_server.client().keys(f"{KEY_PREFIX}*")
    assert any(alice.id.encode() in key for key in keys), keys


def test_an_unreachable_redis_is_a_clear_error_at_start(clean_env):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    limiter = RateLimiter.from_settings(Settings(home=clean_env, redis_url=dead))
    with pytest.raises(OrchardError, match="ORCHARD_REDIS_URL"):
        limiter.check_storage()
    with pytest.raises(OrchardError, match="not a Redis URL"):
        RateLimiter.from_settings(Settings(home=clean_env, redis_url="http://cache:6379"))


def test_the_openai_gateway_answers_429_in_openai_shape(make_api):
    api = make_api(rate_limit_api_key="2/minute")
    alice = api.user("alice")
    key = api.http.post("/api-keys", json={"name": "sdk"}, headers=alice.headers).json()["key"]
    client = openai.OpenAI(base_url=f"{api.root}/v1", api_key=key, max_retries=0)
    for _ in range(2):
        client.models.list()
    with pytest.raises(openai.RateLimitError) as error:
        client.models.list()
    assert error.value.code == "rate_limited"
    assert 1 <= int(error.value.response.headers["Retry-After"]) <= 60
