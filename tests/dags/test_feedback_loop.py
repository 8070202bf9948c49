"""The closed loop of issue 23 on the local stack, DAG by DAG in-process (`dag.test()`,
training steps as Ray jobs), the platform API on loopback and used over HTTP only:

1. the champion: a tiny chat model registered by the register step, its lineage naming
   chat data whose held-out set (what evaluation asks) holds a planted question;
2. scripted users chat, regenerate long answers and rate, against the platform tests'
   serving stand-in so the feedback is exactly known: one types an e-mail address, one
   asks the planted evaluation question, one turns "use my feedback" off;
3. `orchard_feedback`, with an administrator's `feedback:export` key, publishes the
   preference set: no e-mail, no opted-out user, the evaluation question removed;
4. `orchard_posttrain` from that set registers a challenger whose lineage names the
   feedback version, the champion it started from and the row counts;
5. the platform API, restarted on the same database against the stack's real serving:
   `orchard_ab_review` (a `models:review` key) starts the loop's split at 10 %; scripted
   traffic reaches both models; the next review stores a verdict with intervals per side
   (time to first token included) and logs the model card to MLflow;
6. an administrator promotes the challenger through the API, and once serving has moved,
   new chats are answered by the promoted version.

The registered model is the stack's own (the one its serving serves); the test registers
its own champion first, so whatever an earlier test left there does not matter."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from orchard.ab_stats import VERDICTS
from orchard.steps import Manifest
from platform_api.app import create_app
from platform_api.manage import make_admin
from testkit.loop_champion import HELDOUT, register_tiny_champion
from testkit.platform import FAST_ARGON2, LiveServer
from testkit.population import QUESTIONS, Population, Tally
from testkit.serving_stub import Reply, ServingStub
from tests.unit.test_feedback_dataset import EVAL_QUESTION

ADMIN = {"email": "loop-root@example.org", "password": "correct horse battery"}
ASKED = ["How do I pretty-print JSON?", "How do I sort keys?"]
PII = "Write to me at alice.smith@corp.io about indent"


@pytest.fixture(scope="module")
def airflow_db():
    from airflow.utils import db

    db.initdb()


def replies(turns: int) -> list[Reply]:
    """Every first answer long (it gets regenerated), every second one short (rated up)."""
    return [
        reply
        for i in range(turns)
        for reply in (
            Reply(pieces=[f"Answer {i} goes on and on ", "with far more words than wanted."]),
            Reply(pieces=[f"Short {i}."]),
        )
    ]


def api_key(http: httpx.Client, admin: dict[str, str], scope: str) -> str:
    made = http.post(
        "/api-keys", json={"name": scope.replace(":", "-"), "scopes": [scope]}, headers=admin
    )
    assert made.status_code == 201, made.text
    return made.json()["key"]


def login(http: httpx.Client) -> dict[str, str]:
    token = http.post("/auth/login", json=ADMIN).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.slow
@pytest.mark.integration
def test_users_feedback_becomes_a_challenger_proven_in_production_and_promoted(
    dagbag, airflow_db, stack, monkeypatch, tmp_path
):
    from mlflow import MlflowClient

    from tests.conftest import wait_serving

    settings = stack.settings()
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    name = settings.model_name
    client = MlflowClient(tracking_uri=settings.mlflow_uri, registry_uri=settings.mlflow_uri)
    # The planted question is in the champion's held-out set; serving loads it meanwhile.
    champion = register_tiny_champion(settings, ((EVAL_QUESTION, "It sorts the keys."), *HELDOUT))

    # -- users' feedback, through the platform API (serving: the stand-in) -------------
    database = f"sqlite:///{tmp_path / 'platform.db'}"
    platform = settings.model_copy(
        update={
            "home": tmp_path / "platform",
            "database_url": database,
            # The stack's real serving answers with tiny random models, whose lengths (and
            # so the scripted users' thumbs) are a coin toss: the guardrail, which would
            # cut a challenger rated down 5 times in a row, has its own test.
            "ab_guardrail_min_answers": 1000,
        }
    )
    serving = ServingStub()
    with ExitStack() as phase:
        phase.callback(serving.stop)
        server = LiveServer(
            create_app(platform.model_copy(update={"serving_url": serving.url}), FAST_ARGON2)
        )
        server.start()
        phase.callback(server.stop)
        population = Population(f"{server.url}/api/v1", 3, max_words=5)
        population.enrol()
        serving.script(*replies(7))
        alice, bob, opted_out = population.users
        feedback = population.converse([*ASKED, PII], users=[alice])
        population.converse([*ASKED, EVAL_QUESTION], users=[bob], tally=feedback)
        population.converse(["What only the opted-out user asks"], users=[opted_out])
        population.opt_out(opted_out)
        assert feedback.regenerations == 6 and feedback.ratings == {"up": 6}

        http = phase.enter_context(httpx.Client(base_url=f"{server.url}/api/v1"))
        assert http.post("/auth/register", json=ADMIN).status_code == 201
        make_admin(database, ADMIN["email"])
        admin = login(http)
        export_key = api_key(http, admin, "feedback:export")
        review_key = api_key(http, admin, "models:review")
        for user in population.users:  # the traffic below is metered
            granted = http.post(
                f"/admin/users/{user.id}/credits",
                json={"amount": 1_000_000, "reason": "scripted users"},
                headers=admin,
            )
            assert granted.status_code == 201, granted.text
        monkeypatch.setenv("ORCHARD_FEEDBACK_API_KEY", export_key)
        conf = {"api_url": server.url, "min_pairs": 3, "max_user_share": 0.7}
        published = Path(settings.data_dir) / "feedback"
        before = set(published.glob("feedback-*"))  # other tests' sets on the same stack
        assert dagbag.get_dag("orchard_feedback").test(run_conf=conf).state == "success"

    (dataset,) = set(published.glob("feedback-*")) - before
    texts = (dataset / "preference" / "train.jsonl").read_text()
    counts = Manifest.read(dataset).counts
    # alice's three questions and bob's two: his evaluation question was removed.
    assert texts.count('"source": "regeneration"') == 5 == counts["pairs"]
    assert counts["decontamination.feedback_pairs.removed"] == 1 and EVAL_QUESTION not in texts
    assert "alice.smith@corp.io" not in texts and "about indent" in texts  # redacted, kept
    assert "opted-out user" not in texts and counts["users"] == 2

    # -- the challenger, post-trained from the champion on the feedback ----------------
    second = {"feedback": str(dataset), "dpo_steps": 2, "feedback_ratio": 0.5}
    assert dagbag.get_dag("orchard_posttrain").test(run_conf=second).state == "success"
    aliases = client.get_registered_model(name).aliases
    challenger = aliases["challenger"]
    assert aliases["champion"] == champion != challenger
    tags = client.get_model_version(name, challenger).tags
    assert tags["orchard.feedback.version"] == dataset.name.removeprefix("feedback-")
    assert tags["orchard.feedback.from_champion"] == f"{name}/{champion}"
    assert tags["orchard.feedback.feedback_pairs"] == "5"
    assert tags["orchard.feedback.dataset_users"] == "2"
    assert tags["orchard.model_step"] == "dpo"

    # -- the A/B split in production: the same platform against the stack's serving ---
    with ExitStack() as phase:
        phase.callback(population.close)
        server = LiveServer(create_app(platform, FAST_ARGON2))
        server.start()
        phase.callback(server.stop)
        population.http.base_url = f"{server.url}/api/v1"  # the same users, signed in
        http = phase.enter_context(httpx.Client(base_url=f"{server.url}/api/v1", timeout=60))
        admin = login(http)
        monkeypatch.setenv("ORCHARD_API_PORT", str(server.port))  # where the review calls
        monkeypatch.setenv("ORCHARD_AB_REVIEW_API_KEY", review_key)
        review_dag = dagbag.get_dag("orchard_ab_review")
        assert review_dag.test().state == "success"
        split = http.get("/admin/models/split", headers=admin).json()
        assert split["challenger_percent"] == 10  # the loop's challenger started its split
        assert "ab.split_started_at" in client.get_model_version(name, challenger).tags
        # An administrator widens it, so that a few scripted chats reach both sides.
        widened = http.put("/admin/models/split", json={"challenger_percent": 50}, headers=admin)
        assert widened.status_code == 200, widened.text

        for alias, version in (("champion", champion), ("challenger", challenger)):
            wait_serving(settings.serving_base_url, alias, version)
        # Short random answers, rated as the users like them: up to 2 words, else
        # regenerated once and rated down if still longer.
        population.max_tokens = 8
        traffic = Tally(max_words=2)
        sides = {f"{name}/{champion}": 0, f"{name}/{challenger}": 0}
        for i in range(40):
            if min(sides.values()) >= 3:
                break
            user = population.users[i % 2]
            population.converse([QUESTIONS[i % len(QUESTIONS)]], users=[user], tally=traffic)
            version = traffic.outcomes[-1][0]
            assert version in sides, f"answered by {version}, not the champion or challenger"
            sides[version] += 1
        assert min(sides.values()) >= 3, f"rated answers per model: {sides}"
        assert set(traffic.answers) == set(sides)  # regenerated ones too: each side its model

        assert review_dag.test().state == "success"
        version = client.get_model_version(name, challenger)
        review = json.loads(version.tags["ab.review"])
        assert version.tags["ab.verdict"] == review["verdict"] in VERDICTS
        for side, rated in (("champion", champion), ("challenger", challenger)):
            shown = review["sides"][side]
            assert shown["rated"] == sides[f"{name}/{rated}"]
            for metric in ("thumbs_up_rate", "ttft_ms", "latency_ms"):
                entry = shown[metric]
                assert entry["low"] <= entry["value"] <= entry["high"], (side, metric, entry)
        # The card, with the verdict and the feedback it learned from: an MLflow artifact
        # of the version, and what the admin models page shows.
        logged = Path(
            client.download_artifacts(version.run_id, "model_card/model_card.md", str(tmp_path))
        ).read_text()
        assert f"Verdict: **{review['verdict']}**" in logged
        assert tags["orchard.feedback.version"] in logged
        card = http.get(f"/admin/models/{challenger}/card", headers=admin).json()
        assert card["markdown"] == logged and card["review"]["verdict"] == review["verdict"]

        # -- the administrator promotes; new chats get the promoted version -------------
        promoted = http.post("/admin/models/promote", json={"version": challenger}, headers=admin)
        assert promoted.status_code == 200, promoted.text
        (entry,) = http.get(
            "/admin/audit", params={"action": "model.promote"}, headers=admin
        ).json()
        assert entry["target"] == f"{name}/{challenger}"
        wait_serving(settings.serving_base_url, "champion", challenger)
        after = population.converse(QUESTIONS[:2], users=[population.users[0]])
        assert set(after.answers) == {f"{name}/{challenger}"}
