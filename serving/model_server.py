"""The model replicas: one engine per resident model version.

Each version runs on vLLM (serving/vllm_engine.py) or on the hand-written engine
(serving/engine.py), as `choose_engine` decides from its config (docs/serving.md, "Engines").
`ModelServer` holds up to MAX_RESIDENT_VERSIONS versions per replica with Serve's model
multiplexing (`@serve.multiplexed`): the ingress calls it with
`multiplexed_model_id=<version>`, Serve routes the call to a replica that has that version
loaded, and a replica without it downloads and loads it first (LRU eviction beyond the
limit; streams already running on an evicted version finish, they hold their engine).

`generate` streams lists of events (several tokens per Ray message under load):
    {"event": "start", "prompt_tokens": int}                 once, first
    {"event": "delta", "index": i, "text": str, "tokens": k, "finish_reason": str|None,
     "logprobs": [OpenAI chat logprob entries] (only when asked for)}
    {"event": "error", ...OpenAIError fields}                instead of "start"
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ray import serve

from serving import openai_api as oa
from serving.config import MAX_RESIDENT_VERSIONS, ServingConfig
from serving.loader import hf_dirs

logger = logging.getLogger("ray.serve")


@serve.deployment(name="ModelServer")
class ModelServer:
    def __init__(self, config: dict[str, Any]) -> None:
        # torch is imported with the first model: an idle replica stays ~170 MiB smaller.
        self.config = ServingConfig(**config)
        replica = serve.get_replica_context().replica_id.unique_id
        self.replica = f"{socket.gethostname()}/{replica}"  # the X-Orchard-Replica header

    def _device(self) -> str:
        import torch

        if self.config.torch_threads:
            torch.set_num_threads(self.config.torch_threads)
        if self.config.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.config.device

    @serve.multiplexed(max_num_models_per_replica=MAX_RESIDENT_VERSIONS)
    async def engine(self, version: str):
        def download():  # on a worker thread
            from serving.loader import default_cache_dir, download_version

            cache = Path(self.config.model_cache_dir or default_cache_dir())
            return download_version(self.config.mlflow_uri, self.config.model_name, version, cache)

        loop = asyncio.get_running_loop()
        root = await loop.run_in_executor(None, download)
        from serving.vllm_engine import choose_engine, read_config

        model_dir, _ = hf_dirs(root)
        choice = choose_engine(read_config(model_dir), requested=self.config.engine)
        logger.info("version %s: engine %s (%s)", version, choice.engine, choice.reason)
        if choice.engine == "vllm":
            return await loop.run_in_executor(None, self._load_vllm, version, root)
        return await loop.run_in_executor(None, self._load_hf, version, root)

    def _load_hf(self, version: str, root: Path):
        """The hand-written engine (serving/engine.py): imports torch, reads the weights."""
        from serving.async_engine import AsyncEngine
        from serving.engine import Engine
        from serving.loader import load_hf_model
        from serving.metrics import VersionMetrics

        device = self._device()
        model, tokenizer = load_hf_model(root, device=device)
        engine = Engine(
            model,
            tokenizer,
            max_batch_size=self.config.max_batch_size,
            max_waiting=self.config.max_waiting,
            observer=VersionMetrics(version),
        )
        logger.info("loaded %s version %s on %s", self.config.model_name, version, device)
        return AsyncEngine(engine)

    def _load_vllm(self, version: str, root: Path):
        """vLLM's AsyncLLM for this version (serving/vllm_engine.py); the version's
        `orchard.serve.quantization` tag, else the serving setting, picks its quantization."""
        from serving.loader import load_tokenizer
        from serving.metrics import VersionMetrics
        from serving.registry import QUANTIZATION_TAG, version_tags
        from serving.vllm_engine import VllmEngine

        model_dir, tokenizer_dir = hf_dirs(root)
        tags = version_tags(self.config.mlflow_uri, self.config.model_name, version)
        quantization = tags.get(QUANTIZATION_TAG) or self.config.vllm_quantization
        engine = VllmEngine(
            model_dir,
            tokenizer_dir,
            load_tokenizer(tokenizer_dir),
            max_batch_size=self.config.max_batch_size,
            max_waiting=self.config.max_waiting,
            observer=VersionMetrics(version),
            dtype=self.config.vllm_dtype,
            kv_cache_mib=self.config.vllm_kv_cache_mib,
            threads=self.config.torch_threads,
            quantization=quantization,
        )
        logger.info(
            "loaded %s version %s on vLLM (quantization %s)",
            self.config.model_name,
            version,
            quantization,
        )
        return engine

    async def load(self) -> dict[str, Any]:
        """Make sure this request's version is resident (the ingress warms before a switch)."""
        engine = await self.engine(serve.get_multiplexed_model_id())
        return {"max_context": engine.engine.max_context}

    async def generate(self, request: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        version = serve.get_multiplexed_model_id()
        try:
            engine = await self.engine(version)
        except Exception as error:
            logger.exception("version %s failed to load", version)
            yield [oa.no_model_loaded(f"Version {version} cannot be loaded: {error}").to_event()]
            return
        try:
            streams, prompt_tokens = _submit_all(
                engine, request, coalesce_s=self.config.stream_interval_ms / 1000
            )
        except oa.OpenAIError as error:
            yield [error.to_event()]
            return
        try:
            yield [{"event": "start", "prompt_tokens": prompt_tokens, "replica": self.replica}]
            async for events in _merge_streams(streams):
                yield events
        finally:  # finished, failed, or cancelled because the client went away
            for _, stream in streams:
                stream.cancel()


def _submit_all(engine: Any, request: dict[str, Any], *, coalesce_s: float):
    """Start every choice of every prompt: all of them, or none (OpenAIError says why)."""
    # Imported by the model load already (torch with it), so cheap here.
    from serving.engine import (
        ContextTooLong,
        EngineError,
        Overloaded,
        SamplingParams,
        UnsupportedRequest,
        vllm_only,
    )

    tokenizer, base, n = engine.engine.tokenizer, request["params"], request["n"]
    if request.get("tools") and not engine.engine.tool_calling:
        raise oa.OpenAIError(400, str(vllm_only("tools")), param="tools")
    capacity = engine.engine.max_batch_size + engine.engine.max_waiting
    if len(request["prompts"]) * n > capacity:
        raise oa.OpenAIError(
            400,
            f"This request asks for {len(request['prompts']) * n} sequences (prompts x n); "
            f"at most {capacity} fit in this model's queue: lower n or send fewer prompts.",
            param="n",
        )
    prompts = [_prompt_ids(tokenizer, request, p) for p in request["prompts"]]
    streams = []
    try:
        for ids in prompts:  # every prompt fits before any starts
            engine.engine.check(len(ids), base["max_tokens"])
        for p, ids in enumerate(prompts):
            for j in range(n):
                index = p * n + j  # OpenAI's numbering; choice i samples with seed + i
                seed = None if base["seed"] is None else base["seed"] + index
                params = SamplingParams(**{**base, "seed": seed})
                streams.append((index, engine.submit(ids, params, coalesce_s=coalesce_s)))
    except EngineError as error:
        for _, stream in streams:
            stream.cancel()
        if isinstance(error, ContextTooLong):
            raise _context_error(error, request) from None
        if isinstance(error, Overloaded):
            raise oa.overloaded(str(error)) from None
        if isinstance(error, UnsupportedRequest):
            raise oa.OpenAIError(400, str(error), param=error.param) from None
        raise oa.OpenAIError(400, str(error), param=_prompt_param(request)) from None
    return streams, sum(len(ids) for ids in prompts)


def _prompt_param(request: dict[str, Any]) -> str:
    return "messages" if request["kind"] == "chat" else "prompt"


def _context_error(error: Exception, request: dict[str, Any]) -> oa.OpenAIError:
    return oa.OpenAIError(
        400, str(error), param=_prompt_param(request), code="context_length_exceeded"
    )


def _prompt_ids(tokenizer: Any, request: dict[str, Any], prompt: Any) -> list[int]:
    if request["kind"] == "chat":
        from serving.tools import render_messages, template_renders_tools

        tools = request.get("tools")
        native = template_renders_tools(getattr(tokenizer, "chat_template", None))
        messages = render_messages(prompt, tools, native=native)
        extra = {"tools": tools} if native and tools else {}
        try:
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, **extra
            )
        except Exception as error:  # jinja2 errors, raise_exception() in templates
            message = f"The messages do not fit this model's chat template: {error}"
            raise oa.OpenAIError(400, message, param="messages") from None
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    if isinstance(prompt, str):
        return tokenizer(prompt)["input_ids"]
    vocab = len(tokenizer)
    if any(not 0 <= t < vocab for t in prompt):
        raise oa.OpenAIError(400, f"prompt token ids must be in [0, {vocab})", param="prompt")
    return list(prompt)


async def _merge_streams(streams) -> AsyncIterator[list[dict[str, Any]]]:
    """Interleave the choices' deltas; yield whatever is ready as one list."""

    def event(index, delta) -> dict[str, Any]:
        out = {
            "event": "delta",
            "index": index,
            "text": delta.text,
            "tokens": delta.tokens,
            "finish_reason": delta.finish_reason,
        }
        if delta.logprobs is not None:
            out["logprobs"] = delta.logprobs
        return out

    if len(streams) == 1:  # the common case: no tasks, no queue
        index, stream = streams[0]
        async for delta in stream:
            yield [event(index, delta)]
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index, stream) -> None:
        async for delta in stream:
            queue.put_nowait(event(index, delta))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in streams]
    try:
        open_streams = len(tasks)
        while open_streams:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            open_streams -= sum(1 for e in batch if e["finish_reason"] is not None)
            yield batch
    finally:
        for task in tasks:
            task.cancel()
