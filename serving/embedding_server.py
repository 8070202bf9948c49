"""The embedding replicas: one sentence-transformers model (orchard.knowledge.embeddings,
the packaged all-MiniLM-L6-v2 unless `ServingConfig.embedding_model` names another
directory), with Serve's dynamic batching: concurrent requests are embedded together, up
to `EMBED_BATCH` texts' requests per call, waiting at most `EMBED_WAIT_S` for company.

The model loads on the first request (on a worker thread), so an idle stack does not pay
for it. `embed` returns {"model", "dimension", "vectors", "prompt_tokens"}.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve

from serving.config import ServingConfig

EMBED_BATCH = 32  # requests per batched call
EMBED_WAIT_S = 0.01


@serve.deployment(name="EmbeddingServer")
class EmbeddingServer:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = ServingConfig(**config)
        self._embedder = None
        self._loading = asyncio.Lock()

    async def _model(self):
        async with self._loading:
            if self._embedder is None:
                from orchard.knowledge.embeddings import load_embedder

                def load():
                    if self.config.torch_threads:
                        import torch

                        torch.set_num_threads(self.config.torch_threads)
                    return load_embedder(self.config.embedding_model)

                self._embedder = await asyncio.get_running_loop().run_in_executor(None, load)
        return self._embedder

    @serve.batch(max_batch_size=EMBED_BATCH, batch_wait_timeout_s=EMBED_WAIT_S)
    async def _embed_batch(self, requests: list[list[str]]) -> list[dict[str, Any]]:
        embedder = await self._model()
        texts = [text for request in requests for text in request]

        def run():
            vectors = embedder.embed(texts).tolist()
            tokens = [embedder.count_tokens(request) for request in requests]
            return vectors, tokens

        vectors, tokens = await asyncio.get_running_loop().run_in_executor(None, run)
        answers, start = [], 0
        for request, count in zip(requests, tokens, strict=True):
            answers.append(
                {
                    "model": embedder.model.name,
                    "dimension": embedder.model.dimension,
                    "vectors": vectors[start : start + len(request)],
                    "prompt_tokens": count,
                }
            )
            start += len(request)
        return answers

    async def embed(self, texts: list[str]) -> dict[str, Any]:
        return await self._embed_batch(texts)

    async def describe(self) -> dict[str, Any]:
        embedder = await self._model()
        return {"model": embedder.model.name, "dimension": embedder.model.dimension}
