"""The closed loop with a scripted population: does the challenger learn what users prefer?

    .venv/bin/python bench/loop.py --admin-email A --admin-password P \
        [--users 6] [--questions 6] [--max-words 12] [--max-tokens 48] [--dpo-steps 30]

Needs a running stack (`orchard up`) whose registry has a `champion` registered by
`orchard_posttrain` (its lineage names its model and chat data), and an administrator of
the platform API. Over real HTTP only (testkit/population.py), never the database:
1. `--users` scripted users ask `--questions` questions each on the `champion` alias;
   they prefer answers of at most `--max-words` words: a long answer is regenerated once
   and the answer they end with is rated up if short, down if not;
2. an administrator's API key of scope `feedback:export` is made (written where the DAG
   reads it, `<home>/secrets/feedback-export-key`), `orchard_feedback` is triggered, and
   its asset starts `orchard_posttrain` from the champion (dpo on the feedback): the
   bench waits for both and for the new `challenger`;
3. the same population asks again on `champion` and on `challenger` (measurement rounds).
Prints the preferred-property rate (answers of at most N words) of champion and
challenger, the feedback dataset's counts, and how many rated answers the A/B sequential
test needed to decide (`rated_answers_to_decide`: the hook orchard_ab_review fills in).
One run; never fails on the figures.
"""

from __future__ import annotations

import argparse
import os
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
from testkit.population import QUESTIONS, Population, Tally  # noqa: E402


def rated_answers_to_decide(champion: Tally, challenger: Tally) -> int | None:
    """How many rated answers the A/B sequential test needed before it decided, fed the
    two sides' outcomes in order (`Tally.outcomes`: version, variant, thumbs up).

    Hook for orchard_ab_review (issue 23 item 3, built beside this bench): it returns None
    until that module exists; then it should call the review's sequential test on these
    outcomes and return the sample count at its decision (None: no decision yet)."""
    try:
        from orchard import ab_review  # type: ignore[attr-defined]
    except ImportError:
        return None
    decide = getattr(ab_review, "rated_answers_to_decide", None)
    return decide(champion.outcomes, challenger.outcomes) if decide else None


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


def run_loop(args, settings) -> tuple[str, dict]:
    """Trigger orchard_feedback, follow it and the orchard_posttrain run its asset starts;
    the new challenger version and the feedback run's dataset counts."""
    started = datetime.now(UTC).isoformat()
    with AirflowClient.from_settings(settings) as airflow:
        for dag in ("orchard_feedback", "orchard_posttrain"):
            airflow.wait_for_dag(dag)
            airflow.unpause(dag)
        run = airflow.trigger(
            "orchard_feedback",
            {"min_pairs": args.min_pairs, "max_user_share": 1.0 / max(1, args.users - 1)},
        )
        state = airflow.wait_for_run("orchard_feedback", run, timeout=1800)
        if state != "success":
            raise SystemExit(f"orchard_feedback run {run} ended {state}: see its publish log")
        dataset = airflow.return_value("orchard_feedback", run, "publish")
        post = airflow.wait_for_new_run("orchard_posttrain", started, timeout=600)
        state = airflow.wait_for_run("orchard_posttrain", post, timeout=7200)
        if state != "success":
            raise SystemExit(f"orchard_posttrain run {post} ended {state}")
    version = aliases(settings.mlflow_uri, settings.model_name).get("challenger")
    return version, {"dataset": dataset}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-email", required=True)
    parser.add_argument("--admin-password", required=True)
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--questions", type=int, default=6)
    parser.add_argument("--max-words", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--min-pairs", type=int, default=8)
    parser.add_argument("--skip-loop", action="store_true", help="Only measure both aliases.")
    args = parser.parse_args()
    settings = load_settings()
    api = settings.api_url
    questions = QUESTIONS[: args.questions]
    with Population(
        f"{api}/api/v1", args.users, max_words=args.max_words, max_tokens=args.max_tokens
    ) as population:
        population.enrol()
        grant_credits(api, args.admin_email, args.admin_password, population)
        if not args.skip_loop:
            t0 = time.monotonic()
            rated = population.converse(questions, model_alias="champion")
            print(
                f"feedback round on champion: {sum(rated.answers.values())} answers, "
                f"{rated.regenerations} regenerated, ratings {dict(rated.ratings)}"
            )
            admin_key(api, args.admin_email, args.admin_password, Path(settings.home))
            version, info = run_loop(args, settings)
            print(f"loop: challenger version {version} in {time.monotonic() - t0:.0f} s; {info}")
        champion = population.converse(questions, model_alias="champion")
        challenger = population.converse(questions, model_alias="challenger")
    print(f"preferred property: answers of at most {args.max_words} words")
    for name, tally in (("champion", champion), ("challenger", challenger)):
        versions = ", ".join(sorted(tally.answers))
        print(f"  {name:10s} {tally.rate_of():6.1%} of {sum(tally.answers.values())} ({versions})")
    needed = rated_answers_to_decide(champion, challenger)
    print(
        "sequential test: "
        + (f"decided after {needed} rated answers" if needed else "not wired (orchard_ab_review)")
    )


if __name__ == "__main__":
    main()
