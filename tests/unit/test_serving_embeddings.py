"""The /v1/embeddings request and response shapes (the route itself runs in
tests/integration/test_serving.py, on a real Serve application)."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from pydantic import ValidationError

from orchard.knowledge.embeddings import DEFAULT_MODEL_NAME, model_name, packaged_model_dir
from serving import openai_api as oa


def test_a_request_takes_text_and_refuses_what_it_cannot_honour():
    assert oa.EmbeddingRequest(model="m", input="one").texts == ["one"]
    assert oa.EmbeddingRequest(model="m", input=["a", "b"]).texts == ["a", "b"]
    for bad, says in [
        ({"input": [1, 2, 3]}, "token arrays"),
        ({"input": [[1, 2]]}, "token arrays"),
        ({"input": []}, "empty list"),
        ({"input": ["ok", ""]}, "must not be empty"),
        ({"input": ["x"] * (oa.MAX_EMBEDDING_INPUTS + 1)}, "at most 2048"),
        ({"input": "x", "encoding_format": "int8"}, "float"),
    ]:
        with pytest.raises(ValidationError, match=says):
            oa.EmbeddingRequest(model="m", **bad)
    with pytest.raises(oa.OpenAIError, match="dimensions") as caught:
        oa.EmbeddingRequest(model="m", input="x", dimensions=8).check_dimensions(384)
    assert caught.value.status == 400 and caught.value.param == "dimensions"
    oa.EmbeddingRequest(model="m", input="x", dimensions=384).check_dimensions(384)


def test_base64_is_little_endian_float32_as_openai_sends_it():
    vectors = [[0.5, -1.25, 3.0], [0.0, 1.0, -0.125]]
    body = oa.embedding_response("m", vectors, 7, "base64")
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]]
    assert np.array_equal(decoded, vectors)
    assert body["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    assert oa.embedding_response("m", vectors, 7, "float")["data"][1]["embedding"] == vectors[1]


def test_the_served_model_is_named_without_loading_it(tmp_path):
    assert model_name() == model_name(packaged_model_dir()) == DEFAULT_MODEL_NAME
    assert model_name(tmp_path / "my-embedder") == "my-embedder"
