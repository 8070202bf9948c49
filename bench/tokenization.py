"""Tokenize throughput: Orchard's tokenize step vs a bare `tokenizers` encode_batch loop
over the same text, in one process.

    .venv/bin/python bench/tokenization.py [--documents 3000] [--shards 2] [--vocab 8192]
                                       [--text-dir /usr/share/doc/python3.11/html/_sources]

1. Generates a corpus (the readable prose of testkit/corpus.py, plus Python-like code
   documents) and writes it as a mix step's output (`documents/*.jsonl.gz`); no stack,
   no download. With --text-dir, the *.txt files under it are the documents instead
   (the reST sources of python3.11-doc are close to the demo corpus).
2. Trains the tokenizer with the tokenizer step and prints its bytes/token on the
   held-out documents.
3. Runs the tokenize step (`run_step`: read the shards, split, encode, write
   `.bin/.idx` with Megatron's builder, `datasets.json`, manifest) and, as the baseline,
   `Tokenizer.encode_batch` over the same texts, already in memory, in batches of the
   same size, nothing else. Prints tokens/s for both and the ratio (best of --repeat).
   Prints figures; never fails on time.
"""

from __future__ import annotations

import os
import sys

# Orchard's packages, when run as `python bench/<name>.py` from anywhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

from orchard.steps import StepConfig, StepContext, StepOutput, run_step  # noqa: E402
from ray_jobs.tokenize import TokenizeConfig, tokenize  # noqa: E402
from ray_jobs.tokenizer import TokenizerConfig, train_tokenizer  # noqa: E402
from testkit.corpus import NOUNS, VERBS, article  # noqa: E402


class BenchCorpus(StepConfig):
    documents: int
    shards: int
    seed: int
    text_dir: str | None


def code(rng: random.Random) -> str:
    """A small Python module: indentation, identifiers, numbers and punctuation."""
    lines = []
    for _ in range(rng.randint(3, 8)):
        name = f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}"
        args = ", ".join(rng.sample(NOUNS, rng.randint(1, 3)))
        lines += [f"def {name}({args}):", f'    """{rng.choice(VERBS).capitalize()} it."""']
        lines += [f"    total = {rng.randint(0, 999)} * len({args.split(', ')[0]})"]
        lines += ["    for item in range(total):", "        if item % 7 == 0:"]
        lines += [f"            yield {{'{rng.choice(NOUNS)}': item, 'n': {rng.random():.4f}}}", ""]
    return "\n".join(lines)


def generated(documents: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        code(rng) if n % 5 == 0 else article(rng, paragraphs=rng.randint(3, 10))
        for n in range(documents)
    ]


def write_corpus(root: Path, documents: int, shards: int, text_dir: str | None, seed: int = 0):
    config = BenchCorpus(documents=documents, shards=shards, seed=seed, text_dir=text_dir)

    def body(ctx: StepContext) -> StepOutput:
        if text_dir:
            files = sorted(Path(text_dir).rglob("*.txt"))[:documents]
            texts = [f.read_text(errors="replace") for f in files]
        else:
            texts = generated(documents, seed)
        out = ctx.out / "documents"
        out.mkdir()
        handles = [gzip.open(out / f"{i:05d}.jsonl.gz", "wt") for i in range(shards)]
        for n, text in enumerate(texts):
            line = {"text": text, "id": f"bench-{n:06d}", "metadata": {}}
            handles[n % shards].write(json.dumps(line) + "\n")
        for handle in handles:
            handle.close()
        return StepOutput(counts={"documents": len(texts)})

    return run_step(step="mix", name="bench", config=config, data_root=root, body=body)


def texts_of(corpus: Path) -> list[str]:
    texts = []
    for shard in sorted((corpus / "documents").glob("*.jsonl.gz")):
        with gzip.open(shard, "rt") as handle:
            texts.extend(json.loads(line)["text"] for line in handle)
    return texts


def bare(tokenizer_file: Path, texts: list[str], batch: int, fast: bool) -> tuple[int, float]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.encode_special_tokens = True
    encode = tokenizer.encode_batch_fast if fast else tokenizer.encode_batch
    encode(texts[:batch])  # warm the thread pool
    started = time.perf_counter()
    tokens = 0
    for start in range(0, len(texts), batch):
        tokens += sum(len(e.ids) for e in encode(texts[start : start + batch]))
    return tokens, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=3000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--text-dir", help="Use the *.txt files under DIR as the corpus.")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="orchard-bench-tokenize-"))
    corpus = write_corpus(root / "data", args.documents, args.shards, args.text_dir)
    texts = texts_of(Path(corpus.path))
    size = sum(len(t.encode()) for t in texts)
    print(f"corpus: {len(texts)} documents, {size / 1e6:.1f} MB, {args.shards} shards")

    tok_config = TokenizerConfig(vocab_size=args.vocab)
    started = time.perf_counter()
    tokenizer = run_step(
        step="tokenizer",
        name="bench",
        config=tok_config,
        data_root=root / "data",
        inputs=[corpus],
        body=lambda ctx: train_tokenizer(tok_config, Path(corpus.path), ctx),
    )
    print(
        f"tokenizer: vocab {tokenizer.counts['vocab_size']}, trained in "
        f"{time.perf_counter() - started:.1f} s; held-out "
        f"{tokenizer.metrics['heldout.bytes_per_token']:.3f} bytes/token on "
        f"{tokenizer.counts['documents.heldout']} documents, round trip exact"
    )
    tokenizer_dir = Path(tokenizer.path, "tokenizer")

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import megatron.core.datasets.indexed_dataset  # noqa: F401
    print(f"(megatron.core import, once per process: {time.perf_counter() - started:.1f} s)")

    config = TokenizeConfig(executor="local")
    step_runs, bare_runs, fast_runs = [], [], []
    for attempt in range(args.repeat):
        started = time.perf_counter()
        done = run_step(
            step="tokenize",
            name="bench",
            config=config,
            data_root=root / "data",
            inputs=[tokenizer, corpus],
            body=lambda ctx: tokenize(config, tokenizer_dir, Path(corpus.path), ctx),
            force=attempt > 0,
        )
        step_runs.append((time.perf_counter() - started, done))
        file, batch = tokenizer_dir / "tokenizer.json", config.batch_documents
        bare_runs.append(bare(file, texts, batch, fast=False))
        fast_runs.append(bare(file, texts, batch, fast=True))
    step_s, done = min(step_runs, key=lambda run: run[0])
    bare_tokens, bare_s = min(bare_runs, key=lambda run: run[1])
    fast_tokens, fast_s = min(fast_runs, key=lambda run: run[1])
    step_tokens = done.counts["tokens.train"] + done.counts["tokens.valid"]
    documents = done.counts["documents.train"] + done.counts["documents.valid"]
    same = step_tokens - documents == bare_tokens == fast_tokens  # the step adds one EOD each
    cores = os.cpu_count() or 1
    print(f"tokens: {step_tokens} ({documents} end-of-document), same text tokens: {same}")
    print(f"best of {args.repeat}, {cores} cores:")
    shards_s = step_tokens / done.metrics["tokens_per_s"]
    rows = (
        ("orchard tokenize step, end to end", step_s, step_tokens),
        ("orchard tokenize step, shards only", shards_s, step_tokens),
        ("bare tokenizers encode_batch", bare_s, bare_tokens),
        ("bare tokenizers encode_batch_fast", fast_s, fast_tokens),
    )
    for label, seconds, tokens in rows:
        print(f"  {label:<36} {seconds:7.2f} s  {tokens / seconds:12,.0f} tokens/s")
    rate = step_tokens / step_s
    print(f"orchard step / bare encode_batch tokens/s:      {rate / (bare_tokens / bare_s):.3f}x")
    print(f"orchard step / bare encode_batch_fast tokens/s: {rate / (fast_tokens / fast_s):.3f}x")
    print(f"(work files in {root})")


if __name__ == "__main__":
    main()
