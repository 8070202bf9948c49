"""The `orchard_ab_review` DAG's work, outside the DAG file: it talks to the platform API
over HTTP (an administrator's API key with the `models:review` scope, never platform
code) and to MLflow.

One review:
1. `POST /admin/models/split/loop`: a challenger the feedback loop registered starts its
   split (once per version);
2. `GET /admin/models/split/stats?since=<the split's start>`: per side counts;
3. `orchard.ab_stats.review`: intervals, the mSPRT and the verdict;
4. the review is stored on the challenger version (tags `ab.review` as JSON and
   `ab.verdict`) and its model card is regenerated and logged as an MLflow artifact.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx

from orchard.ab_stats import SideCounts, review
from orchard.errors import OrchardError
from orchard.model_card import AIRFLOW_RUN_TAG, REVIEW_TAG, card_for_version, log_card

VERDICT_TAG = "ab.verdict"
STARTED_TAG = "ab.split_started_at"
DAG_ID = "orchard_ab_review"


class ReviewError(OrchardError):
    """The review cannot run; the message says what to fix."""


def _rounded(value: Any) -> Any:
    """4 significant figures for floats, so the review fits an MLflow tag."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {key: _rounded(v) for key, v in value.items()}
    return value


class PlatformClient:
    def __init__(self, api_url: str, api_key: str | None, timeout: float = 30.0) -> None:
        if not api_key:
            raise ReviewError(
                "the A/B review needs an administrator's API key with the models:review "
                "scope: create one on the account page and set ORCHARD_AB_REVIEW_API_KEY"
            )
        self.http = httpx.Client(
            base_url=f"{api_url.rstrip('/')}/api/v1",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
        )

    def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ReviewError(
                f"the platform API at {self.http.base_url} does not answer "
                f"({type(error).__name__}): start it or fix ORCHARD_API_PORT"
            ) from None
        if response.status_code in (401, 403):
            raise ReviewError(
                f"the platform API refused the review's API key ({response.status_code}: "
                f"{response.text[:200]}): it must be an administrator's, with models:review"
            )
        return response

    def start_loop_split(self) -> dict | None:
        """The answer of `POST /admin/models/split/loop`, or None without a challenger."""
        response = self._call("POST", "/admin/models/split/loop")
        if response.status_code == 409:
            return None
        response.raise_for_status()
        return response.json()

    def stats(self, since: str | None) -> dict:
        response = self._call(
            "GET", "/admin/models/split/stats", params={"since": since} if since else {}
        )
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        self.http.close()


def _side(stats: dict, variant: str) -> SideCounts:
    side = next(s for s in stats["sides"] if s["variant"] == variant)
    return SideCounts(**{k: v for k, v in side.items() if k != "variant"})


def run_review(
    *,
    api_url: str,
    api_key: str | None,
    tracking_uri: str,
    model_name: str,
    alpha: float = 0.05,
    tau: float = 0.1,
    min_rated: int = 20,
    airflow_run_id: str | None = None,
    mlflow_url: str | None = None,
    airflow_url: str | None = None,
) -> dict:
    """Review the running split once; returns a summary (verdict, versions, card URI)."""
    from mlflow import MlflowClient

    from orchard.registry import aliases

    platform = PlatformClient(api_url, api_key)
    try:
        loop = platform.start_loop_split()
        challenger = aliases(tracking_uri, model_name).get("challenger")
        if loop is None or challenger is None:
            return {"verdict": None, "reason": "no challenger is being served"}
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        tags = client.get_model_version(model_name, challenger).tags
        since = tags.get(STARTED_TAG)
        stats = platform.stats(since)
    finally:
        platform.close()
    result = review(
        _side(stats, "champion"),
        _side(stats, "challenger"),
        alpha=alpha,
        tau=tau,
        min_rated=min_rated,
    )
    result = _rounded(result)
    result |= {
        "version": challenger,
        "champion_version": aliases(tracking_uri, model_name).get("champion"),
        "since": since,
        "share_percent": stats["split"]["challenger_percent"],
        "reviewed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    client.set_model_version_tag(model_name, challenger, REVIEW_TAG, json.dumps(result))
    client.set_model_version_tag(model_name, challenger, VERDICT_TAG, result["verdict"])
    if airflow_run_id:
        client.set_model_version_tag(
            model_name, challenger, f"{AIRFLOW_RUN_TAG}{DAG_ID}", airflow_run_id
        )
    card = card_for_version(
        tracking_uri, model_name, challenger, mlflow_url=mlflow_url, airflow_url=airflow_url
    )
    uri = log_card(tracking_uri, model_name, challenger, card)
    return {
        "verdict": result["verdict"],
        "reason": result["reason"],
        "version": challenger,
        "card": uri,
        "loop": loop,
    }


def rated_answers_to_decide(
    champion: list[tuple], challenger: list[tuple], *, alpha: float = 0.05, tau: float = 0.1
) -> int | None:
    """How many rated answers (both sides) the thumbs-up mSPRT needed to decide, fed the
    two sides' ratings in order; None when it has not decided. Each outcome's last item is
    True for a thumbs up (bench/loop.py's `Tally.outcomes`: version, variant, up). The
    sides are interleaved at their relative rates, as a split would deliver them."""
    from orchard.ab_stats import msprt

    if not champion or not challenger:
        return None
    counts = {"champion": [0, 0], "challenger": [0, 0]}  # [thumbs up, rated]
    sides = {"champion": champion, "challenger": challenger}
    for total in range(1, len(champion) + len(challenger) + 1):
        # The side that has delivered the smaller share of its ratings goes next.
        side = min(sides, key=lambda s: (counts[s][1] + 1) / len(sides[s]))
        counts[side][0] += bool(sides[side][counts[side][1]][-1])
        counts[side][1] += 1
        result = msprt(tuple(counts["champion"]), tuple(counts["challenger"]), alpha=alpha, tau=tau)
        if result.decided:
            return total
    return None
