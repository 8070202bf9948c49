"""
### orchard_tokenizer

The curated corpus in, a tokenizer and a tokenized corpus out. Runs by itself whenever
`orchard_data` publishes the `orchard_curated_corpus` asset (or trigger it by hand).

1. **tokenizer** trains a byte-level BPE tokenizer (Hugging Face `tokenizers`) with
   Orchard's special tokens and chat template, and reports its compression (bytes per
   token) and round-trip exactness on held-out documents. With *Use this tokenizer*
   (an imported base model, from `orchard_import`) it trains nothing and adopts the base
   model's own tokenizer instead, so continued pretraining and post-training of that
   model see the tokens it knows;
2. **tokenize** writes the corpus as Megatron indexed datasets (`.bin/.idx`, train and
   validation splits, an end-of-document token after every document), in parallel over
   Ray, and publishes the `orchard_tokenized_corpus` asset `orchard_pretrain` runs on.
   The manifest names the tokenizer (trained or base model, source, sha256 of its
   `tokenizer.json`, vocabulary size); a base model's tokenizer with more tokens than the
   model has embeddings is refused.

Both steps are content-addressed: the same corpus and Params reuse the finished output.
"""

from __future__ import annotations

from airflow.sdk import Asset, Param, dag, task

from orchard.dag_inputs import DAG_DEFAULTS, manifest_param, step_job

CURATED_CORPUS = Asset("orchard_curated_corpus")
TOKENIZED_CORPUS = Asset("orchard_tokenized_corpus")


@dag(
    dag_id="orchard_tokenizer",
    schedule=[CURATED_CORPUS],
    doc_md=__doc__,
    tags=["orchard", "model"],
    **DAG_DEFAULTS,
    params={
        "corpus": manifest_param("mix", "curated corpus"),
        "vocab_size": Param(
            8192,
            type="integer",
            minimum=512,
            maximum=262_144,
            title="Vocabulary size",
            description="Tokens in the vocabulary: 50257/100352/256000 for real runs, a few "
            "thousand for the demo corpus.",
        ),
        "valid_fraction": Param(
            0.05,
            type="number",
            exclusiveMinimum=0,
            maximum=0.5,
            title="Validation share",
            description="Share of documents held out for validation (never trained on).",
        ),
        "base_tokenizer": Param(
            None,
            type=["null", "string"],
            maxLength=1000,
            title="Use this tokenizer",
            description="An imported base model (orchard_import): its manifest.json, its "
            "directory or its tokenizer/ directory. The corpus is tokenized with that "
            "model's own tokenizer and none is trained (vocabulary size is then unused). "
            "Empty: train Orchard's tokenizer.",
        ),
        "force": Param(
            False, type="boolean", title="Rebuild", description="Redo steps already done."
        ),
    },
)
def orchard_tokenizer():
    @task
    def corpus(params: dict | None = None, **context) -> str:
        from orchard.dag_inputs import upstream_manifest

        return upstream_manifest(context, CURATED_CORPUS, params["corpus"], "mix")

    @task
    def tokenizer(corpus_manifest: str, params: dict | None = None, **context) -> str:
        if params.get("base_tokenizer"):  # adopt an imported base model's tokenizer
            from airflow.sdk.exceptions import AirflowFailException

            from orchard.errors import OrchardError
            from ray_jobs.tokenize import base_tokenizer_manifest

            try:
                return base_tokenizer_manifest(params["base_tokenizer"])
            except OrchardError as error:
                raise AirflowFailException(str(error)) from None
        from ray_jobs.tokenizer import TokenizerConfig

        config = TokenizerConfig(
            vocab_size=params["vocab_size"], valid_fraction=params["valid_fraction"]
        )
        return step_job(context, params, "tokenizer", "bpe", config, [corpus_manifest]).path

    @task(outlets=[TOKENIZED_CORPUS])
    def tokenize(
        corpus_manifest: str, tokenizer_dir: str, params: dict | None = None, **context
    ) -> str:
        from orchard.storage import join
        from ray_jobs.tokenize import TokenizeConfig

        config = TokenizeConfig(valid_fraction=params["valid_fraction"])
        manifest = step_job(
            context, params, "tokenize", "corpus", config, [tokenizer_dir, corpus_manifest]
        )
        context["outlet_events"][TOKENIZED_CORPUS].extra = {
            "manifest": join(manifest.path, "manifest.json"),
            "tokens": manifest.counts.get("tokens.train", 0),
            "key": manifest.key,
            "tokenizer": manifest.facts.get("tokenizer_source", ""),
        }
        return manifest.path

    source = corpus()
    tokenize(source, tokenizer(source))


orchard_tokenizer()
