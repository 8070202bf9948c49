"""The embedder: the packaged all-MiniLM-L6-v2 loads offline and embeds by meaning; a
directory that is not a model is refused with the setting to fix."""

from __future__ import annotations

import numpy as np
import pytest

from orchard.knowledge.embeddings import (
    DEFAULT_MODEL_NAME,
    EmbeddingModelError,
    load_embedder,
    packaged_model_dir,
)
from orchard.settings import load_settings


@pytest.fixture(scope="module")
def embedder():
    return load_embedder()


def test_the_packaged_model_embeds_by_meaning(embedder):
    assert embedder.model.name == DEFAULT_MODEL_NAME
    assert embedder.model.dimension == 384
    assert embedder.directory == packaged_model_dir()
    vectors = embedder.embed(
        [
            "How do I read a JSON file in Python?",
            "Parsing JSON documents from disk with the json module",
            "The recipe needs two eggs and a cup of flour",
        ]
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    related, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert related > unrelated + 0.3
    assert embedder.embed([]).shape == (0, 384)


def test_the_embedder_is_loaded_once_per_directory(embedder):
    assert load_embedder() is embedder
    assert load_embedder(packaged_model_dir()) is embedder


def test_a_directory_that_is_no_model_is_refused(tmp_path):
    with pytest.raises(EmbeddingModelError, match="ORCHARD_EMBEDDING_MODEL"):
        load_embedder(tmp_path)


def test_the_model_is_a_setting(clean_env, monkeypatch, tmp_path):
    monkeypatch.setenv("ORCHARD_EMBEDDING_MODEL", str(tmp_path))
    assert load_settings().embedding_model == tmp_path
