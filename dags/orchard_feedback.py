"""
### orchard_feedback

Users' feedback becomes a versioned preference dataset. Runs daily, or trigger it by hand.

1. **export** fetches the platform's feedback export over HTTP
   (`GET /api/v1/admin/feedback/export`) with an administrator's API key of scope
   `feedback:export` (`ORCHARD_FEEDBACK_API_KEY`, or `<home>/secrets/feedback-export-key`):
   thumbs up/down with comments, regenerations (the replaced answer a weak "rejected"),
   edited questions, each with its model version and A/B side. Users who turned off "use
   my feedback to improve the model" are not in it. The DAG never reads the platform's
   database nor imports its code.
2. **evaluation_tasks** picks what the set is decontaminated against: the chat data behind
   the registry's `champion` (its held-out evaluation tasks), else the newest chat data.
3. **publish** runs the `feedback` step (`ray_jobs/feedback.py`): PII redacted with curate's
   rules, duplicates dropped, rows sharing a 13-gram with an evaluation text removed, then
   the Great Expectations gate: too few pairs (`enough_pairs`; with the *method* Param kto,
   too few labelled answers, `enough_rows`: thumbs alone count, pairs unfold), too one-sided
   (`not_one_sided`) or too much from one user (`no_dominant_user`) fails the run with a
   report naming the rule (and its Data Docs). A passing set is published as the asset
   `feedback_preferences` (its manifest, version = the step key, counts, method) and recorded in
   MLflow as a dataset input; the asset starts `orchard_posttrain` from the champion.

The same export gives the same version: a re-run publishes nothing new.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset, Param, dag, task

from orchard.dag_inputs import DAG_DEFAULTS

FEEDBACK_DATASET = Asset("feedback_preferences")


@dag(
    dag_id="orchard_feedback",
    schedule=timedelta(days=1),
    doc_md=__doc__,
    tags=["orchard", "data", "feedback"],
    **DAG_DEFAULTS,
    params={
        "api_url": Param(
            None,
            type=["null", "string"],
            title="Platform API",
            description="Base URL of the platform API to export from (empty: this stack's, "
            "http://<host>:<api_port>).",
        ),
        "method": Param(
            "dpo",
            type="string",
            enum=["dpo", "kto"],
            title="Post-training method",
            description="What the set is for, and so what the gate counts: dpo trains on "
            "preference pairs (enough_pairs), kto on every labelled answer, thumbs alone "
            "included, pairs unfolded (enough_rows). The orchard_posttrain run the set "
            "starts uses it.",
        ),
        "min_pairs": Param(
            8,
            type="integer",
            minimum=1,
            title="Fewest pairs",
            description="The gate stops a set with fewer preference pairs (enough_pairs).",
            section="Gate",
        ),
        "min_rows": Param(
            16,
            type="integer",
            minimum=1,
            title="Fewest labelled answers",
            description="method kto: the gate stops a set with fewer labelled answers "
            "(enough_rows).",
            section="Gate",
        ),
        "min_positive_share": Param(
            0.05,
            type="number",
            minimum=0,
            maximum=1,
            title="Least positive share",
            description="The gate stops a set whose judgements are less positive than this "
            "(not_one_sided; a pair counts one up and one down).",
            section="Gate",
        ),
        "max_positive_share": Param(
            0.95,
            type="number",
            minimum=0,
            maximum=1,
            title="Most positive share",
            description="The gate stops a set whose judgements are more positive than this "
            "(not_one_sided).",
            section="Gate",
        ),
        "max_user_share": Param(
            0.5,
            type="number",
            exclusiveMinimum=0,
            maximum=1,
            title="Most from one user",
            description="The gate stops a set where one user gave more than this share of "
            "the rows (no_dominant_user).",
            section="Gate",
        ),
        "force": Param(
            False, type="boolean", title="Rebuild", description="Rebuild an existing version."
        ),
    },
)
def orchard_feedback():
    @task
    def export(params: dict | None = None) -> dict:
        from pathlib import Path

        from airflow.sdk.exceptions import AirflowFailException

        from orchard.errors import OrchardError
        from orchard.feedback import export_key, fetch_export
        from orchard.settings import load_settings

        settings = load_settings()
        try:
            found = fetch_export(
                params["api_url"] or settings.api_url,
                export_key(settings),
                Path(settings.home) / "feedback-exports",
            )
        except OrchardError as error:
            raise AirflowFailException(str(error)) from None
        print(f"exported {found.records} signals ({found.opted_out_accounts} accounts opted out)")
        return {
            "path": str(found.path),
            "sha256": found.sha256,
            "opted_out_accounts": found.opted_out_accounts,
        }

    @task
    def evaluation_tasks() -> str | None:
        from orchard.errors import OrchardError
        from orchard.feedback import champion_lineage
        from orchard.settings import load_settings
        from orchard.steps import latest
        from orchard.storage import Storage

        settings = load_settings()
        try:
            _, _, chat = champion_lineage(settings.mlflow_uri, settings.model_name)
        except OrchardError:
            chat = None
        if chat is None:
            newest = latest(Storage.from_settings(settings), "chat_data")
            chat = newest.path if newest else None
        if chat is None:
            print("no chat data yet: decontaminating against the safety prompts only")
        return chat

    @task(outlets=[FEEDBACK_DATASET])
    def publish(exported: dict, chat: str | None, params: dict | None = None, **context) -> str:
        from pathlib import Path

        from airflow.sdk.exceptions import AirflowFailException

        from orchard.errors import OrchardError
        from orchard.settings import load_settings
        from orchard.steps import Manifest, localize
        from orchard.storage import Storage
        from ray_jobs.feedback import FeedbackConfig, run

        settings = load_settings()
        config = FeedbackConfig(
            export=exported["path"],
            export_sha256=exported["sha256"],
            opted_out_accounts=exported["opted_out_accounts"],
            method=params["method"],
            min_pairs=params["min_pairs"],
            min_rows=params["min_rows"],
            min_positive_share=params["min_positive_share"],
            max_positive_share=params["max_positive_share"],
            max_user_share=params["max_user_share"],
        )
        # The step runs here, not as a Ray job: its input is read from a local copy (an
        # s3:// data root's chat data is downloaded once into this host's cache).
        store = Storage.from_settings(settings)
        inputs = [localize(Manifest.read(chat, store), store)] if chat else []
        try:
            done = run(config, inputs, settings, force=params["force"])
        except OrchardError as error:  # the gate: retrying would fail the same way
            raise AirflowFailException(str(error)) from None
        Path(exported["path"]).unlink(missing_ok=True)  # the raw text lives on redacted only
        print(f"feedback dataset {done.key}: {done.counts}")
        context["outlet_events"][FEEDBACK_DATASET].extra = {
            "manifest": f"{done.path.rstrip('/')}/manifest.json",
            "version": done.key,
            "pairs": done.counts.get("pairs", 0),
            "unpaired": done.counts.get("unpaired", 0),
            "labelled_answers": done.counts.get("labelled_answers", 0),
            "method": params["method"],
        }
        return done.path

    publish(export(), evaluation_tasks())


orchard_feedback()
