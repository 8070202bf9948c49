"""
### orchard_data

Raw web data in, a clean, deduplicated, validated corpus out.

1. **crawl** the seed sites politely (robots.txt, rate limits) into WARC files — with no
   seeds, the demo website `orchard up` serves (the Python documentation);
2. **import** other sources (WARC/WET, JSONL/Parquet, a folder of .txt/.md/.html);
3. **curate** with datatrove: text extraction, URL/language/quality filters, PII
   removal, exact and MinHash near-duplicate removal — every drop counted, samples kept;
4. **validate** with Great Expectations: a failing suite turns the task red and stops here;
5. **mix** the sources to the target category weights and publish the
   `orchard_curated_corpus` asset, which the tokenizer DAG is scheduled on.

Every step runs as a Ray job and is content-addressed: triggering again with the same
Params reuses every finished step (no work twice); see the manifests under
`ORCHARD_HOME/data/<step>/`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, dag, task

from orchard.dag_inputs import step_job

CURATED_CORPUS = Asset("orchard_curated_corpus")
IMPORT_KINDS = ["warc", "wet", "jsonl", "parquet", "folder"]
CATEGORIES = ["web", "books", "code", "conversations", "instructions"]
FILTERS = ["url", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb"]


@dag(
    dag_id="orchard_data",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["orchard", "data"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=20)},
    # The trigger form opens on its first section (Airflow's "Run Parameters"): the sources
    # and Rebuild. Each step's knobs have a section of their own, collapsed until opened.
    params={
        "seeds": Param(
            [],
            type="array",
            items={"type": "string", "pattern": "^https?://"},
            title="Seed URLs",
            description="Where the crawl starts. Empty: the demo website of `orchard up`.",
        ),
        "allowed_domains": Param(
            [],
            type="array",
            items={"type": "string"},
            title="Allowed domains",
            description="Hosts the crawl may visit, and their subdomains (empty: the seeds').",
            section="Crawl",
        ),
        "max_pages": Param(
            600,
            type="integer",
            minimum=1,
            maximum=1_000_000,
            title="Max pages",
            description="Pages the crawl stores at most.",
            section="Crawl",
        ),
        "max_depth": Param(
            6,
            type="integer",
            minimum=0,
            maximum=100,
            title="Max depth",
            description="Links followed from a seed at most.",
            section="Crawl",
        ),
        "per_host_delay_s": Param(
            0.02,
            type="number",
            minimum=0,
            maximum=60,
            title="Delay per host (s)",
            description="Minimum time between two requests to one host (robots.txt "
            "Crawl-delay wins when larger).",
            section="Crawl",
        ),
        "imports": Param(
            [],
            type="array",
            items={
                "type": "string",
                "pattern": f"^({'|'.join(IMPORT_KINDS)})(/({'|'.join(CATEGORIES)}))?:.+",
            },
            title="Other sources",
            description="Data already on disk, as KIND[/CATEGORY]:PATH with KIND one of "
            f"{', '.join(IMPORT_KINDS)} and CATEGORY one of {', '.join(CATEGORIES)} "
            "(default web); e.g. jsonl/books:/data/books.jsonl, folder:/data/notes.",
        ),
        "languages": Param(
            ["en"],
            type="array",
            items={"type": "string", "pattern": "^[a-z]{2,3}$"},
            minItems=1,
            title="Languages",
            description="Languages to keep (ISO 639-1 codes).",
            section="Curation",
        ),
        "filters": Param(
            FILTERS,
            type="array",
            items={"type": "string", "enum": FILTERS},
            title="Filters",
            description="Quality filters to run, in this order.",
            section="Curation",
        ),
        "min_alpha_words_ratio": Param(
            0.8,
            type="number",
            minimum=0,
            maximum=1,
            title="Least share of words with a letter",
            description="Gopher quality filter: 0.8 suits prose; technical documentation "
            "full of code and numbers (the demo corpus) wants about 0.6.",
            section="Curation",
        ),
        "exact_dedup": Param(
            True,
            type="boolean",
            title="Exact dedup",
            description="Drop identical texts.",
            section="Curation",
        ),
        "near_dedup": Param(
            True,
            type="boolean",
            title="Near dedup (MinHash)",
            description="Drop near-duplicates.",
            section="Curation",
        ),
        "minhash_buckets": Param(
            20,
            type="integer",
            minimum=1,
            maximum=64,
            title="MinHash bands",
            description="More bands catch less similar pairs (threshold ≈ (1/bands)^(1/rows)).",
            section="Curation",
        ),
        "minhash_hashes_per_bucket": Param(
            5,
            type="integer",
            minimum=1,
            maximum=32,
            title="MinHash rows per band",
            description="More rows demand more similarity (20×5 ≈ Jaccard 0.55 and up).",
            section="Curation",
        ),
        "executor": Param(
            "local",
            type="string",
            enum=["local", "ray"],
            title="Curation executor",
            description="datatrove's local processes, or spread over the Ray cluster.",
            section="Curation",
        ),
        "max_duplicate_rate": Param(
            0.01,
            type="number",
            minimum=0,
            maximum=1,
            title="Max duplicate rate",
            description="Validation fails when more of the corpus than this is duplicated.",
            section="Validation and mix",
        ),
        "weights": Param(
            {"web": 1.0},
            type="object",
            title="Mix weights",
            description="Target share per category: web, books, code, conversations, instructions.",
            section="Validation and mix",
        ),
        "force": Param(
            False, type="boolean", title="Rebuild", description="Redo steps already done."
        ),
    },
)
def orchard_data():
    @task
    def crawl(params: dict | None = None, **context) -> str | None:
        from pathlib import Path

        from airflow.exceptions import AirflowFailException

        from orchard.settings import load_settings
        from ray_jobs.crawl import CrawlConfig

        settings = load_settings()
        seeds = params["seeds"]
        if not seeds:
            if not (Path(settings.site_dir) / "index.html").is_file():
                if params["imports"]:
                    print("no Seed URLs and no demo website: importing only")
                    return None
                # A missing site is not transient: fail without retries.
                raise AirflowFailException(
                    "no Seed URLs and no demo website: give Seed URLs, or install "
                    "python3.11-doc, or set ORCHARD_SITE_DIR, then `orchard up`"
                )
            seeds = [f"{settings.site_url}/index.html"]
        config = CrawlConfig(
            seeds=tuple(seeds),
            allowed_domains=tuple(params["allowed_domains"]),
            max_pages=params["max_pages"],
            max_depth=params["max_depth"],
            per_host_delay_s=params["per_host_delay_s"],
        )
        return step_job(context, params, "crawl", "web", config, [], settings=settings).path

    @task
    def import_sources(params: dict | None = None, **context) -> str | None:
        if not params["imports"]:
            print("no other sources configured")
            return None
        from airflow.exceptions import AirflowFailException

        from orchard.errors import OrchardError
        from ray_jobs.ingest import ImportConfig

        sources = []
        for item in params["imports"]:
            kind, path = item.split(":", 1)
            kind, _, category = kind.partition("/")
            sources.append({"kind": kind, "path": path, "category": category or "web"})
        try:
            config = ImportConfig.from_sources(sources)
        except OrchardError as error:  # a wrong path: retrying will not help
            raise AirflowFailException(str(error)) from None
        return step_job(context, params, "ingest", "sources", config, [], step="import").path

    @task
    def curate(
        crawled: str | None, imported: str | None, params: dict | None = None, **context
    ) -> str:
        from ray_jobs.curate import CurateConfig

        config = CurateConfig(
            languages=tuple(params["languages"]),
            filters=tuple(params["filters"]),
            min_alpha_words_ratio=params["min_alpha_words_ratio"],
            exact_dedup=params["exact_dedup"],
            near_dedup=params["near_dedup"],
            minhash_buckets=params["minhash_buckets"],
            minhash_hashes_per_bucket=params["minhash_hashes_per_bucket"],
            executor=params["executor"],
        )
        sources = [path for path in (crawled, imported) if path]
        return step_job(context, params, "curate", "corpus", config, sources).path

    @task
    def validate(curated: str, params: dict | None = None, **context) -> str:
        from airflow.exceptions import AirflowFailException

        from orchard.ray_submit import RayJobFailed
        from orchard.settings import load_settings
        from orchard.steps import Manifest, output_location
        from orchard.storage import Storage
        from ray_jobs.validate import ValidateConfig

        config = ValidateConfig(
            languages=tuple(params["languages"]),
            max_duplicate_rate=params["max_duplicate_rate"],
        )
        settings = load_settings()
        try:
            manifest = step_job(
                context, params, "validate", "corpus", config, [curated], settings=settings
            )
        except RayJobFailed as error:
            # validate keeps a failing report at <data_root>/validate/failed-<key>.
            inputs = [Manifest.read(curated)]
            store = Storage.from_settings(settings)
            report = output_location(store, "validate", "failed", config, inputs)
            if store.files(report):
                # The suite failed: the data will not change on a retry, so stop here.
                raise AirflowFailException(f"{error} (report: {report})") from None
            raise
        return manifest.path

    @task(outlets=[CURATED_CORPUS])
    def mix(curated: str, validated: str, params: dict | None = None, **context) -> str:
        from orchard.storage import join
        from ray_jobs.mix import MixConfig

        config = MixConfig(weights=params["weights"])
        manifest = step_job(context, params, "mix", "corpus", config, [curated, validated])
        context["outlet_events"][CURATED_CORPUS].extra = {
            "manifest": join(manifest.path, "manifest.json"),
            "documents": manifest.counts.get("documents", 0),
            "key": manifest.key,
        }
        return manifest.path

    curated = curate(crawl(), import_sources())
    mix(curated, validate(curated))


orchard_data()
