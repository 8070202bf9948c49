"""The champion/challenger A/B split: an administrator sends a share of the champion's
traffic to the challenger (refused while the registry has no challenger); chats stay on
one side, gateway requests are drawn one by one; every answer records its side, and the
results per side are read back."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from mlflow import MlflowClient
from sqlmodel import Session, select

from platform_api.access import chat_variant
from platform_api.db import make_engine
from platform_api.models import Message, UsageRecord
from testkit.serving_stub import Reply, ServingStub
from tests.platform.conftest import Account, Api, serve_api

MODEL = "orchard-chat"
SOLO = "orchard-solo"


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> str:
    """A registry (MLflow on SQLite, no server) where `orchard-chat` has a champion and a
    challenger, and `orchard-solo` only a champion."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    (root / "weights").mkdir()
    for name, aliases in ((MODEL, ("champion", "challenger")), (SOLO, ("champion",))):
        client.create_registered_model(name)
        for alias in aliases:
            version = client.create_model_version(name, source=str(root / "weights"))
            client.set_registered_model_alias(name, alias, version.version)
    return uri


@pytest.fixture
def settings(settings, registry):
    return settings.model_copy(update={"mlflow_tracking_uri": registry})


def _grant(api: Api, admin: Account, account: Account) -> None:
    """Enough credits for whatever these tests send (turns may be metered)."""
    response = api.http.post(
        f"/admin/users/{account.id}/credits",
        json={"amount": 1_000_000, "reason": "split test"},
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text


def _split(api: Api, admin: Account, percent: int) -> dict:
    response = api.http.put(
        "/admin/models/split", json={"challenger_percent": percent}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def _send(api: Api, account: Account, chat: dict, content: str = "Hi") -> None:
    with api.http.stream(
        "POST", f"/chats/{chat['id']}/messages", json={"content": content}, headers=account.headers
    ) as response:
        assert response.status_code == 200, response.read()
        events = [line for line in response.iter_lines() if line.startswith("event: ")]
    assert events[-1] == "event: done", events


def _answers(api: Api) -> dict[str, list[Message]]:
    """chat id -> its assistant messages, in order."""
    engine = make_engine(api.database_url)
    try:
        with Session(engine) as session:
            found: dict[str, list[Message]] = {}
            for m in session.exec(
                select(Message).where(Message.role == "assistant").order_by(Message.seq)
            ):
                found.setdefault(m.chat_id, []).append(m)
            return found
    finally:
        engine.dispose()


def test_only_admins_split_within_0_to_100_and_only_with_a_challenger(api, registry):
    root, alice = api.admin("root"), api.user("alice")
    assert api.http.get("/admin/models/split", headers=root.headers).json() == {
        "model_name": MODEL,
        "challenger_percent": 0,
        "updated_at": None,
        "updated_by": None,
        "guardrail": None,
    }
    put = {"json": {"challenger_percent": 10}}
    assert api.http.put("/admin/models/split", headers=alice.headers, **put).status_code == 403
    assert api.http.get("/admin/models/split", headers=alice.headers).status_code == 403
    for bad in (-1, 101, "half", None):
        response = api.http.put(
            "/admin/models/split", json={"challenger_percent": bad}, headers=root.headers
        )
        assert response.status_code == 422, (bad, response.text)
    split = _split(api, root, 25)
    assert split["challenger_percent"] == 25 and split["updated_by"] == root.id
    assert api.http.get("/admin/models/split", headers=root.headers).json() == split
    entries = api.http.get(
        "/admin/audit", params={"action": "model.split"}, headers=root.headers
    ).json()
    assert [(e["target"], e["detail"]["challenger_percent"]) for e in entries] == [(MODEL, 25)]
    assert entries[0]["detail"]["previous"] == 0


@pytest.fixture
def solo_api(settings, database_url) -> Iterator[Api]:
    """The platform serving `orchard-solo`, whose registry entry has no challenger."""
    with serve_api(settings.model_copy(update={"model_name": SOLO}), database_url) as api:
        yield api


def test_a_split_is_refused_while_the_registry_has_no_challenger(solo_api):
    root = solo_api.admin("root")
    response = solo_api.http.put(
        "/admin/models/split", json={"challenger_percent": 10}, headers=root.headers
    )
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "no_challenger"
    assert f"{SOLO} has no challenger alias" in response.json()["detail"]
    assert _split(solo_api, root, 0)["challenger_percent"] == 0  # 0 needs no challenger


def _chats(api: Api, account: Account, count: int, **fields) -> list[dict]:
    return [api.chat(account, title=f"chat {i}", **fields) for i in range(count)]


def test_at_100_percent_the_challenger_answers_every_champion_chat(api, serving: ServingStub):
    root, alice = api.admin("root"), api.user("alice")
    _grant(api, root, alice)
    _split(api, root, 100)
    chats = _chats(api, alice, 4)
    explicit = api.chat(alice, model_alias="challenger")
    for chat in [*chats, explicit]:
        _send(api, alice, chat)
    assert [r["model"] for r in serving.requests] == ["challenger"] * 5
    answers = _answers(api)
    assert [answers[c["id"]][0].variant for c in chats] == ["challenger"] * 4
    assert answers[explicit["id"]][0].variant is None  # not in the experiment: asked for it


def test_at_0_percent_the_champion_answers_and_the_side_is_recorded(api, serving: ServingStub):
    root, alice = api.admin("root"), api.user("alice")
    _grant(api, root, alice)
    _split(api, root, 0)
    chats = _chats(api, alice, 4)
    for chat in chats:
        _send(api, alice, chat)
    assert [r["model"] for r in serving.requests] == ["champion"] * 4
    answers = _answers(api)
    assert [answers[c["id"]][0].variant for c in chats] == ["champion"] * 4


def test_at_50_percent_about_half_the_chats_go_to_the_challenger_and_stay_there(
    api, serving: ServingStub
):
    root, alice = api.admin("root"), api.user("alice")
    _grant(api, root, alice)
    _split(api, root, 50)
    chats = _chats(api, alice, 40)
    for turn in range(2):
        for chat in chats:
            _send(api, alice, chat, f"turn {turn}")
    answers = _answers(api)
    sides = {}
    for chat in chats:
        variants = [m.variant for m in answers[chat["id"]]]
        assert len(variants) == 2 and variants[0] == variants[1], variants  # stable per chat
        assert variants[0] == chat_variant(chat["id"], 50)  # the hash of id and percent
        sides[chat["id"]] = variants[0]
    challengers = sum(side == "challenger" for side in sides.values())
    assert 8 <= challengers <= 32, challengers  # 40 fair coins: 20 ± 12 is > 4.5 sigma
    # What serving was asked for is the recorded side, turn by turn.
    by_content = [r["messages"][-1]["content"] for r in serving.requests]
    assert by_content.count("turn 0") == by_content.count("turn 1") == 40
    asked = [r["model"] for r in serving.requests]
    assert asked.count("challenger") == 2 * challengers


def _usage(api: Api) -> list[UsageRecord]:
    engine = make_engine(api.database_url)
    try:
        with Session(engine) as session:
            return list(session.exec(select(UsageRecord).order_by(UsageRecord.id)))
    finally:
        engine.dispose()


def test_the_gateway_splits_champion_and_bare_name_requests(api, serving: ServingStub):
    root, alice = api.admin("root"), api.user("alice")
    _grant(api, root, alice)
    key = api.http.post("/api-keys", json={"name": "sdk"}, headers=alice.headers).json()["key"]
    client = openai.OpenAI(base_url=f"{api.root}/v1", api_key=key, max_retries=0, timeout=30)
    hello = [{"role": "user", "content": "Hi"}]

    def ask(model: str, count: int) -> list[str]:
        start = len(serving.requests)
        for _ in range(count):
            client.chat.completions.create(model=model, messages=hello, max_tokens=8)
        return [r["model"] for r in serving.requests[start:]]

    _split(api, root, 100)
    assert ask("champion", 3) + ask(MODEL, 3) == ["challenger"] * 6
    assert ask("challenger", 1) == ["challenger"]
    with pytest.raises(openai.NotFoundError):  # a version is not for users by default
        ask(f"{MODEL}/3", 1)
    _split(api, root, 0)
    assert ask("champion", 3) == ["champion"] * 3
    assert ask(MODEL, 1) == [MODEL]
    _split(api, root, 50)
    drawn = ask("champion", 40)
    assert set(drawn) == {"champion", "challenger"}  # per request: both sides, 2^-39 odds

    # Each request's usage records the side that took it; a request that named the
    # challenger (or a version) is not part of the split.
    sides = [r.variant for r in _usage(api) if r.source == "gateway"]
    assert sides[:6] == ["challenger"] * 6 and sides[6] is None
    assert sides[7:11] == ["champion"] * 4
    assert sides[11:] == ["champion" if m == "champion" else "challenger" for m in drawn]
    results = api.http.get("/admin/models/split/results", headers=root.headers).json()
    counted = {v["variant"]: v["gateway_requests"] for v in results["variants"]}
    assert counted == {
        "challenger": 6 + drawn.count("challenger"),
        "champion": 4 + drawn.count("champion"),
    }
    assert {v["gateway_mean_completion_tokens"] for v in results["variants"]} == {4.0}


def test_results_count_answers_feedback_and_tokens_per_side(api, serving: ServingStub):
    root, alice = api.admin("root"), api.user("alice")
    _grant(api, root, alice)
    _split(api, root, 100)
    short = api.chat(alice)
    serving.script(Reply(pieces=["a", "b"]), Reply(pieces=["c", "d"]))
    _send(api, alice, short)
    _send(api, alice, short)
    _split(api, root, 0)
    long = api.chat(alice)
    _send(api, alice, long)  # the default reply: 4 pieces, 4 completion tokens
    answers = _answers(api)
    rate = [(short, answers[short["id"]][0], "up"), (long, answers[long["id"]][0], "down")]
    for chat, message, rating in rate:
        response = api.http.put(
            f"/chats/{chat['id']}/messages/{message.id}/feedback",
            json={"rating": rating},
            headers=alice.headers,
        )
        assert response.status_code == 200, response.text
    assert api.http.get("/admin/models/split/results", headers=alice.headers).status_code == 403
    results = api.http.get("/admin/models/split/results", headers=root.headers).json()
    assert results["split"]["challenger_percent"] == 0
    sides = {v["variant"]: v for v in results["variants"]}
    challenger, champion = sides["challenger"], sides["champion"]
    assert (challenger["messages"], challenger["thumbs_up"], challenger["thumbs_down"]) == (2, 1, 0)
    assert (champion["messages"], champion["thumbs_up"], champion["thumbs_down"]) == (1, 0, 1)
    assert challenger["mean_completion_tokens"] == 2.0
    assert champion["mean_completion_tokens"] == 4.0
    later = api.http.get(
        "/admin/models/split/results",
        params={"since": "2999-01-01T00:00:00Z"},
        headers=root.headers,
    ).json()
    assert [v["messages"] for v in later["variants"]] == [0, 0]
    naive = api.http.get(  # no time zone: UTC
        "/admin/models/split/results", params={"since": "2000-01-01T00:00:00"}, headers=root.headers
    ).json()
    assert [v["messages"] for v in naive["variants"]] == [1, 2]
    assert json.dumps(later["variants"][0]["mean_completion_tokens"]) == "null"
