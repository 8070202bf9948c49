"""Curate throughput on the demo corpus, Orchard's step vs the bare datatrove executors,
and dedup precision/recall on the planted corpus.

    .venv/bin/python bench/curate.py [--pages 600]

1. Crawls the demo website (Debian's python3.11-doc, served here on a loopback port).
2. Runs the curate step through Orchard (`run_step`: staging, manifest, stats, dropped
   samples) and, as the baseline, the very same datatrove pipelines run directly by
   datatrove's LocalPipelineExecutor with nothing of Orchard's step machinery around
   them. Prints documents/s per core for both and the ratio.
3. Curates the planted corpus of testkit/corpus.py and prints near/exact dedup recall and
   precision. Prints figures; never fails on time.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import http.server
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchard.datatrove_workspace import Workspace  # noqa: E402
from orchard.steps import run_step  # noqa: E402
from ray_jobs.crawl import CrawlConfig, crawl  # noqa: E402
from ray_jobs.curate import (  # noqa: E402
    CurateConfig,
    _exact_dedup_stages,
    _filter_pipeline,
    _near_dedup_stages,
    curate,
)
from testkit.corpus import planted_corpus  # noqa: E402

SITE = Path("/usr/share/doc/python3.11/html")


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def bare_datatrove(config: CurateConfig, sources: list[Path], work: Path) -> float:
    """The same pipelines, run by datatrove's executor directly."""
    from datatrove.executor.local import LocalPipelineExecutor

    tasks = config.tasks
    work.mkdir(parents=True)
    ws = Workspace(work)
    located = [(str(source), source) for source in sources]
    stages = [("filter", _filter_pipeline(config, located, ws), tasks)]
    stages += _exact_dedup_stages("filtered", ws, "exact_out", tasks)
    stages += _near_dedup_stages(config, "exact_out", ws, "out", tasks)
    started = time.monotonic()
    for name, pipeline, n in stages:
        LocalPipelineExecutor(
            pipeline, tasks=n, workers=min(config.workers, n), logging_dir=str(work / "logs" / name)
        ).run()
    return time.monotonic() - started


def count_input(sources: list[Path]) -> int:
    from warcio.archiveiterator import ArchiveIterator

    total = 0
    for part in (p for s in sources for p in s.rglob("*.warc.gz")):
        with open(part, "rb") as handle:
            total += sum(1 for r in ArchiveIterator(handle) if r.rec_type == "response")
    return total


def planted_quality(root: Path) -> None:
    import json

    corpus = planted_corpus(distinct=400, near=100, exact=50, seed=3)
    text = root / "planted" / "text"
    text.mkdir(parents=True)
    with gzip.open(text / "00000.jsonl.gz", "wt") as handle:
        for doc_id, body in sorted(corpus.documents.items()):
            handle.write(
                json.dumps({"text": body, "id": doc_id, "metadata": {"source": "b"}}) + "\n"
            )
    config = CurateConfig(filters=("language",))
    done = run_step(
        step="curate",
        name="planted",
        config=config,
        data_root=root / "planted-data",
        body=lambda ctx: curate(config, [root / "planted"], ctx),
    )
    kept = set()
    for shard in Path(done.path, "documents").glob("*.jsonl.gz"):
        with gzip.open(shard, "rt") as handle:
            kept |= {json.loads(line)["id"] for line in handle}
    for label, pairs in (("near", corpus.near_duplicates), ("exact", corpus.exact_duplicates)):
        caught = sum(1 for copy, orig in pairs.items() if (copy in kept) != (orig in kept))
        print(f"{label}-duplicate recall: {caught}/{len(pairs)} = {caught / len(pairs):.3f}")
    planted = set(corpus.near_duplicates) | set(corpus.near_duplicates.values())
    planted |= set(corpus.exact_duplicates) | set(corpus.exact_duplicates.values())
    wrongly = [d for d in corpus.distinct - planted if d not in kept]
    removed = len(corpus.documents) - len(corpus.foreign) - len(kept)
    precision = 1 - len(wrongly) / max(removed, 1)
    print(
        f"dedup precision: {removed - len(wrongly)}/{removed} removals correct = {precision:.3f}"
        f" ({len(corpus.distinct - planted)} distinct documents, {len(wrongly)} removed)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=600)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="orchard-bench-curate-"))
    cores = os.cpu_count() or 1
    if (SITE / "index.html").exists():
        server, url = serve(SITE)
        config = CrawlConfig(seeds=(f"{url}/index.html",), max_pages=args.pages, per_host_delay_s=0)
        crawled = run_step(
            step="crawl",
            name="docs",
            config=config,
            data_root=root / "data",
            body=lambda ctx: crawl(config, ctx),
        )
        server.shutdown()
        sources = [Path(crawled.path)]
        pages = count_input(sources)
        config = CurateConfig(tasks=cores, workers=cores)
        started = time.monotonic()
        done = run_step(
            step="curate",
            name="bench",
            config=config,
            data_root=root / "data",
            body=lambda ctx: curate(config, sources, ctx),
        )
        orchard_s = time.monotonic() - started
        bare_s = bare_datatrove(config, sources, root / "bare")
        kept = done.counts["documents"]
        print(f"demo corpus: {pages} pages in, {kept} documents out, {cores} cores")
        for label, seconds in (("orchard curate step", orchard_s), ("bare datatrove", bare_s)):
            rate = pages / seconds / cores
            print(f"{label:<20} {seconds:7.1f} s  {rate:6.2f} docs/s/core")
        print(f"orchard / bare time:   {orchard_s / bare_s:.3f}x")
    else:
        print(f"no demo website at {SITE}: install python3.11-doc for the throughput figures")
    planted_quality(root)
    print(f"(work files in {root})")


if __name__ == "__main__":
    main()
