"""The tokenizer step: train a byte-level BPE tokenizer on the curated corpus.

Hugging Face `tokenizers` trains a byte-level BPE (ByteLevel pre-tokenizer without a
prefix space, ByteLevel decoder, no normaliser: curate already composes Unicode to NFC,
and a normaliser here would change text that is not NFC, so decoding would not give it
back). The special tokens come first, in this order, so their ids are fixed:
`<|endoftext|>` 0 (end of document, end of a chat turn, EOS), `<|system|>` 1,
`<|user|>` 2, `<|assistant|>` 3, `<|pad|>` 4.

A deterministic share of the documents is held out of training (by a hash of the
document id: `sha256(id)[:8] / 2**64 < valid_fraction`; when no document falls under it,
the one with the lowest hash). The tokenize step splits off its validation documents by
the same rule, so with the same `valid_fraction` the tokenizer never saw them. On the
held-out documents the step measures compression (UTF-8 bytes per token) and proves the
round trip, `decode(encode(text)) == text` for every one, through the saved tokenizer as
`transformers.AutoTokenizer` loads it. A single mismatch fails the step and nothing is
published.

Output:
    tokenizer/     a Hugging Face tokenizer directory (`AutoTokenizer.from_pretrained`,
                   offline): tokenizer.json, tokenizer_config.json, chat_template.jinja,
                   and tokenizer_metadata.json so Megatron's
                   `MegatronTokenizer.from_pretrained(dir)` loads it as well
    report.json    vocabulary, special token ids, training and held-out figures
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator

from orchard.chat_format import (
    CHAT_TEMPLATE,
    EOS_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    train_bpe,
    wrap,
)
from orchard.documents import Document, document_shards, read_shard
from orchard.errors import OrchardError
from orchard.settings import Settings
from orchard.steps import Manifest, StepConfig, StepContext, StepOutput, StepSpec

log = logging.getLogger("orchard.tokenizer")

BYTE_TOKENS = 256
# The byte alphabet, the special tokens and at least one merge.
MIN_VOCAB_SIZE = BYTE_TOKENS + len(SPECIAL_TOKENS) + 1
# Real runs pick one of these; multiples of 128 keep Megatron from padding the vocabulary.
VOCAB_PRESETS = {"demo": 8_192, "50k": 50_304, "100k": 100_352, "256k": 256_000}
TOKENIZER_DIR = "tokenizer"
REPORT = "report.json"
CORPUS_STEPS = ("mix", "curate")


class TokenizerConfig(StepConfig):
    vocab_size: int = Field(
        VOCAB_PRESETS["demo"],
        description="Vocabulary size, special tokens included, or a preset: "
        + ", ".join(f"{name} ({size})" for name, size in VOCAB_PRESETS.items()),
    )
    min_frequency: int = Field(2, ge=1, description="Fewest occurrences for a merge.")
    valid_fraction: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="Share of documents (by id hash) held out of training; compression and "
        "the round trip are measured on them. The tokenize step's validation split with "
        "the same value is the same documents.",
    )
    batch_documents: int = Field(1_000, ge=1, description="Documents per training batch.")
    not_in_key: ClassVar[frozenset[str]] = frozenset({"batch_documents"})

    @field_validator("vocab_size", mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in VOCAB_PRESETS:
            return VOCAB_PRESETS[value.strip().lower()]
        return value

    @field_validator("vocab_size")
    @classmethod
    def _room_for_special_tokens(cls, value: int) -> int:
        if value < MIN_VOCAB_SIZE:
            raise ValueError(
                f"vocab_size {value} is too small: a byte-level BPE needs its {BYTE_TOKENS} "
                f"byte tokens and the {len(SPECIAL_TOKENS)} special tokens "
                f"({', '.join(SPECIAL_TOKENS)}) plus merges, so use at least {MIN_VOCAB_SIZE} "
                f"(presets: {', '.join(VOCAB_PRESETS)})"
            )
        return value


# -- the corpus ---------------------------------------------------------------------------


def split_point(key: str) -> float:
    """Where a document falls in [0, 1): the first 8 bytes of sha256(id). The tokenize
    step splits train/valid by the same rule (and the same lowest-hash fallback)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def is_heldout(key: str, fraction: float) -> bool:
    return split_point(key) < fraction


def _scan(files: list[Path], fraction: float) -> tuple[int, int, tuple[Path, int] | None]:
    """(documents, held out by hash, position of the lowest-hash document)."""
    total = heldout = 0
    lowest: tuple[float, tuple[Path, int]] | None = None
    for path in files:
        for doc in read_shard(path):
            total += 1
            point = split_point(doc.key)
            heldout += point < fraction
            if lowest is None or point < lowest[0]:
                lowest = (point, (doc.shard, doc.line))
    return total, heldout, lowest[1] if lowest else None


# -- the tokenizer ------------------------------------------------------------------------


def train(config: TokenizerConfig, texts: Iterable[list[str]]):
    """A trained byte-level BPE; `texts` yields batches of documents."""
    return train_bpe(texts, vocab_size=config.vocab_size, min_frequency=config.min_frequency)


def save(tokenizer, directory: Path) -> None:
    """Save as a Hugging Face tokenizer directory with Orchard's chat template, plus the
    metadata file Megatron's tokenizer loader looks for beside it."""
    wrap(tokenizer).save_pretrained(str(directory))
    megatron = {
        "library": "huggingface",
        "class_name": None,
        "class_path": None,
        "model_type": "gpt",
        "chat_template": CHAT_TEMPLATE,
    }
    (directory / "tokenizer_metadata.json").write_text(json.dumps(megatron, indent=2))


def load(directory: Path):
    """The tokenizer as every later stage loads it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


@dataclass
class HeldOut:
    documents: int
    bytes: int
    tokens: int

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / self.tokens if self.tokens else 0.0


def evaluate(tokenizer, documents: list[Document], batch: int = 256) -> HeldOut:
    """Compression on `documents` and the round trip on each; a mismatch is an OrchardError.

    `tokenizer` is a transformers tokenizer: the same object TRL and serving use.
    """
    figures = HeldOut(documents=len(documents), bytes=0, tokens=0)
    failures: list[tuple[Document, str]] = []
    for start in range(0, len(documents), batch):
        chunk = documents[start : start + batch]
        ids = tokenizer([doc.text for doc in chunk], add_special_tokens=False)["input_ids"]
        for doc, doc_ids, decoded in zip(chunk, ids, tokenizer.batch_decode(ids), strict=True):
            figures.bytes += len(doc.text.encode("utf-8"))
            figures.tokens += len(doc_ids)
            if decoded != doc.text:
                failures.append((doc, decoded))
    if failures:
        doc, decoded = failures[0]
        at = next(
            (i for i, (a, b) in enumerate(zip(doc.text, decoded, strict=False)) if a != b),
            min(len(doc.text), len(decoded)),
        )
        raise OrchardError(
            f"the tokenizer does not round-trip: decode(encode(text)) != text on "
            f"{len(failures)} of {len(documents)} held-out documents (first: {doc.key!r} at "
            f"character {at}: {doc.text[at : at + 20]!r} came back as "
            f"{decoded[at : at + 20]!r}); nothing was published. A byte-level BPE without "
            "a normaliser is lossless: check the tokenizer's normaliser and decoder"
        )
    return figures


# -- the step -----------------------------------------------------------------------------


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def train_tokenizer(config: TokenizerConfig, corpus: Path, ctx: StepContext) -> StepOutput:
    """The step body: hold out, train, save, then measure and prove the round trip."""
    files = document_shards(corpus, needed_from="mix (or curate)")
    total, by_hash, lowest = _scan(files, config.valid_fraction)
    if total < 2:
        raise OrchardError(
            f"the corpus at {corpus} has {total} document(s): the tokenizer needs at least "
            "two, one to train on and one held out; check the curate and mix steps"
        )
    if not by_hash:
        log.warning(
            "no document falls under valid_fraction %s: holding out the one with the "
            "lowest id hash",
            config.valid_fraction,
        )

    heldout: list[Document] = []
    trained = {"documents": 0, "bytes": 0}

    def training_texts() -> Iterator[str]:
        for path in files:
            for doc in read_shard(path):
                if is_heldout(doc.key, config.valid_fraction) or (
                    not by_hash and (doc.shard, doc.line) == lowest
                ):
                    heldout.append(doc)
                    continue
                trained["documents"] += 1
                trained["bytes"] += len(doc.text.encode("utf-8"))
                yield doc.text

    started = time.monotonic()
    tokenizer = train(config, _batches(training_texts(), config.batch_documents))
    train_seconds = time.monotonic() - started
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    if vocab < config.vocab_size:
        log.warning(
            "the corpus allowed %d tokens of the %d asked for (too few distinct merges)",
            vocab,
            config.vocab_size,
        )
    directory = ctx.out / TOKENIZER_DIR
    save(tokenizer, directory)
    loaded = load(directory)
    ids = {token: loaded.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    if list(ids.values()) != list(range(len(SPECIAL_TOKENS))):
        raise OrchardError(f"special tokens got unexpected ids {ids}: the tokenizer is broken")
    figures = evaluate(loaded, heldout)
    report = {
        "vocab_size": vocab,
        "vocab_size_asked": config.vocab_size,
        "special_tokens": ids,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "train": trained,
        "heldout": {
            "rule": f"sha256(id)[:8] / 2**64 < {config.valid_fraction}",
            "documents": figures.documents,
            "bytes": figures.bytes,
            "tokens": figures.tokens,
            "bytes_per_token": figures.bytes_per_token,
            "roundtrip_exact": figures.documents,
        },
    }
    (ctx.out / REPORT).write_text(json.dumps(report, indent=2))
    log.info(
        "tokenizer: %d tokens, %.3f bytes/token on %d held-out documents, round trip exact",
        vocab,
        figures.bytes_per_token,
        figures.documents,
    )
    return StepOutput(
        counts={
            "vocab_size": vocab,
            "documents.train": trained["documents"],
            "documents.heldout": figures.documents,
            "bytes.train": trained["bytes"],
            "bytes.heldout": figures.bytes,
            "tokens.heldout": figures.tokens,
            "roundtrip_failures": 0,
        },
        metrics={
            "heldout.bytes_per_token": figures.bytes_per_token,
            "heldout.roundtrip_exact": 1.0,
            "vocab_size": float(vocab),
            "train_seconds": round(train_seconds, 3),
        },
        artifacts=[TOKENIZER_DIR],
    )


def corpus_of(inputs: list[Manifest]) -> Manifest:
    corpora = [m for m in inputs if m.step in CORPUS_STEPS]
    if len(corpora) != 1:
        raise OrchardError(
            f"the tokenizer step needs exactly one corpus among its --input (a mix or curate "
            f"manifest), got {len(corpora)}: {', '.join(m.step for m in inputs) or 'none'}"
        )
    return corpora[0]


STEP = StepSpec("tokenizer", TokenizerConfig, default_name="tokenizer", doc=__doc__)


def run(
    config: TokenizerConfig,
    inputs: list[Manifest],
    settings: Settings,
    name: str = STEP.default_name,
    force: bool = False,
) -> Manifest:
    """Train the tokenizer on the corpus among `inputs` (a mix manifest)."""
    corpus = Path(corpus_of(inputs).path)
    return STEP.run(
        settings, config, lambda ctx: train_tokenizer(config, corpus, ctx), inputs, name, force
    )


def main(argv: list[str] | None = None) -> int:
    return STEP.main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
