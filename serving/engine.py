"""The generation engine: continuous batching over a Hugging Face causal LM's KV cache.

Contract: token ids in, text deltas out. The engine knows nothing of HTTP, OpenAI or Ray;
it owns one model and its tokenizer (for detokenizing and end-of-turn ids).

How a step works (one call of `Engine.step`, iteration-level scheduling as in Orca/vLLM):
1. sequences cancelled since the last step leave the batch (their slot is freed);
2. waiting sequences are admitted while the batch has room: each is prefilled alone
   (exact, no padding) and its first token sampled, then its KV cache joins the batch's;
3. every running sequence decodes one token in a single batched forward pass;
4. finished sequences (end of turn, stop sequence, max_tokens, context full) leave.
The batch's KV cache is one `DynamicCache` whose rows are left-padded to a common length:
a row that joins shorter than the batch is padded on the left, a longer one pads the
batch. An attention mask hides the padding and each row gets its own position ids, so a
sequence computes the same logits in a batch as alone (up to float rounding). Columns that
are padding for every remaining row are trimmed when rows leave.

Sampling is per sequence: greedy for temperature 0, otherwise temperature + top-p with the
sequence's own `torch.Generator` (seeded from the request's seed), so a fixed seed gives
the same text whatever else shares the batch.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from serving.textstream import TextStream


class EngineError(ValueError):
    """A request the engine cannot run; the message says what to change."""


class ContextTooLong(EngineError):
    pass


class Overloaded(EngineError):
    pass


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    max_tokens: int | None = None
    """New tokens at most; None = until the context is full."""
    temperature: float = 1.0
    """0 = greedy (deterministic); higher = more random."""
    top_p: float = 1.0
    """Sample from the smallest set of tokens whose probability reaches top_p."""
    seed: int | None = None
    """Seeds this sequence's own generator: same seed, same text."""
    stop: tuple[str, ...] = ()
    """Text that ends generation; it is not included in the output."""

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class Delta:
    """What one sequence produced since its last delta."""

    text: str
    tokens: int
    finish_reason: str | None = None  # "stop" | "length" | "cancelled"
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Observer(Protocol):
    """Receives the engine's measurements (the Ray deployment turns them into metrics)."""

    def queue_depth(self, waiting: int) -> None: ...
    def batch_size(self, running: int) -> None: ...
    def first_token(self, seconds: float) -> None: ...
    def inter_token(self, seconds: float) -> None: ...
    def tokens(self, count: int) -> None: ...
    def finished(self, reason: str) -> None: ...


class NullObserver:
    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args: None


@dataclass(eq=False)
class Sequence:
    id: int
    prompt_ids: list[int]
    params: SamplingParams
    max_tokens: int
    text: TextStream
    on_delta: Callable[[Delta], None]
    generator: torch.Generator | None
    output_ids: list[int] = field(default_factory=list)
    added_at: float = field(default_factory=time.perf_counter)
    last_token_at: float = 0.0
    finish_reason: str | None = None

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)


class Engine:
    """Continuous batching for one model. Thread-safe `add`/`cancel`; `step` from one thread."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_size: int = 32,
        max_waiting: int = 64,
        max_context: int | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.max_batch_size = max_batch_size
        self.max_waiting = max_waiting
        self.max_context = max_context or model.config.max_position_embeddings
        self.eos_ids = _eos_ids(model, tokenizer)
        self.observer: Observer = observer or NullObserver()
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._waiting: deque[Sequence] = deque()
        self._cancelled: set[int] = set()
        self._running: list[Sequence] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [rows, cache length], 1 = real token
        self._step_tokens = 0

    # -- requests ---------------------------------------------------------------------
    def check(self, prompt_tokens: int, max_tokens: int | None) -> int:
        """The number of new tokens a request may have, or ContextTooLong saying why."""
        if prompt_tokens < 1:
            raise EngineError("the prompt is empty: send at least one token of text")
        wanted = prompt_tokens + (max_tokens or 1)
        if prompt_tokens >= self.max_context or wanted > self.max_context:
            asked = f"{prompt_tokens} in the prompt" + (
                f" + {max_tokens} in the completion" if max_tokens else ""
            )
            raise ContextTooLong(
                f"This model's maximum context length is {self.max_context} tokens, "
                f"but you requested {wanted} tokens ({asked}). "
                "Shorten the messages or lower max_tokens."
            )
        return max_tokens or self.max_context - prompt_tokens

    def add(
        self, prompt_ids: list[int], params: SamplingParams, on_delta: Callable[[Delta], None]
    ) -> int:
        """Queue a sequence; `on_delta` is called from the stepping thread. Returns its id."""
        max_tokens = self.check(len(prompt_ids), params.max_tokens)
        generator = None
        if params.temperature > 0:
            generator = torch.Generator(device=self.device)
            if params.seed is not None:
                generator.manual_seed(params.seed)
            else:
                generator.seed()
        seq = Sequence(
            id=next(self._ids),
            prompt_ids=list(prompt_ids),
            params=params,
            max_tokens=max_tokens,
            text=TextStream(self.tokenizer, params.stop),
            on_delta=on_delta,
            generator=generator,
        )
        with self._lock:
            # Batch + queue is the capacity; the stepping thread moves sequences between the
            # two at any time, so count both.
            busy = len(self._waiting) + len(self._running)
            if busy >= self.max_batch_size + self.max_waiting:
                raise Overloaded(
                    f"{busy} sequences are already running or waiting for this model: retry later"
                )
            self._waiting.append(seq)
            self.observer.queue_depth(len(self._waiting))
        return seq.id

    def cancel(self, seq_id: int) -> None:
        with self._lock:
            self._cancelled.add(seq_id)

    def has_work(self) -> bool:
        with self._lock:
            return bool(self._waiting or self._running)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    # -- the step -----------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> None:
        self._step_tokens = 0
        self._drop_cancelled()
        self._admit()
        if self._running:
            self._decode()
        self.observer.batch_size(len(self._running))
        if self._step_tokens:  # one metrics call per step, not per token
            self.observer.tokens(self._step_tokens)

    def _drop_cancelled(self) -> None:
        with self._lock:
            cancelled, self._cancelled = self._cancelled, set()
            if not cancelled:
                return
            for seq in [s for s in self._waiting if s.id in cancelled]:
                self._waiting.remove(seq)
                self._finish(seq, "cancelled")
            self.observer.queue_depth(len(self._waiting))
        for seq in self._running:
            if seq.id in cancelled:
                self._finish(seq, "cancelled")
        self._evict_finished()

    def _admit(self) -> None:
        while len(self._running) < self.max_batch_size:
            with self._lock:
                if not self._waiting:
                    return
                seq = self._waiting.popleft()
                self.observer.queue_depth(len(self._waiting))
            cache = DynamicCache(config=self.model.config)
            ids = torch.tensor([seq.prompt_ids], device=self.device)
            logits = self.model(
                input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1
            ).logits
            self._emit(seq, self._sample(logits[0, -1], seq))
            if seq.finish_reason is None:
                self._join(cache, len(seq.prompt_ids))
                self._running.append(seq)

    def _join(self, cache: DynamicCache, length: int) -> None:
        """Append a prefilled row to the batch cache, left-padding whichever is shorter."""
        row_mask = torch.ones(1, length, dtype=torch.long, device=self.device)
        if self._cache is None:
            self._cache, self._mask = cache, row_mask
            return
        batch_len = self._mask.shape[1]
        for batch_layer, row_layer in zip(self._cache.layers, cache.layers, strict=True):
            keys, values = row_layer.keys, row_layer.values
            if length < batch_len:
                keys = _left_pad(keys, batch_len - length)
                values = _left_pad(values, batch_len - length)
            elif length > batch_len:
                batch_layer.keys = _left_pad(batch_layer.keys, length - batch_len)
                batch_layer.values = _left_pad(batch_layer.values, length - batch_len)
            batch_layer.keys = torch.cat([batch_layer.keys, keys])
            batch_layer.values = torch.cat([batch_layer.values, values])
        width = max(length, batch_len)
        self._mask = torch.cat(
            [F.pad(self._mask, (width - batch_len, 0)), F.pad(row_mask, (width - length, 0))]
        )

    def _decode(self) -> None:
        rows = self._running
        input_ids = torch.tensor([[s.output_ids[-1]] for s in rows], device=self.device)
        positions = torch.tensor([[s.length - 1] for s in rows], device=self.device)
        mask = F.pad(self._mask, (0, 1), value=1)
        logits = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=self._cache,
            use_cache=True,
        ).logits[:, -1]
        self._mask = mask
        for row, seq in enumerate(rows):
            self._emit(seq, self._sample(logits[row], seq))
        self._evict_finished()

    def _evict_finished(self) -> None:
        keep = [i for i, s in enumerate(self._running) if s.finish_reason is None]
        if len(keep) == len(self._running):
            return
        self._running = [self._running[i] for i in keep]
        if not keep:
            self._cache = self._mask = None
            return
        index = torch.tensor(keep, device=self.device)
        self._mask = self._mask[index]
        # Columns that are padding in every remaining row carry nothing: drop them.
        first = int(self._mask.any(dim=0).int().argmax())
        self._mask = self._mask[:, first:]
        for layer in self._cache.layers:
            layer.keys = layer.keys[index, :, first:]
            layer.values = layer.values[index, :, first:]

    # -- tokens -------------------------------------------------------------------------
    def _sample(self, logits: torch.Tensor, seq: Sequence) -> int:
        params = seq.params
        if params.temperature == 0:
            return int(logits.argmax())
        probs = torch.softmax(logits.float() / params.temperature, dim=-1)
        if params.top_p < 1:
            sorted_probs, order = probs.sort(descending=True)
            # Keep the smallest prefix reaching top_p (always at least the top token).
            drop = sorted_probs.cumsum(-1) - sorted_probs >= params.top_p
            sorted_probs[drop] = 0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=seq.generator))

    def _emit(self, seq: Sequence, token: int) -> None:
        now = time.perf_counter()
        if not seq.output_ids:
            self.observer.first_token(now - seq.added_at)
        else:
            self.observer.inter_token(now - seq.last_token_at)
        seq.last_token_at = now
        seq.output_ids.append(token)
        self._step_tokens += 1
        if token in self.eos_ids:
            self._finish(seq, "stop", token_count=1)
            return
        text = seq.text.push(token)
        if seq.text.stopped:
            self._finish(seq, "stop", text=text, token_count=1)
        elif len(seq.output_ids) >= seq.max_tokens or seq.length >= self.max_context:
            self._finish(seq, "length", text=text, token_count=1)
        else:
            seq.on_delta(Delta(text, 1, None, len(seq.prompt_ids), len(seq.output_ids)))

    def _finish(self, seq: Sequence, reason: str, *, text: str = "", token_count: int = 0) -> None:
        seq.finish_reason = reason
        text += seq.text.finish()
        self.observer.finished(reason)
        seq.on_delta(Delta(text, token_count, reason, len(seq.prompt_ids), len(seq.output_ids)))


def _left_pad(states: torch.Tensor, count: int) -> torch.Tensor:
    """Zeros on the left of the sequence axis of [batch, heads, seq, dim] states."""
    return F.pad(states, (0, 0, count, 0))


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return frozenset(ids)
