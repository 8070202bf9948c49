"""The closed loop's A/B test on the platform: a challenger the feedback loop registered
starts its split once; the review reads per-side statistics with an administrator's
`models:review` API key, stores its verdict on the version and logs the model card to
MLflow; the guardrail cuts a challenger that fails every request to 0 % by itself and
the models API shows the alert."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient
from sqlmodel import Session, select

from orchard.ab_review import run_review
from platform_api.access import chat_variant
from platform_api.db import make_engine
from platform_api.models import Message
from testkit.serving_stub import Reply, ServingStub
from tests.platform.conftest import Account, Api

MODEL = "orchard-chat"


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> str:
    """MLflow on SQLite (no server): v1 champion, v2 challenger from the feedback loop,
    each made by a run (the card's artifacts go there) with lineage and eval tags."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("orchard-register", artifact_location=str(root / "art"))
    data_run = client.create_run(experiment).info.run_id
    client.log_metric(data_run, "count.documents", 12345)
    client.log_metric(data_run, "count.tokens", 2_500_000)
    client.create_registered_model(MODEL)
    for alias, score in (("champion", 0.4123456), ("challenger", 0.5049876)):
        run = client.create_run(experiment).info.run_id
        version = client.create_model_version(MODEL, source=str(root / "weights"), run_id=run)
        tags = {
            "orchard.model_step": "dpo",
            "orchard.lineage.mix": "/home/someone/.orchard/data/mix/corpus-3f2a",
            "orchard.lineage.mix.mlflow_run": data_run,
            "orchard.lineage.tokenizer": "/home/someone/.orchard/data/tokenizer/bpe-77aa",
            "eval.lm_eval/docs_qa/exact": str(score),
            "orchard.decontamination.sft": "2 of 800 removed",
        }
        if alias == "challenger":  # what the loop's register step tags (w3-feedback)
            tags |= {
                "orchard.feedback.version": "feedback-3f9e",
                "orchard.feedback.feedback_pairs": "412",
                "orchard.feedback.from_champion": "1",
            }
        for key, value in tags.items():
            client.set_model_version_tag(MODEL, version.version, key, value)
        client.set_registered_model_alias(MODEL, alias, version.version)
    return uri


@pytest.fixture
def settings(settings, registry):
    return settings.model_copy(
        update={
            "mlflow_tracking_uri": registry,
            "ab_guardrail_check_s": 0.2,
            "ab_guardrail_min_answers": 5,
            "rate_limit_user": "1000/minute",
        }
    )


def _key(api: Api, account: Account, scopes: list[str]) -> str:
    response = api.http.post(
        "/api-keys", json={"name": "review", "scopes": scopes}, headers=account.headers
    )
    assert response.status_code == 201, response.text
    return response.json()["key"]


def _turn(api: Api, account: Account, chat: dict) -> str:
    """Send one message: "done", or "failed" (serving failed, before or while streaming)."""
    with api.http.stream(
        "POST", f"/chats/{chat['id']}/messages", json={"content": "Hi"}, headers=account.headers
    ) as response:
        if response.status_code == 502:  # serving failed before the first piece
            return "failed"
        assert response.status_code == 200, response.read()
        events = [line for line in response.iter_lines() if line.startswith("event: ")]
    return events[-1].removeprefix("event: ")


def _answers(api: Api) -> dict[str, Message]:
    """chat id -> its first assistant message."""
    engine = make_engine(api.database_url)
    try:
        with Session(engine) as session:
            found: dict[str, Message] = {}
            query = select(Message).where(Message.role == "assistant").order_by(Message.seq)
            for message in session.exec(query):
                found.setdefault(message.chat_id, message)
            return found
    finally:
        engine.dispose()


def _split(api: Api, admin: Account) -> dict:
    response = api.http.get("/admin/models/split", headers=admin.headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_challenger_failing_every_request_is_cut_to_zero_and_admins_are_alerted(
    api: Api, serving: ServingStub
):
    root, alice = api.admin("root"), api.user("alice")
    response = api.http.put(
        "/admin/models/split", json={"challenger_percent": 100}, headers=root.headers
    )
    assert response.status_code == 200, response.text
    serving.script(*[Reply(status=500) for _ in range(6)])
    assert [_turn(api, alice, api.chat(alice)) for _ in range(6)] == ["failed"] * 6
    deadline = time.monotonic() + 30
    while (split := _split(api, root))["challenger_percent"] != 0:
        assert time.monotonic() < deadline, f"the guardrail never cut the split: {split}"
        time.sleep(0.2)
    alert = split["guardrail"]
    assert alert["metric"] == "error_rate" and alert["previous_percent"] == 100
    assert alert["version"] == "2"
    assert alert["rate"] == 1.0 and alert["low"] > alert["bound"] == 0.2
    audit = api.http.get(
        "/admin/audit", params={"action": "model.guardrail"}, headers=root.headers
    ).json()
    assert len(audit) == 1 and audit[0]["actor_id"] is None
    assert audit[0]["detail"]["actor_email"] == "guardrail"
    # Prometheus counts the cut (the OrchardChallengerCutByGuardrail alert fires on it).
    metrics = httpx.get(f"{api.root}/metrics").text
    assert 'orchard_platform_ab_guardrail_cuts_total{model="orchard-chat"} 1.0' in metrics
    assert 'orchard_platform_ab_challenger_percent{model="orchard-chat"} 0.0' in metrics
    # New chats go to the champion again (the stub answers: the champion works).
    assert _turn(api, alice, api.chat(alice)) == "done"
    # An admin setting the split again clears the alert; the audit entry stays.
    api.http.put("/admin/models/split", json={"challenger_percent": 0}, headers=root.headers)
    assert _split(api, root)["guardrail"] is None


def test_the_loop_split_the_review_and_the_model_card(
    api: Api, serving: ServingStub, registry: str
):
    client = MlflowClient(tracking_uri=registry, registry_uri=registry)
    for tag in ("ab.split_started_at", "ab.review"):  # the other backend's run set them
        client.delete_model_version_tag(MODEL, "2", tag)
    root, alice = api.admin("root"), api.user("alice")
    refused = api.http.post(  # a user's key may not carry an administrators' scope
        "/api-keys", json={"name": "review", "scopes": ["models:review"]}, headers=alice.headers
    )
    assert refused.status_code == 403 and refused.json()["code"] == "admin_scope"
    alice_key = _key(api, alice, ["chats:read"])
    refused = api.http.get(
        "/admin/models/split/stats", headers={"Authorization": f"Bearer {alice_key}"}
    )
    assert refused.status_code == 403
    key = _key(api, root, ["models:review"])
    by_key = {"Authorization": f"Bearer {key}"}
    assert api.http.get("/admin/models", headers=by_key).status_code == 403  # not its scope

    started = api.http.post("/admin/models/split/loop", headers=by_key).json()
    assert started["started"] and started["version"] == "2"
    assert started["split"]["challenger_percent"] == api.settings.ab_loop_share_percent == 10
    again = api.http.post("/admin/models/split/loop", headers=by_key).json()
    assert not again["started"] and "started at" in again["reason"]

    # Traffic at 10 %: 20 champion chats and 5 challenger chats (the side is a hash of
    # the chat id); every answer rated, up on the challenger, down on the champion.
    chats, wanted = [], {"champion": 20, "challenger": 5}
    while any(wanted.values()):
        chat = api.chat(alice)
        side = chat_variant(chat["id"], 10)
        if wanted[side]:
            wanted[side] -= 1
            chats.append(chat)
    for chat in chats:
        assert _turn(api, alice, chat) == "done"
    sides: dict[str, int] = {}
    answers = _answers(api)
    for chat in chats:
        answer = answers[chat["id"]]
        sides[answer.variant] = sides.get(answer.variant, 0) + 1
        rating = "up" if answer.variant == "challenger" else "down"
        response = api.http.put(
            f"/chats/{chat['id']}/messages/{answer.id}/feedback",
            json={"rating": rating},
            headers=alice.headers,
        )
        assert response.status_code == 200, response.text
    stats = api.http.get("/admin/models/split/stats", headers=by_key).json()
    counted = {s["variant"]: s for s in stats["sides"]}
    assert sides == {"champion": 20, "challenger": 5}
    assert {v: s["answers"] for v, s in counted.items()} == sides
    assert counted["champion"]["thumbs_down"] == counted["champion"]["rated"] > 0
    assert counted["champion"]["latency_ms_mean"] is not None

    summary = run_review(
        api_url=api.root,
        api_key=key,
        tracking_uri=registry,
        model_name=MODEL,
        min_rated=1,
        airflow_run_id="scheduled__2026-12-07T12:00:00+00:00",
        mlflow_url=registry,  # as the platform's settings: not a web address, no links
        airflow_url=api.settings.airflow_base_url,
    )
    assert summary["version"] == "2" and summary["verdict"] in ("promote", "keep testing")
    version = client.get_model_version(MODEL, "2")
    review = json.loads(version.tags["ab.review"])
    assert version.tags["ab.verdict"] == review["verdict"] == summary["verdict"]
    up = review["sides"]["challenger"]["thumbs_up_rate"]
    assert up["value"] == 1.0 and 0 < up["low"] < 1.0
    # The card is an MLflow artifact of the version's run...
    local = client.download_artifacts(version.run_id, "model_card/model_card.md")
    logged = Path(local).read_text()
    assert "Verdict: **" in logged
    assert "feedback-3f9e (feedback pairs 412, from champion v1)" in logged
    # ...and the admin API renders the same card.
    card = api.http.get("/admin/models/2/card", headers=root.headers).json()
    assert card["markdown"] == logged
    assert card["artifact"] == f"runs:/{version.run_id}/model_card/model_card.md"
    assert card["metrics"] == [{"name": "docs_qa/exact", "value": "0.505", "champion": "0.412"}]
    assert card["data"] == {"mix": "documents 12.3k, tokens 2.5M"}
    assert card["tokenizer"] == "bpe-77aa"
    assert card["decontamination"] == {"sft": "2 of 800 removed"}
    mix = next(r for r in card["runs"] if r["step"] == "mix")
    mix_run = version.tags["orchard.lineage.mix.mlflow_run"]
    assert mix["manifest"] == "corpus-3f2a"  # no local path
    assert mix["mlflow"] == {"label": f"run {mix_run[:8]}", "url": None}
    airflow = api.settings.airflow_base_url
    assert mix["airflow"]["url"] == f"{airflow}/dags/orchard_data/runs"
    reviewed = next(r for r in card["runs"] if r["step"] == "orchard_ab_review")
    assert reviewed["airflow"]["url"].endswith(
        "/dags/orchard_ab_review/runs/scheduled__2026-12-07T12:00:00+00:00"
    )
    assert card["review"]["verdict"] == summary["verdict"]
    listed = api.http.get("/admin/models", headers=root.headers).json()
    assert next(v for v in listed["versions"] if v["version"] == "2")["review"] == review
    assert api.http.get("/admin/models/9/card", headers=root.headers).status_code == 404
    assert api.http.get("/admin/models/2/card", headers=alice.headers).status_code == 403
