"""The platform API over real HTTP, for tests and benchmarks: uvicorn serving an app in a
thread (`LiveServer`), accounts that register and log in (`Api`, `Account`), credits
granted in the database or by an administrator, personal API keys."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx
import uvicorn
from sqlmodel import Session

from orchard.settings import Settings
from platform_api.config import PlatformOptions
from platform_api.credits import CreditLedger
from platform_api.db import make_engine
from platform_api.manage import make_admin
from testkit.stack import free_port

FAST_ARGON2 = PlatformOptions(argon2_time_cost=1, argon2_memory_cost_kib=1024, argon2_parallelism=1)
PASSWORD = "correct horse battery"
CHAT_CREDITS = 1_000_000


def grant_credits(url: str, user_id: str, amount: int, reason: str = "test credits") -> None:
    """A ledger grant straight in the database (no administrator, no audit entry)."""
    engine = make_engine(url, pooled=False)
    try:
        with Session(engine) as session:
            CreditLedger(session).grant(user_id, amount, reason)
            session.commit()
    finally:
        engine.dispose()


class LiveServer:
    """uvicorn serving `app` in a thread, lifespan included (so migrations run)."""

    def __init__(self, app) -> None:
        self.app = app
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=5
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the platform API did not start (see the log above)")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def quiesce(self, timeout: float = 30) -> bool:
        """Wait until no request is being handled and no chat turn is running; False if
        that did not happen within `timeout` (or the server is gone)."""
        deadline = time.monotonic() + timeout
        while self.thread.is_alive() and time.monotonic() < deadline:
            turns = getattr(self.app.state, "turns", None)
            if not self.server.server_state.tasks and not (turns and turns.running):
                return True
            time.sleep(0.02)
        return False


@dataclass
class Account:
    email: str
    id: str
    tokens: dict = field(default_factory=dict)
    password: str = PASSWORD
    funded: bool = False  # granted CHAT_CREDITS (by its first `Api.chat`)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens['access_token']}"}


@dataclass
class Api:
    http: httpx.Client  # base URL: /api/v1
    root: str
    settings: Settings
    database_url: str

    def register(self, name: str, password: str = PASSWORD) -> Account:
        email = f"{name}@example.org"
        response = self.http.post("/auth/register", json={"email": email, "password": password})
        assert response.status_code == 201, response.text
        return Account(email=email, id=response.json()["id"], password=password)

    def login(self, account: Account, **extra) -> Account:
        body = {"email": account.email, "password": account.password, **extra}
        response = self.http.post("/auth/login", json=body)
        assert response.status_code == 200, response.text
        account.tokens = response.json()
        return account

    def user(self, name: str) -> Account:
        return self.login(self.register(name))

    def admin(self, name: str = "root") -> Account:
        account = self.register(name)
        make_admin(self.database_url, account.email)
        return self.login(account)

    def chat(self, account: Account, **fields) -> dict:
        """A new chat of `account`'s; the account's first chat comes with CHAT_CREDITS, so
        its turns (metered: reserved, then settled) are paid for."""
        if not account.funded:
            url = self.database_url or self.settings.database_url
            grant_credits(url, account.id, CHAT_CREDITS)
            account.funded = True
        response = self.http.post("/chats", json=fields, headers=account.headers)
        assert response.status_code == 201, response.text
        return response.json()


def grant(api: Api, account: Account, amount: int) -> None:
    root = api.admin("root")
    response = api.http.post(
        f"/admin/users/{account.id}/credits",
        json={"amount": amount, "reason": "test"},
        headers=root.headers,
    )
    assert response.status_code == 201, response.text


def new_key(api: Api, account: Account) -> str:
    response = api.http.post("/api-keys", json={"name": "sdk"}, headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()["key"]
