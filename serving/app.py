"""The Ray Serve application: an OpenAI-compatible ingress in front of model replicas.

    HTTP ──> OpenAIIngress (FastAPI) ──handle, multiplexed_model_id=version──> ModelServer
             validates, resolves `model`                                      engine per version
             to a version, SSE                                                (continuous batching)
                       └── /v1/embeddings ──handle──> EmbeddingServer (sentence-transformers,
                                                      Serve's dynamic batching)

`OpenAIIngress` (serving/ingress.py) is light, no torch: it validates, maps the `model`
field to a registered version and streams Server-Sent Events. `ModelServer`
(serving/model_server.py) holds several versions per replica through Serve's model
multiplexing and runs one continuous-batching engine (serving/engine.py) per version.
A Serve config file names `serving.app:build_app`; serving/config.py writes it.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from serving.config import ServingConfig
from serving.embedding_server import EmbeddingServer
from serving.ingress import OpenAIIngress
from serving.model_server import ModelServer


def build_app(args: dict[str, Any]) -> serve.Application:
    """The application builder a Serve config file names (`serving.app:build_app`)."""
    config = ServingConfig(**args).model_dump(mode="json")
    return OpenAIIngress.bind(ModelServer.bind(config), config, EmbeddingServer.bind(config))
