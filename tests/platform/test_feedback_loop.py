"""The feedback loop's first half through the real platform API: a scripted population
(testkit/population.py, HTTP only) chats, regenerates long answers and rates; the
`orchard_feedback` export client fetches the export with an administrator's
`feedback:export` key; the feedback step builds the preference set. The user who opted
out, the e-mail address a user typed and the planted evaluation question are not in it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchard.feedback import fetch_export
from ray_jobs import feedback
from testkit.population import Population
from testkit.serving_stub import Reply
from tests.unit.test_feedback_dataset import EVAL_QUESTION, UntrackedSettings, chat_data


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


QUESTIONS = ["How do I pretty-print JSON?", "How do I sort keys?"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_scripted_users_feedback_becomes_a_clean_preference_set(api, serving, tmp_path):
    root = api.admin()
    with Population(f"{api.root}/api/v1", 4, max_words=5) as population:
        population.enrol()
        for user in population.users:
            granted = api.http.post(
                f"/admin/users/{user.id}/credits",
                json={"amount": 1_000_000, "reason": "scripted users"},
                headers=root.headers,
            )
            assert granted.status_code == 201, granted.text
        serving.script(*replies(9))
        tally = population.converse(QUESTIONS, users=population.users[:3])
        alice = population.users[0]
        tally = population.converse(
            ["Write to me at alice.smith@corp.io about indent"], users=[alice], tally=tally
        )
        population.converse([EVAL_QUESTION], users=[population.users[1]], tally=tally)
        opted_out = population.users[3]
        population.converse(["What only the opted-out user asks"], users=[opted_out])
        population.opt_out(opted_out)
    assert tally.regenerations == 8 and tally.ratings == {"up": 8}
    assert tally.rate_of() == 0.5  # half the answers were short

    key = api.http.post(
        "/api-keys", json={"name": "dag", "scopes": ["feedback:export"]}, headers=root.headers
    ).json()["key"]
    exported = fetch_export(api.root, key, tmp_path / "exports")
    assert exported.opted_out_accounts == 1 and exported.records == 16  # 8 up + 8 regenerated
    settings = UntrackedSettings(home=tmp_path / "home", data_root=str(tmp_path / "data"))
    config = feedback.FeedbackConfig(
        export=str(exported.path), export_sha256=exported.sha256, min_pairs=4, max_user_share=0.6
    )
    done = feedback.run(config, [chat_data(tmp_path / "data")], settings)

    text = (Path(done.path) / "preference" / "train.jsonl").read_text()
    pairs = [json.loads(line) for line in text.splitlines()]
    assert "opted-out" not in text and "alice.smith@corp.io" not in text
    assert EVAL_QUESTION not in text and done.counts["decontamination.feedback_pairs.removed"] == 1
    assert all(p["chosen"][0]["content"].startswith("Short ") for p in pairs)
    assert all(p["strength"] == "strong" for p in pairs)  # the short answer was rated up
    assert len(pairs) == 7 and done.counts["users"] == 3
