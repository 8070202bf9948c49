"""
### orchard_ab_review

The closed loop's evidence: is the challenger better than the champion in production?
Runs every hour, and whenever a new chat model is registered (the `orchard_chat_model`
asset), so a challenger from the feedback loop starts its A/B split at once.

**review** talks to the platform API over HTTP with an administrator's API key that has
the `models:review` scope (setting `ORCHARD_AB_REVIEW_API_KEY`; without it the run is
skipped, saying so). It starts the split of a challenger the loop registered (version tag
`orchard.feedback.version`, at `ORCHARD_AB_LOOP_SHARE_PERCENT`, default 10 %), reads the
answers of each side since the split started, and computes per side the thumbs-up,
regeneration, abandonment and error rates with Wilson intervals, latency and credits per
answer with normal intervals, and an always-valid sequential test (mSPRT) per rate. Its
verdict, `promote`, `keep testing` or `roll back`, is stored on the challenger version
(tags `ab.verdict`, `ab.review`) and in its model card, logged to MLflow as `model_card/`
and shown on the admin models page, where an administrator promotes or rolls back.
docs/ab-review.md explains the test.
"""

from __future__ import annotations

from airflow.sdk import Asset, Param, dag, task
from airflow.timetables.assets import AssetOrTimeSchedule
from airflow.timetables.trigger import CronTriggerTimetable

from orchard.dag_inputs import DAG_DEFAULTS

CHAT_MODEL = Asset("orchard_chat_model")


@dag(
    dag_id="orchard_ab_review",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("@hourly", timezone="UTC"), assets=CHAT_MODEL
    ),
    doc_md=__doc__,
    tags=["orchard", "model", "feedback-loop"],
    **DAG_DEFAULTS,
    params={
        "alpha": Param(
            0.05,
            type="number",
            exclusiveMinimum=0,
            maximum=0.2,
            title="α",
            description="The sequential test's false-alarm rate per rate compared, however "
            "often the review looks.",
        ),
        "tau": Param(
            0.1,
            type="number",
            exclusiveMinimum=0,
            maximum=1,
            title="Expected effect (τ)",
            description="The mSPRT's mixing scale: the size of difference in a rate (0.1: "
            "ten points) the test is most sensitive to.",
        ),
        "min_rated": Param(
            20,
            type="integer",
            minimum=1,
            maximum=100000,
            title="Rated answers before promoting",
            description="Each side needs this many rated answers before the verdict may be "
            "promote (roll back needs no minimum).",
        ),
    },
)
def orchard_ab_review():
    @task
    def review(params: dict | None = None, **context) -> dict:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from orchard.ab_review import ReviewError, run_review
        from orchard.settings import load_settings

        settings = load_settings()
        key = settings.ab_review_api_key
        if key is None:
            raise AirflowSkipException(
                "no review: set ORCHARD_AB_REVIEW_API_KEY to an administrator's API key "
                "with the models:review scope"
            )
        try:
            summary = run_review(
                api_url=settings.api_url,
                api_key=key.get_secret_value(),
                tracking_uri=settings.mlflow_uri,
                model_name=settings.model_name,
                alpha=params["alpha"],
                tau=params["tau"],
                min_rated=params["min_rated"],
                airflow_run_id=context["run_id"],
                mlflow_url=settings.mlflow_uri,
                airflow_url=settings.airflow_base_url,
            )
        except ReviewError as error:
            raise AirflowFailException(str(error)) from None
        print(f"A/B review: {summary}")
        return summary

    review()


orchard_ab_review()
