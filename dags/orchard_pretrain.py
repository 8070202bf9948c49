"""
### orchard_pretrain

A tokenized corpus in, a pretrained model out, as a Hugging Face `LlamaForCausalLM`.
Runs by itself whenever `orchard_tokenizer` publishes `orchard_tokenized_corpus` (or
trigger it by hand with the Params below).

**pretrain** trains Megatron-Core's `GPTModel` (Llama-style: RMSNorm, SwiGLU, RoPE, GQA)
on Ray Train: data-parallel workers, Megatron's optimizer (AdamW, warmup + cosine),
checkpoints every N steps. A killed run resumes from its last checkpoint when the task
is retried. Loss, validation perplexity, LR, grad norm and tokens/s are live in MLflow
(experiment `orchard-pretrain`). The finished model is exported to Hugging Face format
and published as the `pretrained_model` asset, which post-training builds on.

**Continued pretraining.** With *Initialise from* (an imported base model, from
`orchard_import`), the model is that base's architecture and weights instead of a preset
at random; the corpus must be tokenized with the base's own tokenizer (`orchard_tokenizer`
with *Use this tokenizer*), and a corpus tokenized so continues that base even when
*Initialise from* is left empty. The validation loss of the base as loaded is logged at step 0;
the export keeps the base's config and chat template, and the manifest names the base.

**On a Ray cluster** (docs/cluster.md), the *Cluster* section places the workers:
*Workers* 2 with *Placement* `STRICT_SPREAD` puts one on each of two nodes, and *Worker
node labels* (e.g. `{"orchard-host": "in(b,c)"}`) keeps them off the head or on a GPU
pool. With the data root on object storage, checkpoints go there too, so a run that
loses a host resumes from the last one on the hosts that remain or come back.
"""

from __future__ import annotations

from airflow.sdk import Asset, Param, dag, task

from orchard.dag_inputs import DAG_DEFAULTS, manifest_param, step_job

TOKENIZED_CORPUS = Asset("orchard_tokenized_corpus")
PRETRAINED_MODEL = Asset("pretrained_model")
PRESETS = ["nano", "micro", "small", "medium", "large"]


@dag(
    dag_id="orchard_pretrain",
    schedule=[TOKENIZED_CORPUS],
    doc_md=__doc__,
    tags=["orchard", "model"],
    # A retry resumes from the last checkpoint (same step key, same work directory).
    **DAG_DEFAULTS,
    params={
        "tokenized": manifest_param("tokenize", "tokenized corpus"),
        "preset": Param(
            "nano",
            type="string",
            enum=PRESETS,
            title="Model preset",
            description="nano/micro train on a CPU; small (5.9B), medium (13.5B), large (69.0B) "
            "need a GPU cluster (tensor/pipeline parallel sizes are in the preset).",
        ),
        "steps": Param(
            300, type="integer", minimum=1, title="Steps", description="Optimizer steps."
        ),
        "global_batch_size": Param(
            8,
            type="integer",
            minimum=1,
            title="Global batch size",
            description="Sequences per optimizer step, split over the workers.",
        ),
        "seq_length": Param(
            0,
            type="integer",
            minimum=0,
            title="Sequence length",
            description="Tokens per sequence; 0: the preset's.",
        ),
        "lr": Param(
            0.0,
            type="number",
            minimum=0,
            title="Peak learning rate",
            description="0: 6e-4 scaled by sqrt(4096 / hidden size).",
        ),
        "init_from": Param(
            None,
            type=["null", "string"],
            maxLength=1000,
            title="Initialise from",
            description="Continued pretraining: an imported base model (orchard_import's "
            "manifest.json or its directory). The model is the base's shape and weights "
            "(preset is then not used); sequence length 0 means min(its positions, 1024), "
            "learning rate 0 means 1e-4. Empty: the base model whose tokenizer tokenized "
            "the corpus, if one did (orchard_tokenizer's Use this tokenizer); else the "
            "preset from scratch.",
            section="Continued pretraining",
        ),
        "workers": Param(
            1,
            type="integer",
            minimum=1,
            title="Workers",
            description="Data-parallel Ray Train workers (GPUs on a GPU cluster).",
            section="Cluster",
        ),
        "threads_per_worker": Param(
            2,
            type="integer",
            minimum=1,
            title="CPUs per worker",
            description="CPU threads (and Ray CPUs) each worker takes.",
            section="Cluster",
        ),
        "placement": Param(
            "PACK",
            type="string",
            enum=["PACK", "SPREAD", "STRICT_SPREAD"],
            title="Placement",
            description="Where Ray puts the workers: PACK as few nodes as fit, SPREAD over "
            "nodes where it can, STRICT_SPREAD each on its own node (docs/cluster.md).",
            section="Cluster",
        ),
        "worker_labels": Param(
            {},
            type="object",
            additionalProperties={"type": "string"},
            title="Worker node labels",
            description="A Ray label selector every worker's node must match, e.g. "
            '{"orchard-host": "in(b,c)"} to keep them off the head node, or on a GPU pool. '
            "Empty: any node.",
            section="Cluster",
        ),
        "checkpoint_interval": Param(
            100,
            type="integer",
            minimum=1,
            title="Checkpoint every",
            description="Steps between checkpoints (a retried or restarted run resumes "
            "from the last one).",
            section="Checkpoints and metrics",
        ),
        "log_interval": Param(
            10,
            type="integer",
            minimum=1,
            title="Log every",
            description="Steps between the metrics sent to MLflow.",
            section="Checkpoints and metrics",
        ),
        "eval_interval": Param(
            50,
            type="integer",
            minimum=1,
            title="Validate every",
            description="Steps between validation losses.",
            section="Checkpoints and metrics",
        ),
        "eval_batches": Param(
            4,
            type="integer",
            minimum=1,
            title="Validation batches",
            description="Global batches per validation.",
            section="Checkpoints and metrics",
        ),
        "force": Param(
            False, type="boolean", title="Rebuild", description="Train again even if done."
        ),
    },
)
def orchard_pretrain():
    @task
    def tokenized(params: dict | None = None, **context) -> str:
        from orchard.dag_inputs import upstream_manifest

        return upstream_manifest(context, TOKENIZED_CORPUS, params["tokenized"], "tokenize")

    @task(outlets=[PRETRAINED_MODEL])
    def pretrain(tokenized_manifest: str, params: dict | None = None, **context) -> str:
        from orchard.storage import join
        from ray_jobs.pretrain import PretrainConfig, base_of_tokenized, init_from_manifest

        config = PretrainConfig(
            preset=params["preset"],
            steps=params["steps"],
            global_batch_size=params["global_batch_size"],
            seq_length=params["seq_length"] or None,
            lr=params["lr"] or None,
            workers=params["workers"],
            # Where the workers run and how often the run checkpoints and logs are not
            # part of the step key (the same model): a finished run is reused.
            threads_per_worker=params["threads_per_worker"],
            placement=params["placement"],
            worker_labels=params["worker_labels"],
            checkpoint_interval=params["checkpoint_interval"],
            log_interval=params["log_interval"],
            eval_interval=params["eval_interval"],
            eval_batches=params["eval_batches"],
        )
        inputs, name = [tokenized_manifest], params["preset"]
        # A corpus tokenized with a base model's tokenizer continues that base by default.
        init_from = params.get("init_from") or base_of_tokenized(tokenized_manifest)
        if init_from:  # continued pretraining of an imported base model
            from airflow.sdk.exceptions import AirflowFailException

            from orchard.errors import OrchardError

            try:
                base, name = init_from_manifest(init_from)
            except OrchardError as error:
                raise AirflowFailException(str(error)) from None
            inputs.append(base)
        manifest = step_job(context, params, "pretrain", name, config, inputs)
        context["outlet_events"][PRETRAINED_MODEL].extra = {
            "manifest": join(manifest.path, "manifest.json"),
            "hf_dir": join(manifest.path, "hf"),
            "val_loss": manifest.metrics.get("val_loss"),
            "init_from": init_from or "",
            "key": manifest.key,
        }
        return manifest.path

    pretrain(tokenized())


orchard_pretrain()
