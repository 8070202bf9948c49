"""Knowledge ingestion and retrieval on the demo corpus (python3.11-doc) in the embedded
store (LanceDB).

    .venv/bin/python bench/rag.py [--pages 40] [--queries 40]

Ingests `--pages` pages of the Python documentation through the whole path (HTML parsing,
chunking, the packaged all-MiniLM-L6-v2, LanceDB) and prints pages/s and chunks/s, with
the time of each stage; then times hybrid, vector and keyword searches (query embedding
included) at 1 and 8 concurrent clients: p50/p99 per query. The baseline is the
embedding alone: ingestion is bound by it, and a search's p50 against one query
embedding shows what the store adds. Weaviate is timed when ORCHARD_WEAVIATE_URL is set.

Last, a chat turn's retrieval overhead: the platform API (in this process, SQLite, the
embedded store) in front of testkit's serving stand-in, whose first token is immediate,
so the figure is the platform's own time to first token: `--turns` questions in a chat
without knowledge and in one with `--chat-pages` pages uploaded into it, alternating;
TTFT p50/p99 of each and the ratio with ÷ without. Against a real model the ratio is
smaller (the model's prefill is added to both, more to the longer prompt with sources).
Prints figures, never fails on time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from orchard.knowledge.chunking import chunk_sections  # noqa: E402
from orchard.knowledge.embeddings import load_embedder  # noqa: E402
from orchard.knowledge.files import FileLimits, parse_file  # noqa: E402
from orchard.knowledge.vectors import Chunk  # noqa: E402

DOCS = Path("/usr/share/doc/python3.11/html/library")
OWNER = "bench"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ingest(store, collection: str, pages: list[Path], embedder) -> list[Chunk]:
    timings = {"parse+chunk": 0.0, "embed": 0.0, "store": 0.0}
    store.create_collection(collection, embedder.model)
    every: list[Chunk] = []
    for page in pages:
        start = time.perf_counter()
        parsed = parse_file(page.read_bytes(), page.name, FileLimits())
        pieces = chunk_sections(parsed.sections)
        timings["parse+chunk"] += time.perf_counter() - start
        start = time.perf_counter()
        vectors = embedder.embed([p.embedding_text for p in pieces])
        timings["embed"] += time.perf_counter() - start
        chunks = [
            Chunk(
                uuid.uuid4().hex,
                OWNER,
                page.stem.replace(".", "_"),
                i,
                p.text,
                page.name,
                p.page,
                p.heading,
            )
            for i, p in enumerate(pieces)
        ]
        start = time.perf_counter()
        store.add(collection, chunks, vectors, embedder.model)
        timings["store"] += time.perf_counter() - start
        every += chunks
    total = sum(timings.values())
    print(
        f"ingestion: {len(pages)} pages, {len(every)} chunks in {total:.1f} s: "
        f"{len(pages) / total:.2f} pages/s, {len(every) / total:.1f} chunks/s "
        f"({', '.join(f'{k} {v:.1f} s' for k, v in timings.items())})"
    )
    return every


def time_searches(store, collection: str, embedder, questions: list[str], clients: int) -> None:
    def one(question: str, mode: str) -> float:
        start = time.perf_counter()
        vector = embedder.embed([question])[0]
        store.search(collection, owner=OWNER, text=question, vector=vector,
                     model=embedder.model, k=5, mode=mode)  # fmt: skip
        return (time.perf_counter() - start) * 1000

    for mode in ("hybrid", "vector", "keyword"):
        with ThreadPoolExecutor(clients) as pool:
            latencies = list(pool.map(one, questions, [mode] * len(questions)))
        print(
            f"  {mode:7s} {clients} client(s): p50 {percentile(latencies, 0.5):6.1f} ms, "
            f"p99 {percentile(latencies, 0.99):6.1f} ms"
        )


def time_to_first_token(http, headers: dict, chat_id: str, question: str) -> float:
    start = time.perf_counter()
    with http.stream("POST", f"/chats/{chat_id}/messages", json={"content": question},
                     headers=headers) as response:  # fmt: skip
        response.raise_for_status()
        first = None
        for line in response.iter_lines():
            if first is None and line == "event: delta":
                first = time.perf_counter() - start
    return first * 1000


def chat_turn_overhead(pages: list[Path], questions: list[str]) -> None:
    """TTFT of a chat turn with retrieval ÷ without (module docstring)."""
    from orchard.settings import Settings
    from platform_api.app import create_app
    from testkit.platform import CHAT_CREDITS, FAST_ARGON2, Api, LiveServer, grant_credits
    from testkit.serving_stub import ServingStub

    stub = ServingStub()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/platform.db"
        settings = Settings(home=Path(tmp), database_url=url, serving_url=stub.url,
                            starter_plan_credits=0, rate_limit_user="100000/minute",
                            rate_limit_ip="100000/minute")  # fmt: skip
        server = LiveServer(create_app(settings, FAST_ARGON2))
        server.start()
        try:
            import httpx

            http = httpx.Client(base_url=f"{server.url}/api/v1", timeout=120)
            api = Api(http=http, root=server.url, settings=settings, database_url=url)
            account = api.user("bench")
            grant_credits(url, account.id, CHAT_CREDITS)
            account.funded = True
            plain, with_files = api.chat(account), api.chat(account)
            for page in pages:
                response = http.post(f"/chats/{with_files['id']}/files",
                                     files={"file": (page.name, page.read_bytes(), "text/html")},
                                     headers=account.headers)  # fmt: skip
                response.raise_for_status()
            while True:
                files = http.get(f"/chats/{with_files['id']}/files", headers=account.headers)
                if all(f["status"] in ("ready", "failed") for f in files.json()):
                    break
                time.sleep(0.5)
            chunks = sum(f["chunks"] for f in files.json())
            ttft: dict[str, list[float]] = {"without": [], "with": []}
            time_to_first_token(http, account.headers, plain["id"], "warm-up")
            time_to_first_token(http, account.headers, with_files["id"], "warm-up")
            for question in questions:
                ttft["without"].append(
                    time_to_first_token(http, account.headers, plain["id"], question)
                )
                ttft["with"].append(
                    time_to_first_token(http, account.headers, with_files["id"], question)
                )
            http.close()
        finally:
            server.stop()
            stub.stop()
    print(f"== chat turn retrieval overhead ({len(pages)} pages, {chunks} chunks in the chat)")
    for name, values in ttft.items():
        print(
            f"  TTFT {name:7s} retrieval: p50 {percentile(values, 0.5):6.1f} ms, "
            f"p99 {percentile(values, 0.99):6.1f} ms"
        )
    ratio = percentile(ttft["with"], 0.5) / percentile(ttft["without"], 0.5)
    print(f"  TTFT with retrieval / without (p50): {ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--chat-pages", type=int, default=10)
    args = parser.parse_args()
    if not DOCS.is_dir():
        sys.exit(f"no {DOCS}: install Debian's python3.11-doc (make demo-site)")
    pages = sorted(DOCS.glob("*.html"), key=lambda p: p.stat().st_size)
    pages = pages[len(pages) // 4 :][: args.pages]  # skip the stub pages
    start = time.perf_counter()
    embedder = load_embedder()
    print(f"embedding model: {embedder.model.name}, loaded in {time.perf_counter() - start:.1f} s")

    stores = []
    with tempfile.TemporaryDirectory() as tmp:
        from orchard.knowledge.lance import LanceStore

        stores.append(("lancedb", LanceStore(Path(tmp) / "lancedb")))
        if os.environ.get("ORCHARD_WEAVIATE_URL"):
            from orchard.knowledge.weaviate_store import WeaviateStore

            port = int(os.environ.get("ORCHARD_WEAVIATE_GRPC_PORT", "50051"))
            stores.append(("weaviate", WeaviateStore.connect(os.environ["ORCHARD_WEAVIATE_URL"],
                                                             grpc_port=port)))  # fmt: skip
        for name, store in stores:
            collection = f"kb_bench_{uuid.uuid4().hex[:8]}"
            print(f"== {name}")
            chunks = ingest(store, collection, pages, embedder)
            questions = [c.heading or c.text[:80] for c in chunks][
                :: max(1, len(chunks) // args.queries)
            ]
            texts = [c.text for c in chunks[:64]]
            begin = time.perf_counter()
            embedder.embed(texts)
            rate = len(texts) / (time.perf_counter() - begin)
            print(f"  baseline, the same chunks embedded alone: {rate:.1f} chunks/s")
            single = []
            for question in questions:
                begin = time.perf_counter()
                embedder.embed([question])
                single.append((time.perf_counter() - begin) * 1000)
            print(f"  baseline, one query embedding alone: p50 {statistics.median(single):.1f} ms")
            for clients in (1, 8):
                time_searches(store, collection, embedder, questions, clients)
            store.drop_collection(collection)
            store.close()
    chat_turn_overhead(pages[: args.chat_pages], questions[: args.turns])


if __name__ == "__main__":
    main()
