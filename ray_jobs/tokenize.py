"""The tokenize step: the corpus as token ids in Megatron's indexed dataset format.

Inputs: a tokenizer and the corpus (mix) manifest. The tokenizer is either the one the
tokenizer step trained (its manifest), or an imported base model's own (an import_model
manifest: its `tokenizer/`), so that continued pretraining and post-training of the base
see the tokens it knows. A base model's tokenizer must fit the model (no more tokens than
its embedding rows); its end-of-document token is `eod_token` when it has one, else its
own eos token, and its pad token is `pad_token` when it has one, else its own pad token,
else the end-of-document token (Megatron then pads with -1, outside any vocabulary, and
masks the padding out of the loss). Each input shard
(`documents/*.jsonl.gz`, in sorted order) becomes one output shard, written by
`megatron.core.datasets.indexed_dataset.IndexedDatasetBuilder`: per document, its
tokens followed by the end-of-document token (`add_item` + `end_document`), in input
order. Document text is encoded as plain text: a literal `<|endoftext|>` or `<|user|>`
inside a document is not a control token, so the only end-of-document ids in the data
are the ones this step appends.

Train/validation split: by a hash of the document id, `sha256(id)[:8] / 2**64 <
valid_fraction` goes to validation; when no document falls under the fraction, the one
with the lowest hash does. The tokenizer step holds out its documents by the same rule,
so with the same valid_fraction no validation document was seen by the tokenizer.

Shards run as Ray tasks when Ray is there (`executor="auto"`: a connected Ray, or
`RAY_ADDRESS`, e.g. inside a Ray job, and more than one shard), else in this process;
`tokenizers` spreads each batch over the cores either way. On a Ray cluster of several
nodes a task may run on a host that cannot see the driver's files: there each shard and
the tokenizer travel to the task through Ray's object store, and its .bin/.idx come back
the same way.

Output:
    train/<shard>.bin/.idx, valid/<shard>.bin/.idx   (a split without documents in a
                                                      shard has no files)
    datasets.json   {"format": "megatron-indexed-dataset",
                     "tokenizer": "tokenizer" (a copy of the Hugging Face tokenizer
                                  directory, relative to the step's directory),
                     "tokenizer_source": {"kind": "trained" | "base model", "source",
                                          "sha256" (of tokenizer.json), "vocab_size",
                                          "model_vocab_size" (a base model's)},
                     "vocab_size", "eod_id", "pad_id", "eod_token", "pad_token",
                     "dtype": "uint16" | "int32", "valid_fraction",
                     "train": [{"prefix": "train/00000", "tokens", "documents",
                                "source": "documents/00000.jsonl.gz"}, ...],
                     "valid": [... the same for valid/ ...],
                     "totals": {"train": {"tokens", "documents"}, "valid": {...}}}
                    Prefixes are relative to the step's directory, in shard order; tokens
                    count the end-of-document tokens.
The manifest's `facts` name the tokenizer: tokenizer_kind, tokenizer_source,
tokenizer_sha256, tokenizer_vocab_size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from orchard.documents import Document, document_shards, read_shard
from orchard.errors import OrchardError
from orchard.settings import Settings
from orchard.steps import Manifest, StepConfig, StepContext, StepOutput, StepSpec
from orchard.storage import is_uri

log = logging.getLogger("orchard.tokenize")

SPLITS = ("train", "valid")
DATASETS = "datasets.json"
TOKENIZER_DIR = "tokenizer"  # the Hugging Face directory of a tokenizer or import_model step
CORPUS_STEPS = ("mix", "curate")
TOKENIZER_STEPS = ("tokenizer", "import_model")  # a trained tokenizer, or a base model's
# Megatron's own rule (DType.optimal_dtype): token ids fit uint16 below this size.
UINT16_VOCAB_LIMIT = 65_500


class TokenizeConfig(StepConfig):
    valid_fraction: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Share of documents (by id hash) in the validation split (the "
        "tokenizer step's held-out documents for the same value).",
    )
    eod_token: str = Field("<|endoftext|>", description="Appended after every document.")
    pad_token: str = Field("<|pad|>", description="Recorded as pad_id for later stages.")
    executor: Literal["auto", "local", "ray"] = Field(
        "auto",
        description="Where shards run: Ray tasks, this process, or auto (Ray when it is "
        "connected or RAY_ADDRESS is set, and there is more than one shard).",
    )
    cpus_per_task: int = Field(1, ge=1, description="CPUs per Ray task (tokenizer threads).")
    batch_documents: int = Field(256, ge=1, description="Documents encoded per batch.")
    not_in_key: ClassVar[frozenset[str]] = frozenset(
        {"executor", "cpus_per_task", "batch_documents"}
    )


def vocab_dtype(vocab_size: int) -> str:
    """The token dtype of the .bin files, as Megatron's preprocess_data chooses it."""
    return "uint16" if vocab_size < UINT16_VOCAB_LIMIT else "int32"


def split_point(key: str) -> float:
    """Where a document falls in [0, 1): the first 8 bytes of sha256(id)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


# -- one shard --------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """One input file to tokenize into `<out>/<split>/<name>.bin/.idx`."""

    name: str
    source: str
    out: str
    tokenizer_file: str
    eod_id: int
    dtype: str
    valid_fraction: float
    batch_documents: int
    force_valid: tuple[int, ...] = ()  # line numbers sent to valid whatever their hash


@dataclass
class ShardResult:
    name: str
    documents: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    bytes: int = 0
    # (split point, line) of the training document with the lowest hash.
    lowest_train: tuple[float, int] | None = None
    error: str | None = None


def _batches(docs: Iterator[Document], size: int) -> Iterator[list[Document]]:
    batch: list = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _builder_class():
    """Megatron's IndexedDatasetBuilder (importing megatron.core takes seconds, once)."""
    with warnings.catch_warnings():  # "Transformer Engine and Apex are not installed"
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
    return IndexedDatasetBuilder


def tokenize_shard(shard: Shard) -> ShardResult:
    """Tokenize one input file into its train and valid indexed datasets."""
    import numpy
    import torch
    from tokenizers import Tokenizer

    IndexedDatasetBuilder = _builder_class()  # noqa: N806
    result = ShardResult(shard.name)
    tokenizer = Tokenizer.from_file(shard.tokenizer_file)
    tokenizer.encode_special_tokens = True  # document text is text, never control tokens
    dtype = getattr(numpy, shard.dtype)
    prefixes = {split: Path(shard.out, split, shard.name) for split in SPLITS}
    builders = {}
    for split, prefix in prefixes.items():
        prefix.parent.mkdir(parents=True, exist_ok=True)
        builders[split] = IndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)
    eod = [shard.eod_id]
    try:
        for batch in _batches(read_shard(Path(shard.source)), shard.batch_documents):
            encodings = tokenizer.encode_batch_fast([doc.text for doc in batch])
            for doc, encoding in zip(batch, encodings, strict=True):
                point = split_point(doc.key)
                valid = point < shard.valid_fraction or doc.line in shard.force_valid
                split = "valid" if valid else "train"
                ids = numpy.array(encoding.ids + eod, dtype=numpy.int64)
                builders[split].add_item(torch.from_numpy(ids))
                builders[split].end_document()
                result.documents[split] += 1
                result.tokens[split] += len(ids)
                result.bytes += len(doc.text.encode("utf-8"))
                if not valid and (result.lowest_train is None or point < result.lowest_train[0]):
                    result.lowest_train = (point, doc.line)
    except OrchardError as error:
        result.error = str(error)
    finally:
        for split, builder in builders.items():
            builder.finalize(f"{prefixes[split]}.idx")
    for split, prefix in prefixes.items():
        if result.error or not result.documents[split]:
            Path(f"{prefix}.bin").unlink()
            Path(f"{prefix}.idx").unlink()
    return result


def _ray_task(shard: Shard, threads: int) -> ShardResult:
    # tokenizers sizes its thread pool once per process from RAYON_NUM_THREADS: keep a
    # task to the CPUs Ray gave it.
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
    return tokenize_shard(shard)


# -- the step ---------------------------------------------------------------------------


def tokenize_shipped(
    shard: Shard, source: bytes, tokenizer_json: bytes, threads: int
) -> tuple[ShardResult, dict[str, bytes]]:
    """`shard` on a node that cannot see the driver's files (another host of the
    cluster): the input file and the tokenizer arrive as arguments (through Ray's object
    store), and the .bin/.idx files go back in the result (relative path -> bytes)."""
    with tempfile.TemporaryDirectory(prefix="orchard-tokenize-") as tmp:
        local = Path(tmp, Path(shard.source).name)
        local.write_bytes(source)
        tokenizer_file = Path(tmp, "tokenizer.json")
        tokenizer_file.write_bytes(tokenizer_json)
        out = Path(tmp, "out")
        here = replace(shard, source=str(local), out=str(out), tokenizer_file=str(tokenizer_file))
        result = _ray_task(here, threads)
        files = {
            path.relative_to(out).as_posix(): path.read_bytes()
            for path in sorted(out.rglob("*"))
            if path.is_file()
        }
    return result, files


def _spans_hosts(ray) -> bool:
    """True when the Ray cluster has more than one node: its tasks may run where the
    driver's files are not."""
    return sum(1 for node in ray.nodes() if node["Alive"]) > 1


def _use_ray(config: TokenizeConfig, shards: int) -> bool:
    if config.executor != "auto":
        return config.executor == "ray"
    if shards < 2:
        return False
    ray = sys.modules.get("ray")
    connected = bool(ray and ray.is_initialized())
    # RAY_ADDRESS: set by Ray for a job's entrypoint, and what ray.init() itself reads.
    return connected or bool(os.environ.get("RAY_ADDRESS"))


def _run_shards(shards: list[Shard], use_ray: bool, cpus_per_task: int) -> list[ShardResult]:
    if not use_ray:
        return [tokenize_shard(shard) for shard in shards]
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(log_to_driver=False)  # inside a Ray job: joins the job's cluster
    try:
        if not _spans_hosts(ray):
            task = ray.remote(num_cpus=cpus_per_task)(_ray_task)
            log.info("tokenize: %d shards as Ray tasks", len(shards))
            return ray.get([task.remote(shard, cpus_per_task) for shard in shards])
        shipped = ray.remote(num_cpus=cpus_per_task)(tokenize_shipped)
        log.info("tokenize: %d shards as Ray tasks on any node (data shipped)", len(shards))
        tokenizer_json = ray.put(Path(shards[0].tokenizer_file).read_bytes())
        refs = [
            shipped.remote(shard, Path(shard.source).read_bytes(), tokenizer_json, cpus_per_task)
            for shard in shards
        ]
        results = []
        for shard, ref in zip(shards, refs, strict=True):
            result, files = ray.get(ref)
            for name, data in files.items():
                target = Path(shard.out, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            results.append(result)
        return results
    finally:
        if started_here:
            ray.shutdown()


def _check(results: list[ShardResult]) -> None:
    for result in results:
        if result.error:
            raise OrchardError(result.error)


@dataclass(frozen=True)
class TokenizerSource:
    """Which tokenizer a corpus is tokenized with: a trained one or a base model's."""

    directory: Path
    """Its Hugging Face directory (`tokenizer.json` + `tokenizer_config.json`)."""
    kind: Literal["trained", "base model"]
    source: str
    """The tokenizer step's output, or the base model's source and name."""
    model_vocab_size: int | None = None
    """A base model's embedding rows: its tokenizer must not have more tokens."""


def tokenizer_source(manifest: Manifest) -> TokenizerSource:
    """The tokenizer of a tokenizer step's or an import_model step's manifest."""
    directory = Path(manifest.path) / TOKENIZER_DIR
    if manifest.step == "tokenizer":
        return TokenizerSource(directory, "trained", manifest.ref.path)
    if manifest.step != "import_model":
        raise OrchardError(
            f"a {manifest.step} output has no tokenizer to use: pass a tokenizer step's or "
            "an imported base model's (import_model) manifest"
        )
    if not (directory / "tokenizer.json").is_file():
        raise OrchardError(
            f"the imported model at {manifest.path} has no {TOKENIZER_DIR}/tokenizer.json: "
            "import it again (orchard_import with Rebuild)"
        )
    facts = manifest.facts
    name = facts.get("display_name") or manifest.name
    return TokenizerSource(
        directory,
        "base model",
        f"{name} ({facts.get('source', manifest.ref.path)}, sha256 {facts.get('sha256', '?')})",
        int(manifest.counts["vocab_size"]),
    )


@dataclass(frozen=True)
class TokenizerInfo:
    directory: Path
    vocab_size: int
    eod_id: int
    pad_id: int
    dtype: str
    eod_token: str
    pad_token: str
    sha256: str


def _own_special_token(directory: Path, role: str) -> str | None:
    """The tokenizer's own `eos_token` / `pad_token` (tokenizer_config.json), if any."""
    try:
        config = json.loads((directory / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return None
    token = config.get(role)
    return token.get("content") if isinstance(token, dict) else token


def tokenizer_info(
    directory: Path, config: TokenizeConfig, source: TokenizerSource | None = None
) -> TokenizerInfo:
    """The tokenizer's size, dtype and special ids; a base model's tokenizer falls back on
    its own eos/pad tokens and must fit the model."""
    from tokenizers import Tokenizer

    path = directory / "tokenizer.json"
    if not path.is_file():
        raise OrchardError(
            f"no tokenizer.json in {directory}: pass the manifest of a finished tokenizer "
            "step, or of an imported base model"
        )
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # noqa: BLE001 - any parse failure of the file
        raise OrchardError(
            f"{path} is not a tokenizer ({error}): rebuild the tokenizer step"
        ) from None
    base = source is not None and source.kind == "base model"
    eod, pad = config.eod_token, config.pad_token
    if base:  # a base model's own special tokens where it lacks Orchard's
        if tokenizer.token_to_id(eod) is None:
            eod = _own_special_token(directory, "eos_token") or eod
        if tokenizer.token_to_id(pad) is None:
            pad = _own_special_token(directory, "pad_token") or eod
    ids = {}
    for token in (eod, pad):
        ids[token] = tokenizer.token_to_id(token)
        if ids[token] is None:
            raise OrchardError(
                f"the tokenizer in {directory} has no {token} token: train it with Orchard's "
                "tokenizer step, or set eod_token/pad_token to tokens it has"
            )
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    if base and source.model_vocab_size is not None and vocab_size > source.model_vocab_size:
        raise OrchardError(
            f"the tokenizer in {directory} has {vocab_size} tokens but the base model only "
            f"{source.model_vocab_size} embeddings: use the base model's own tokenizer"
        )
    return TokenizerInfo(
        directory=directory,
        vocab_size=vocab_size,
        eod_id=ids[eod],
        pad_id=ids[pad],
        dtype=vocab_dtype(vocab_size),
        eod_token=eod,
        pad_token=pad,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def tokenize(
    config: TokenizeConfig,
    tokenizer_dir: Path,
    corpus: Path,
    ctx: StepContext,
    source: TokenizerSource | None = None,
) -> StepOutput:
    """The step body: every corpus shard into train/ and valid/, then datasets.json.
    `source` says where the tokenizer comes from (default: a trained one in tokenizer_dir)."""
    source = source or TokenizerSource(tokenizer_dir, "trained", str(tokenizer_dir))
    info = tokenizer_info(tokenizer_dir, config, source)
    files = document_shards(corpus, needed_from="mix (or curate)")
    shards = [
        Shard(
            name=f"{index:05d}",
            source=str(path),
            out=str(ctx.out),
            tokenizer_file=str(tokenizer_dir / "tokenizer.json"),
            eod_id=info.eod_id,
            dtype=info.dtype,
            valid_fraction=config.valid_fraction,
            batch_documents=config.batch_documents,
        )
        for index, path in enumerate(files)
    ]
    use_ray = _use_ray(config, len(shards))
    if not use_ray:
        _builder_class()  # a one-time import, not tokenizing: off the clock
    started = time.monotonic()
    results = _run_shards(shards, use_ray, config.cpus_per_task)
    _check(results)
    documents = sum(sum(r.documents.values()) for r in results)
    if not documents:
        raise OrchardError(
            f"the corpus at {corpus} has no documents: check the curate and mix steps"
        )
    valid = sum(r.documents["valid"] for r in results)
    if config.valid_fraction > 0 and not valid:
        if documents < 2:
            log.warning("one document only: no validation split")
        else:
            # No id hash fell under the fraction: the lowest one goes to validation.
            index, (_, line) = min(
                ((i, r.lowest_train) for i, r in enumerate(results) if r.lowest_train),
                key=lambda pair: pair[1][0],
            )
            log.warning(
                "no document falls under valid_fraction %s: validating on the one with "
                "the lowest id hash (%s line %d)",
                config.valid_fraction,
                shards[index].source,
                line,
            )
            shards[index] = replace(shards[index], force_valid=(line,))
            results[index] = tokenize_shard(shards[index])
            _check(results[index : index + 1])
    seconds = time.monotonic() - started

    entries: dict[str, list[dict]] = {}
    for split in SPLITS:
        entries[split] = [
            {
                "prefix": f"{split}/{result.name}",
                "tokens": result.tokens[split],
                "documents": result.documents[split],
                "source": str(Path(shard.source).relative_to(corpus)),
            }
            for shard, result in zip(shards, results, strict=True)
            if result.documents[split]
        ]
    totals = {
        split: {kind: sum(e[kind] for e in entries[split]) for kind in ("tokens", "documents")}
        for split in SPLITS
    }
    described = {
        "kind": source.kind,
        "source": source.source,
        "sha256": info.sha256,
        "vocab_size": info.vocab_size,
        "model_vocab_size": source.model_vocab_size,
    }
    datasets = {
        "format": "megatron-indexed-dataset",
        # A copy inside this output (relative path): pretraining on another host, or
        # reading the output from object storage, finds it without the tokenizer step's.
        "tokenizer": TOKENIZER_DIR,
        "tokenizer_source": described,
        "vocab_size": info.vocab_size,
        "eod_id": info.eod_id,
        "pad_id": info.pad_id,
        "eod_token": info.eod_token,
        "pad_token": info.pad_token,
        "dtype": info.dtype,
        "valid_fraction": config.valid_fraction,
        "train": entries["train"],
        "valid": entries["valid"],
        "totals": totals,
    }
    shutil.copytree(tokenizer_dir, ctx.out / TOKENIZER_DIR)
    (ctx.out / DATASETS).write_text(json.dumps(datasets, indent=2))

    tokens = sum(total["tokens"] for total in totals.values())
    corpus_bytes = sum(r.bytes for r in results)
    figures = {f"{kind}.{split}": n for split in SPLITS for kind, n in totals[split].items()}
    log.info(
        "tokenize: %d tokens (%d documents) in %.1f s, %d shards, with the %s tokenizer %s",
        tokens,
        documents,
        seconds,
        len(shards),
        source.kind,
        source.source,
    )
    return StepOutput(
        counts=figures | {"shards": len(shards), "bytes": corpus_bytes},
        metrics={k: float(v) for k, v in figures.items()}
        | {
            "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
            "bytes_per_token": corpus_bytes / tokens if tokens else 0.0,
        },
        facts={
            "tokenizer_kind": source.kind,
            "tokenizer_source": source.source,
            "tokenizer_sha256": info.sha256,
            "tokenizer_vocab_size": str(info.vocab_size),
        },
    )


def base_tokenizer_manifest(given: str) -> str:
    """The manifest.json of the imported base model whose tokenizer `given` names: its
    manifest, its output directory, or that directory's tokenizer/ or hf/ (a local path or
    an s3:// location). An OrchardError (one line) for anything else."""
    from orchard.storage import join, storage_for

    location = given.strip().rstrip("/").removesuffix("/manifest.json")
    for directory in (location, location.rsplit("/", 1)[0]):  # the output, or a dir in it
        if is_uri(directory):
            store = storage_for(directory)
            found = store.is_file(join(directory, "manifest.json"))
        else:
            found = (Path(directory) / "manifest.json").is_file()
        if found:
            break
    else:
        raise OrchardError(
            f"no imported model at {given}: give an import_model manifest (or its directory, "
            "or its tokenizer/ directory); run orchard_import first"
        )
    manifest = Manifest.read(directory)
    if manifest.step != "import_model":
        raise OrchardError(
            f"{given} belongs to a {manifest.step} output, not an imported base model: give "
            "an import_model manifest (orchard_import)"
        )
    return join(directory, "manifest.json")


def inputs_of(inputs: list[Manifest]) -> tuple[Manifest, Manifest]:
    """(tokenizer manifest, corpus manifest) among a step's inputs; the tokenizer's is a
    tokenizer step's or an imported base model's (import_model)."""
    tokenizers = [m for m in inputs if m.step in TOKENIZER_STEPS]
    corpora = [m for m in inputs if m.step in CORPUS_STEPS]
    if len(tokenizers) != 1 or len(corpora) != 1:
        raise OrchardError(
            "the tokenize step needs two --input manifests: one tokenizer (a tokenizer step, "
            "or an imported base model) and one corpus (mix); got "
            f"{', '.join(m.step for m in inputs) or 'none'}"
        )
    return tokenizers[0], corpora[0]


STEP = StepSpec("tokenize", TokenizeConfig, default_name="corpus", doc=__doc__)


def run(
    config: TokenizeConfig,
    inputs: list[Manifest],
    settings: Settings,
    name: str = STEP.default_name,
    force: bool = False,
) -> Manifest:
    """Tokenize the corpus among `inputs` with the tokenizer among them."""
    tokenizer, corpus = inputs_of(inputs)
    source = tokenizer_source(tokenizer)
    return STEP.run(
        settings,
        config,
        lambda ctx: tokenize(config, source.directory, Path(corpus.path), ctx, source),
        inputs,
        name,
        force,
    )


def main(argv: list[str] | None = None) -> int:
    return STEP.main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
