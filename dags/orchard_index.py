"""
### orchard_index

The curated corpus in, a shared knowledge base out. Runs by itself whenever
`orchard_data` publishes the `orchard_curated_corpus` asset (or trigger it by hand),
beside `orchard_tokenizer`.

**index** (a Ray job, `ray_jobs/index.py`) cuts every curated page into chunks at its
headings, embeds them with the platform's embedding model and writes them into a new
collection of the vector store; the platform API switches the shared knowledge base
(*the crawled site* by default) to it only once every chunk is in, so a chat never
searches a half-built index. Administrators choose which roles may use it
(`/api/v1/admin/knowledge-access`).

Content-addressed: the same corpus, Params and embedding model reuse the finished index.
"""

from __future__ import annotations

from airflow.sdk import Asset, Param, dag, task

from orchard.dag_inputs import DAG_DEFAULTS, manifest_param, step_job

CURATED_CORPUS = Asset("orchard_curated_corpus")


@dag(
    dag_id="orchard_index",
    schedule=[CURATED_CORPUS],
    doc_md=__doc__,
    tags=["orchard", "knowledge"],
    **DAG_DEFAULTS,
    params={
        "corpus": manifest_param("mix", "curated corpus"),
        "knowledge_base": Param(
            "crawled-site",
            type="string",
            pattern="^[a-z][a-z0-9-]{0,39}$",
            title="Knowledge base",
            description="Slug of the shared knowledge base to (re)build: lower-case letters, "
            "digits and -.",
        ),
        "title": Param(
            "the crawled site",
            type="string",
            minLength=1,
            maxLength=100,
            title="Title",
            description="The knowledge base's name as users see it.",
        ),
        "max_documents": Param(
            0,
            type="integer",
            minimum=0,
            maximum=10_000_000,
            title="Max documents",
            description="Index at most this many documents of the corpus (0: all).",
        ),
        "max_chunks_per_document": Param(
            4,
            type="integer",
            minimum=0,
            maximum=100_000,
            title="Chunks per page",
            description="Index only the first chunks of each page (0: whole pages). 4 keeps "
            "`make run` within its time: about 2,100 chunks of the demo site instead of 15,500.",
        ),
        "force": Param(
            False, type="boolean", title="Rebuild", description="Redo steps already done."
        ),
    },
)
def orchard_index():
    @task
    def corpus(params: dict | None = None, **context) -> str:
        from orchard.dag_inputs import upstream_manifest

        return upstream_manifest(context, CURATED_CORPUS, params["corpus"], "mix")

    @task
    def index(corpus_manifest: str, params: dict | None = None, **context) -> dict:
        from orchard.knowledge.embeddings import model_name
        from orchard.settings import load_settings
        from ray_jobs.index import IndexConfig

        config = IndexConfig(
            knowledge_base=params["knowledge_base"],
            title=params["title"],
            max_documents=params["max_documents"],
            max_chunks_per_document=params["max_chunks_per_document"],
            embedding_model=model_name(load_settings().embedding_model),
        )
        manifest = step_job(
            context, params, "index", config.knowledge_base, config, [corpus_manifest]
        )
        return {"manifest": manifest.path, **manifest.counts, **manifest.facts}

    index(corpus())


orchard_index()
