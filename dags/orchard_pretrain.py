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
        "workers": Param(
            1,
            type="integer",
            minimum=1,
            title="Workers",
            description="Data-parallel Ray Train workers (GPUs on a GPU cluster).",
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
        from ray_jobs.pretrain import PretrainConfig

        config = PretrainConfig(
            preset=params["preset"],
            steps=params["steps"],
            global_batch_size=params["global_batch_size"],
            seq_length=params["seq_length"] or None,
            lr=params["lr"] or None,
            workers=params["workers"],
        )
        manifest = step_job(
            context, params, "pretrain", params["preset"], config, [tokenized_manifest]
        )
        context["outlet_events"][PRETRAINED_MODEL].extra = {
            "manifest": join(manifest.path, "manifest.json"),
            "hf_dir": join(manifest.path, "hf"),
            "val_loss": manifest.metrics.get("val_loss"),
            "key": manifest.key,
        }
        return manifest.path

    pretrain(tokenized())


orchard_pretrain()
