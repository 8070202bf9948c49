"""The feedback loop on the stack, DAG by DAG in-process (each step a Ray job): a champion
from orchard_posttrain; scripted users (HTTP only) chat, regenerate long answers and rate
on the platform API; orchard_feedback exports with an administrator's feedback:export key
and publishes the preference set; orchard_posttrain from that set trains the champion with
DPO and registers a challenger whose lineage names the feedback version, the champion and
the row counts. Serving is the platform tests' stand-in: what is under test is the loop's
wiring, not the model's answers (bench/loop.py measures those)."""

from __future__ import annotations

from pathlib import Path

import pytest

from platform_api.app import create_app
from platform_api.manage import make_admin
from testkit.platform import FAST_ARGON2, LiveServer
from testkit.population import Population
from testkit.serving_stub import Reply, ServingStub

NAME = "orchard-chat-loop-test"


@pytest.fixture(scope="module")
def airflow_db():
    from airflow.utils import db

    db.initdb()


def replies(turns: int) -> list[Reply]:
    return [
        reply
        for i in range(turns)
        for reply in (
            Reply(pieces=[f"Answer {i} goes on and on ", "with far more words than wanted."]),
            Reply(pieces=[f"Short {i}."]),
        )
    ]


@pytest.mark.slow
@pytest.mark.integration
def test_users_feedback_becomes_a_challenger_with_lineage(
    dagbag, airflow_db, stack, monkeypatch, tmp_path
):
    import httpx
    from mlflow import MlflowClient

    from orchard.settings import Settings
    from tests.chat_corpus import tiny_base

    monkeypatch.setenv("ORCHARD_MODEL_NAME", NAME)
    settings = stack.settings()
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    base = tiny_base(Path(settings.data_dir))
    first = {"pretrained": base.path, "stages": ["sft"], "sft_steps": 2}
    assert dagbag.get_dag("orchard_posttrain").test(run_conf=first).state == "success"

    serving = ServingStub()
    database = f"sqlite:///{tmp_path / 'platform.db'}"
    platform = Settings(home=tmp_path / "platform", database_url=database, serving_url=serving.url)
    server = LiveServer(create_app(platform, FAST_ARGON2))
    server.start()
    try:
        with Population(f"{server.url}/api/v1", 3, max_words=5) as population:
            population.enrol()
            serving.script(*replies(8))
            population.converse(["How do I pretty-print JSON?", "How do I sort keys?"])
            opted_out = population.users[2]
            population.opt_out(opted_out)
        with httpx.Client(base_url=f"{server.url}/api/v1") as http:
            admin = {"email": "root@example.org", "password": "correct horse battery"}
            assert http.post("/auth/register", json=admin).status_code == 201
            make_admin(database, admin["email"])
            token = http.post("/auth/login", json=admin).json()["access_token"]
            key = http.post(
                "/api-keys",
                json={"name": "orchard_feedback", "scopes": ["feedback:export"]},
                headers={"Authorization": f"Bearer {token}"},
            ).json()["key"]
        monkeypatch.setenv("ORCHARD_FEEDBACK_API_KEY", key)
        conf = {"api_url": server.url, "min_pairs": 3, "max_user_share": 0.5}
        assert dagbag.get_dag("orchard_feedback").test(run_conf=conf).state == "success"
    finally:
        server.stop()
        serving.stop()

    (dataset,) = (Path(settings.data_dir) / "feedback").glob("feedback-*")
    texts = (dataset / "preference" / "train.jsonl").read_text()
    assert texts.count('"source": "regeneration"') == 4  # two users × two questions
    assert opted_out.email not in texts
    second = {"feedback": str(dataset), "dpo_steps": 2, "feedback_ratio": 0.5}
    assert dagbag.get_dag("orchard_posttrain").test(run_conf=second).state == "success"

    client = MlflowClient(tracking_uri=settings.mlflow_uri, registry_uri=settings.mlflow_uri)
    model = client.get_registered_model(NAME)
    champion, challenger = model.aliases["champion"], model.aliases["challenger"]
    assert champion != challenger
    tags = client.get_model_version(NAME, challenger).tags
    assert tags["orchard.feedback.version"] == dataset.name.removeprefix("feedback-")
    assert tags["orchard.feedback.from_champion"] == f"{NAME}/{champion}"
    assert tags["orchard.feedback.feedback_pairs"] == "4"
    assert tags["orchard.feedback.dataset_users"] == "2"
    assert tags["orchard.model_step"] == "dpo"
