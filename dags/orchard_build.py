"""
### orchard_build

Raw web pages in, a registered chat model out: the whole pipeline from one trigger.

The stages are DAGs of their own, wired by Airflow Assets (see the Assets view for the
lineage): `orchard_data` (crawl → curate → validate → mix) publishes
`orchard_curated_corpus`, which starts `orchard_tokenizer`, whose
`orchard_tokenized_corpus` starts `orchard_pretrain`, whose `pretrained_model` starts
`orchard_posttrain` (chat data → SFT → reward model → DPO → GRPO → evaluate → register),
which publishes `orchard_chat_model`. This DAG unpauses the chain, triggers its head with
the `data` Params and follows each stage's run, one task per stage, so its graph shows
where a build stands and its last task prints the MLflow link to the new version.

Every step inside is skipped when its output exists: re-triggering a finished build
does no work twice (each stage's run takes seconds).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task


@dag(
    dag_id="orchard_build",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["orchard", "pipeline"],
    # A stage failing is reported by its own DAG's retries; following it again is cheap.
    default_args={"retries": 1, "retry_delay": timedelta(seconds=10)},
    params={
        "data": Param(
            {},
            type="object",
            title="orchard_data Params",
            description='Params for the data stage, e.g. {"seeds": ["https://example.org/"], '
            '"max_pages": 500}. Empty: its defaults (the demo website).',
        ),
    },
)
def orchard_build():
    @task
    def data(params: dict | None = None, **context) -> dict:
        """Unpause the chain, trigger its head, follow it; when the followers may start."""
        from datetime import UTC, datetime

        from orchard.airflow_client import AirflowClient
        from orchard.pipeline import follow, run_url, unpause_chain
        from orchard.settings import load_settings

        settings = load_settings()
        started = datetime.now(UTC).isoformat()
        with AirflowClient.from_settings(settings) as client:
            unpause_chain(client, [settings.pipeline_head, *settings.pipeline_followers])
            run_id = client.trigger(settings.pipeline_head, params["data"])
            print(f"following {run_url(settings, settings.pipeline_head, run_id)}")
            follow(settings, client, settings.pipeline_head, run_id)
        return {"started": started, settings.pipeline_head: run_id}

    def stage(dag_id: str):
        @task(task_id=dag_id.removeprefix("orchard_"))
        def follow_stage(runs: dict, **context) -> dict:
            """Follow the run of `dag_id` that its upstream asset started in this build."""
            from orchard.airflow_client import AirflowClient
            from orchard.pipeline import follow, run_url
            from orchard.settings import load_settings

            settings = load_settings()
            with AirflowClient.from_settings(settings) as client:
                run_id = client.wait_for_new_run(dag_id, after=runs["started"])
                print(f"following {run_url(settings, dag_id, run_id)}")
                follow(settings, client, dag_id, run_id)
            return {**runs, dag_id: run_id}

        return follow_stage

    @task
    def registered(runs: dict, **context) -> str:
        """The new model version: its MLflow link (the posttrain run's register result)."""
        from orchard.airflow_client import AirflowClient
        from orchard.settings import load_settings

        settings = load_settings()
        last = settings.pipeline_followers[-1]
        with AirflowClient.from_settings(settings) as client:
            url = client.return_value(last, runs[last], "register")
        print(f"registered: {url}")
        return url

    from orchard.settings import load_settings

    runs = data()
    for dag_id in load_settings().pipeline_followers:
        runs = stage(dag_id)(runs)
    registered(runs)


orchard_build()
