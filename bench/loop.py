"""The closed loop with a scripted population: does the challenger learn what users prefer?

    .venv/bin/python bench/loop.py --admin-email A --admin-password P [--tiny-champion] \
        [--method kto|dpo] [--users 6] [--questions 12] [--max-words N] [--max-tokens 16] \
        [--posttrain JSON]

Needs a running stack (`orchard up`) whose registry has a `champion` registered by
`orchard_posttrain` (its lineage names its model and chat data), or `--tiny-champion` to
register a tiny random chat model as champion first (testkit/loop_champion.py: the loop's
wiring, not a model that can learn much), and an administrator of the platform API.
Over real HTTP only (testkit/population.py), never the database:
1. `--users` scripted users each ask `--questions` questions on the `champion` alias, in
   words of their own ("User 3 asks: ..."), so that every user's answers differ; they
   prefer answers of at most `--max-words` words (default: the champion's median answer
   length to these questions, asked of serving directly before the round, so that about
   half its answers have the property): a long answer is regenerated once and the answer
   they end with is rated up if short, down if not;
2. an administrator's API key of scope `feedback:export` is made (written where the DAG
   reads it, `<home>/secrets/feedback-export-key`), `orchard_feedback` is triggered with
   `--method` (default kto: every thumb is training data, not only the regenerations that
   make a pair; dpo needs `--min-pairs` pairs), and its asset starts
   `orchard_posttrain` from the champion (that method, the DAG's default Params): the
   bench waits for both, for the new `challenger`, and for serving to serve it. With
   `--posttrain '{"kto_steps": 200, ...}'` a second orchard_posttrain run on the same set,
   triggered by hand with those Params once the asset's is done, makes the challenger;
3. the same users ask the same questions again in other words ("Later, user 3 asks:
   ..."), on `champion` and on `challenger` (measurement rounds: prompts it was not
   trained on).
Prints the preferred-property rate (answers of at most N words) of champion and
challenger, the feedback dataset's counts, and how many rated answers the A/B sequential
test needed to decide (`rated_answers_to_decide`: orchard_ab_review's thumbs-up mSPRT fed
the measurement rounds' ratings). One run; never fails on the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import httpx  # noqa: E402

from orchard.airflow_client import AirflowClient  # noqa: E402
from orchard.feedback import KEY_SECRET  # noqa: E402
from orchard.registry import aliases  # noqa: E402
from orchard.settings import load_settings  # noqa: E402
from orchard.steps import Manifest  # noqa: E402
from testkit.loop_champion import register_tiny_champion  # noqa: E402
from testkit.population import QUESTIONS, Population, Tally, words  # noqa: E402
from testkit.stack import wait_alias, wait_champion  # noqa: E402

FEEDBACK_WORDING = "User {user} asks: {question}"
MEASURE_WORDING = "Later, user {user} asks: {question}"


def rated_answers_to_decide(champion: Tally, challenger: Tally) -> int | None:
    """How many rated answers orchard_ab_review's sequential test (the thumbs-up mSPRT)
    needed before it decided, fed the two sides' ratings in order (None: undecided)."""
    from orchard.ab_review import rated_answers_to_decide as decide

    return decide(champion.outcomes, challenger.outcomes)


def asked(wording: str, user: int, questions: tuple[str, ...]) -> list[str]:
    return [wording.format(user=user, question=q) for q in questions]


def champion_lengths(serving: str, prompts: list[str], max_tokens: int) -> list[int]:
    """Words of the champion's answer to each prompt, asked of serving directly (no
    platform, so no feedback is recorded)."""
    lengths = []
    with httpx.Client(base_url=serving, timeout=120) as http:
        for prompt in prompts:
            answer = http.post(
                "/v1/chat/completions",
                json={
                    "model": "champion",
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": max_tokens,
                },
            )
            answer.raise_for_status()
            lengths.append(words(answer.json()["choices"][0]["message"]["content"]))
    return lengths


def admin_key(api: str, email: str, password: str, home: Path) -> None:
    with httpx.Client(base_url=f"{api}/api/v1", timeout=60) as http:
        login = http.post("/auth/login", json={"email": email, "password": password})
        login.raise_for_status()
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        made = http.post(
            "/api-keys",
            json={"name": "bench-loop", "scopes": ["feedback:export"]},
            headers=headers,
        )
        made.raise_for_status()
    secret = home / "secrets" / KEY_SECRET
    secret.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret.write_text(made.json()["key"])
    secret.chmod(0o600)


def grant_credits(api: str, email: str, password: str, population: Population) -> None:
    with httpx.Client(base_url=f"{api}/api/v1", timeout=60) as http:
        token = http.post("/auth/login", json={"email": email, "password": password}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        for user in population.users:
            http.post(
                f"/admin/users/{user.id}/credits",
                json={"amount": 10_000_000, "reason": "bench/loop.py scripted users"},
                headers=headers,
            ).raise_for_status()


def run_loop(args, settings) -> tuple[str, str]:
    """Trigger orchard_feedback, follow it and the orchard_posttrain run its asset starts;
    the new challenger version and the feedback dataset's directory."""
    started = datetime.now(UTC).isoformat()
    with AirflowClient.from_settings(settings) as airflow:
        for dag in ("orchard_feedback", "orchard_posttrain"):
            airflow.wait_for_dag(dag)
            airflow.unpause(dag)
        conf = {
            "method": args.method,
            "min_pairs": args.min_pairs,
            "min_rows": args.min_rows,
            "max_user_share": min(1.0, 2.0 / args.users),  # twice an even share
        }
        run = airflow.trigger("orchard_feedback", conf)
        state = airflow.wait_for_run("orchard_feedback", run, timeout=1800)
        if state != "success":
            raise SystemExit(f"orchard_feedback run {run} ended {state}: see its publish log")
        dataset = airflow.return_value("orchard_feedback", run, "publish")
        post = airflow.wait_for_new_run("orchard_posttrain", started, timeout=600)
        state = airflow.wait_for_run("orchard_posttrain", post, timeout=7200)
        if state != "success":
            raise SystemExit(f"orchard_posttrain run {post} ended {state}")
        if args.posttrain:  # a second run, by hand, with the bench's Params
            conf = {"feedback": dataset, "feedback_method": args.method, **args.posttrain}
            post = airflow.trigger("orchard_posttrain", conf)
            state = airflow.wait_for_run("orchard_posttrain", post, timeout=7200)
            if state != "success":
                raise SystemExit(f"orchard_posttrain run {post} ({conf}) ended {state}")
    return aliases(settings.mlflow_uri, settings.model_name)["challenger"], dataset


def measure(population: Population, alias: str, questions: tuple[str, ...]) -> Tally:
    tally = Tally(population.max_words)
    for i, user in enumerate(population.users):
        prompts = asked(MEASURE_WORDING, i, questions)
        population.converse(prompts, model_alias=alias, users=[user], tally=tally)
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-email", required=True)
    parser.add_argument("--admin-password", required=True)
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--questions", type=int, default=len(QUESTIONS))
    parser.add_argument(
        "--max-words", type=int, default=None, help="Default: the champion's median."
    )
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--method", choices=["kto", "dpo"], default="kto")
    parser.add_argument("--min-pairs", type=int, default=8)
    parser.add_argument("--min-rows", type=int, default=16)
    parser.add_argument(
        "--posttrain",
        type=json.loads,
        default=None,
        help="Params (JSON) of a second orchard_posttrain run on the same feedback set, "
        "triggered by hand once the asset's run is done; its challenger is measured (e.g. "
        '\'{"kto_steps": 200, "kto_lr": 1e-3}\' for a tiny model).',
    )
    parser.add_argument("--skip-loop", action="store_true", help="Only measure both aliases.")
    parser.add_argument(
        "--tiny-champion",
        action="store_true",
        help="Register a tiny random chat model as champion first (a fresh stack has none).",
    )
    args = parser.parse_args()
    settings = load_settings()
    api = settings.api_url
    if args.tiny_champion:
        version = register_tiny_champion(settings)
        served = wait_champion(settings.serving_base_url, timeout=300)
        print(f"tiny champion: version {version} registered, serving {served}")
    questions = QUESTIONS[: args.questions]
    if args.max_words is None:
        prompts = [p for i in range(args.users) for p in asked(FEEDBACK_WORDING, i, questions)]
        lengths = champion_lengths(settings.serving_base_url, prompts, args.max_tokens)
        args.max_words = int(statistics.median(lengths))
        print(
            f"champion's answers to the feedback prompts: {min(lengths)}-{max(lengths)} words, "
            f"median {args.max_words}: the users prefer at most {args.max_words}"
        )
    with Population(
        f"{api}/api/v1", args.users, max_words=args.max_words, max_tokens=args.max_tokens
    ) as population:
        population.enrol()
        grant_credits(api, args.admin_email, args.admin_password, population)
        if not args.skip_loop:
            t0 = time.monotonic()
            rated = Tally(args.max_words)
            for i, user in enumerate(population.users):
                prompts = asked(FEEDBACK_WORDING, i, questions)
                population.converse(prompts, model_alias="champion", users=[user], tally=rated)
            print(
                f"feedback round on champion: {sum(rated.answers.values())} answers, "
                f"{rated.regenerations} regenerated, ratings {dict(rated.ratings)}"
            )
            admin_key(api, args.admin_email, args.admin_password, Path(settings.home))
            version, dataset = run_loop(args, settings)
            counts = Manifest.read(dataset).counts
            shown = ("records", "pairs", "unpaired", "labelled_answers", "users")
            print(f"feedback dataset {dataset}: { ({k: counts.get(k) for k in shown}) }")
            wait_alias(settings.serving_base_url, "challenger", version)
            print(f"loop: challenger version {version} serving after {time.monotonic() - t0:.0f} s")
        champion = measure(population, "champion", questions)
        challenger = measure(population, "challenger", questions)
    print(f"preferred property: answers of at most {args.max_words} words")
    for name, tally in (("champion", champion), ("challenger", challenger)):
        versions = ", ".join(sorted(tally.answers))
        print(f"  {name:10s} {tally.rate_of():6.1%} of {sum(tally.answers.values())} ({versions})")
        ups = tally.ratings.get("up", 0)
        print(f"  {'':10s} thumbs up on {ups} of {len(tally.outcomes)} rated answers")
    needed = rated_answers_to_decide(champion, challenger)
    rated = len(champion.outcomes) + len(challenger.outcomes)
    print(
        "sequential test (thumbs-up mSPRT, alpha 0.05): "
        + (f"decided after {needed} rated answers" if needed else f"undecided after {rated}")
    )


if __name__ == "__main__":
    main()
