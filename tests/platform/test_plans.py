"""Plans: admin CRUD (unique names, one default, deletion falls back to the default), a
user's plan and limit overrides, and the monthly grant: once per user and calendar month,
also under concurrent attempts."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlmodel import Session, select

from platform_api.db import make_engine
from platform_api.manage import main
from platform_api.models import Plan, PlanGrant, User
from platform_api.plans import grant_monthly
from tests.platform.conftest import serve_api


@pytest.fixture
def engine(api):
    engine = make_engine(api.database_url, pooled=False)
    yield engine
    engine.dispose()


def create_plan(api, admin, **fields) -> dict:
    response = api.http.post("/admin/plans", json=fields, headers=admin.headers)
    assert response.status_code == 201, response.text
    return response.json()


def credits(api, account) -> dict:
    response = api.http.get("/credits", headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


def grants(engine, user_id: str) -> list[str]:
    with Session(engine) as session:
        query = select(PlanGrant.period).where(PlanGrant.user_id == user_id)
        return sorted(session.exec(query))


def test_admins_create_list_change_and_delete_plans(api):
    root, alice = api.admin(), api.user("alice")
    free = create_plan(api, root, name="Free", monthly_credits=100, daily_token_limit=1000)
    assert (free["name"], free["monthly_credits"], free["is_default"]) == ("Free", 100, False)
    assert free["monthly_token_limit"] is None
    taken = api.http.post("/admin/plans", json={"name": "Free"}, headers=root.headers)
    assert (taken.status_code, taken.json()["code"]) == (409, "plan_name_taken")
    pro = create_plan(api, root, name="Pro", monthly_credits=5000, is_default=True)

    changed = api.http.patch(
        f"/admin/plans/{free['id']}",
        json={"is_default": True, "daily_token_limit": None, "description": "for everyone"},
        headers=root.headers,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["daily_token_limit"] is None  # null: unlimited
    listed = {p["name"]: p for p in api.http.get("/admin/plans", headers=root.headers).json()}
    assert (listed["Free"]["is_default"], listed["Pro"]["is_default"]) == (True, False)
    clash = api.http.patch(f"/admin/plans/{pro['id']}", json={"name": "Free"}, headers=root.headers)
    assert clash.status_code == 409
    bad = api.http.patch(f"/admin/plans/{pro['id']}", json={"name": None}, headers=root.headers)
    assert bad.status_code == 400 and "name" in bad.json()["detail"]
    negative = api.http.post(
        "/admin/plans", json={"name": "X", "monthly_credits": -1}, headers=root.headers
    )
    assert negative.status_code == 422

    assert api.http.delete(f"/admin/plans/{pro['id']}", headers=root.headers).status_code == 204
    assert api.http.delete(f"/admin/plans/{pro['id']}", headers=root.headers).status_code == 404
    assert api.http.get("/admin/plans", headers=alice.headers).status_code == 403
    actions = [e["action"] for e in api.http.get("/admin/audit", headers=root.headers).json()]
    # newest first; the refused changes (409, 400) left no entry
    assert actions == ["plan.delete", "plan.update", "plan.create", "plan.create"]


def test_a_new_account_gets_the_default_plan_and_its_grant_once_a_month(api, engine):
    root = api.admin()
    plan = create_plan(api, root, name="Free", monthly_credits=300, is_default=True)
    alice = api.user("alice")
    statement = credits(api, alice)
    assert statement["plan"]["id"] == plan["id"] and statement["balance"] == 300
    (entry,) = statement["entries"]
    assert entry["kind"] == "grant" and "Free" in entry["reason"]
    assert credits(api, alice)["balance"] == 300  # read again: no second grant
    month = datetime.now(UTC).strftime("%Y-%m")
    assert grants(engine, alice.id) == [month]


def test_a_user_can_be_moved_to_a_plan_and_given_own_limits(api, engine):
    root, alice = api.admin(), api.user("alice")
    default = create_plan(api, root, name="Free", daily_token_limit=100, is_default=True)
    pro = create_plan(api, root, name="Pro", daily_token_limit=10_000, monthly_token_limit=50_000)
    url = f"/admin/users/{alice.id}"
    moved = api.http.patch(url, json={"plan_id": pro["id"]}, headers=root.headers)
    assert moved.status_code == 200 and moved.json()["plan_id"] == pro["id"]
    assert credits(api, alice)["limits"] == {
        "daily_token_limit": 10_000,
        "monthly_token_limit": 50_000,
    }
    own = api.http.patch(url, json={"daily_token_limit": 7}, headers=root.headers).json()
    assert (own["daily_token_limit"], own["plan_id"]) == (7, pro["id"])  # the plan stays
    assert credits(api, alice)["limits"]["daily_token_limit"] == 7
    api.http.patch(url, json={"daily_token_limit": None}, headers=root.headers)
    assert credits(api, alice)["limits"]["daily_token_limit"] == 10_000
    unknown = api.http.patch(url, json={"plan_id": "nope"}, headers=root.headers)
    assert unknown.status_code == 404

    # Deleting the plan in use: alice falls back to the default plan.
    assert api.http.delete(f"/admin/plans/{pro['id']}", headers=root.headers).status_code == 204
    statement = credits(api, alice)
    assert statement["plan"]["id"] == default["id"]
    assert statement["limits"]["daily_token_limit"] == 100
    with Session(engine) as session:
        assert session.get(User, alice.id).plan_id is None
    # An administrator can change their own plan, not their own role.
    assert (
        api.http.patch(
            f"/admin/users/{root.id}", json={"plan_id": default["id"]}, headers=root.headers
        ).status_code
        == 200
    )
    assert (
        api.http.patch(
            f"/admin/users/{root.id}", json={"role": "user"}, headers=root.headers
        ).status_code
        == 400
    )


def test_concurrent_grants_for_one_month_give_one_and_a_new_month_another(api, engine):
    root = api.admin()
    create_plan(api, root, name="Free", monthly_credits=50, is_default=True)
    alice = api.register("alice")
    june, july = datetime(2031, 6, 3, tzinfo=UTC), datetime(2031, 7, 1, tzinfo=UTC)
    start = threading.Barrier(4)
    granted: list[int] = []
    errors: list[Exception] = []

    def run() -> None:
        try:
            with Session(engine, expire_on_commit=False) as session:
                session.connection()
                start.wait()
                granted.append(grant_monthly(session, june))
        except Exception as error:  # a failed thread must fail the test
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(granted) == 2  # alice and root, once each
    assert grants(engine, alice.id) == ["2031-06"]
    with Session(engine, expire_on_commit=False) as session:
        assert grant_monthly(session, june) == 0  # idempotent
        assert grant_monthly(session, july) == 2
    assert grants(engine, alice.id) == ["2031-06", "2031-07"]
    alice = api.login(alice)
    assert credits(api, alice)["balance"] == 100 + 50  # the current month's lazy grant too


def test_the_grant_command_grants_every_account(api, engine, monkeypatch, capsys):
    monkeypatch.setenv("ORCHARD_DATABASE_URL", api.database_url)
    root = api.admin()
    create_plan(api, root, name="Free", monthly_credits=10, is_default=True)
    api.register("alice")
    assert main(["grant-monthly"]) == 0
    assert "2 account(s)" in capsys.readouterr().out
    assert main(["grant-monthly"]) == 0
    assert "0 account(s)" in capsys.readouterr().out


def test_admins_search_users_by_email_or_name_with_filters(api):
    root = api.admin()
    ann = api.user("ann.lee")
    api.http.patch("/users/me", json={"display_name": "Annie Lee"}, headers=ann.headers)
    bob = api.user("bob")
    api.http.patch("/users/me", json={"display_name": "Bob LEEDS"}, headers=bob.headers)
    carl = api.user("carl_x")
    api.http.patch(f"/admin/users/{carl.id}", json={"status": "banned"}, headers=root.headers)

    def search(**params) -> list[str]:
        response = api.http.get("/admin/users", params=params, headers=root.headers)
        assert response.status_code == 200, response.text
        return sorted(u["email"].split("@")[0] for u in response.json())

    assert search(q="LEE") == ["ann.lee", "bob"]  # email or display name, any case
    assert search(q="annie") == ["ann.lee"]
    assert search(q="_") == ["carl_x"]  # LIKE wildcards match only themselves
    assert search(q="%") == []
    assert search(status="banned") == ["carl_x"]
    assert search(role="admin") == ["root"]
    assert search(q="lee", status="active") == ["ann.lee", "bob"]
    assert search(q="lee", status="banned") == []
    bad = api.http.get("/admin/users", params={"role": "owner"}, headers=root.headers)
    assert bad.status_code == 422


def test_a_new_platform_starts_with_a_starter_plan_so_new_accounts_can_chat(settings, database_url):
    """`starter_plan_credits` makes the default plan `Starter` at the first start-up of a
    new database; a restart, or a platform in use whose plans an admin deleted, makes none."""
    starter = settings.model_copy(update={"starter_plan_credits": 2500})

    for _ in range(2):  # a new database, then a restart: one plan
        with serve_api(starter, database_url):  # started: the lifespan ran
            engine = make_engine(database_url, pooled=False)
            with Session(engine) as session:
                plans = session.exec(select(Plan)).all()
            engine.dispose()
            assert [(p.name, p.monthly_credits, p.is_default) for p in plans] == [
                ("Starter", 2500, True)
            ]

    with serve_api(starter, database_url) as api:
        alice, root = api.user("alice"), api.admin()
        statement = credits(api, alice)
        assert statement["balance"] == 2500 and statement["plan"]["name"] == "Starter"
        chat = api.http.post("/chats", json={}, headers=alice.headers).json()
        sent = api.http.post(
            f"/chats/{chat['id']}/messages", json={"content": "hello"}, headers=alice.headers
        )
        assert sent.status_code == 200, sent.text  # paid by the Starter grant
        deleted = api.http.delete(f"/admin/plans/{plans[0].id}", headers=root.headers)
        assert deleted.status_code == 204

    with serve_api(starter, database_url) as api:  # in use, every plan deleted: none again
        assert api.http.get("/admin/plans", headers=api.login(root).headers).json() == []
