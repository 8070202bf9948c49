"""The model card built from a version's registry tags: 3 significant figures against the
champion's, lineage as MLflow and Airflow links (never a local path), the A/B review
with its intervals and verdict."""

from __future__ import annotations

import json

from orchard.ab_stats import SideCounts, review
from orchard.model_card import build_card, sig3

TAGS = {
    "orchard.model_step": "dpo",
    "orchard.lineage.curate": "/home/x/.orchard/data/curate/web-1a2b/",
    "orchard.lineage.curate.mlflow_run": "abcdef0123456789",
    "orchard.lineage.dpo": "/home/x/.orchard/data/dpo/chat-9f9f",
    "orchard.airflow_run.orchard_posttrain": "manual__2026-12-07",
    "eval.lm_eval/docs_qa/exact": "0.123456",
    "eval.lm_eval/docs_qa/examples": "40",
    "eval.lm_eval/heldout/perplexity": "1234.5678",
    "orchard.decontamination.sft": "3 of 1000 removed",
    "loop.feedback_dataset": "feedback-v2",
}
RUNS = {"abcdef0123456789": {"experiment_id": "4", "metrics": {"count.documents": 1500.0}}}


def _card(**kwargs):
    return build_card(
        "7",
        ["challenger"],
        TAGS,
        {"eval.lm_eval/docs_qa/exact": "0.1"},
        RUNS,
        mlflow_url=kwargs.get("mlflow_url", "http://mlflow.example:5000/"),
        airflow_url="http://airflow.example:8080",
    )


def test_metrics_have_three_significant_figures_against_the_champion():
    assert sig3("1234.5678") == "1230" and sig3(0.000123456) == "0.000123"
    assert sig3(12345678) == "1.23e+07" and sig3("n/a") == "n/a"
    assert _card()["metrics"] == [
        {"name": "docs_qa/exact", "value": "0.123", "champion": "0.1"},
        {"name": "heldout/perplexity", "value": "1230", "champion": None},
    ]


def test_lineage_is_links_to_mlflow_and_airflow_runs_not_local_paths():
    card = _card()
    runs = {r["step"]: r for r in card["runs"]}
    assert runs["curate"]["manifest"] == "web-1a2b"
    assert runs["curate"]["mlflow"] == {
        "label": "run abcdef01",
        "url": "http://mlflow.example:5000/#/experiments/4/runs/abcdef0123456789",
    }
    assert runs["curate"]["airflow"]["url"] == "http://airflow.example:8080/dags/orchard_data/runs"
    assert runs["dpo"]["airflow"]["url"] == (
        "http://airflow.example:8080/dags/orchard_posttrain/runs/manual__2026-12-07"
    )
    assert "/home/x" not in card["markdown"]
    assert card["data"] == {"curate": "documents 1.5k"}
    assert card["feedback_datasets"] == ["feedback-v2"]
    loop = {**TAGS, "orchard.feedback.version": "fb-77", "orchard.feedback.dataset_users": "9"}
    found = build_card("7", [], loop, None, RUNS, mlflow_url=None, airflow_url=None)
    assert found["feedback_datasets"] == ["fb-77 (users 9)", "feedback-v2"]
    # MLflow on a local file or database: the run is named, not linked.
    local = {r["step"]: r for r in _card(mlflow_url="sqlite:///m.db")["runs"]}
    assert local["curate"]["mlflow"] == {"label": "run abcdef01", "url": None}


def test_the_card_shows_the_ab_review_with_intervals_and_verdict():
    side = dict(regenerated=0, stopped=0, failed=0, latency_ms_mean=900.0, latency_ms_mean_sq=9e5)
    result = review(
        SideCounts(answers=900, rated=600, thumbs_up=300, thumbs_down=300, **side),
        SideCounts(answers=100, rated=70, thumbs_up=60, thumbs_down=10, **side),
    )
    card = build_card(
        "7",
        [],
        {**TAGS, "ab.review": json.dumps(result)},
        None,
        RUNS,
        mlflow_url=None,
        airflow_url=None,
    )
    assert card["review"]["verdict"] == "promote"
    assert "Verdict: **promote**" in card["markdown"]
    assert "| thumbs_up_rate | 50 % [46, 54] | 85.7 % [75.7, 92.1] |" in card["markdown"]
