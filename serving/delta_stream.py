"""What both engines' streams share: one sequence's deltas, coalesced for the wire.

`AsyncEngine`'s `DeltaStream` (the hand-written engine) and `VllmStream` (vLLM) put each
sequence's deltas on an asyncio queue; iterating this class takes them off, merging the
tokens that arrived together into one delta, and with `coalesce_s` sends at most one delta
per interval after the first text (fewer, larger messages downstream).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from serving.engine import Delta, SamplingParams, merge

# Beyond this many concurrent sequences the coalescing interval stretches, so a replica
# sends about the same number of messages per second however many streams it has.
FULL_RATE_STREAMS = 8


class CoalescedDeltas:
    """Iterates `self._queue`'s deltas; a subclass says how busy its engine is
    (`_running`) and implements `cancel()`."""

    def __init__(self, queue: asyncio.Queue[Delta], coalesce_s: float = 0.0) -> None:
        self._queue = queue
        self._coalesce_s = coalesce_s
        self._last = -float("inf")
        self.done = False

    def _running(self) -> int:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError

    def __aiter__(self) -> CoalescedDeltas:
        return self

    async def __anext__(self) -> Delta:
        if self.done:
            raise StopAsyncIteration
        delta = await self._queue.get()
        stretch = max(1.0, self._running() / FULL_RATE_STREAMS)
        wait = self._last + self._coalesce_s * stretch - time.monotonic()
        if wait > 0 and delta.finish_reason is None:
            await asyncio.sleep(wait)
        while not self._queue.empty() and delta.finish_reason is None:
            delta = merge(delta, self._queue.get_nowait())
        if delta.text:  # until text shows (held-back bytes), nothing waits: first text is TTFT
            self._last = time.monotonic()
        self.done = delta.finish_reason is not None
        return delta


class StreamingEngine:
    """`generate`, for an engine whose `submit` returns a CoalescedDeltas (both do)."""

    def submit(
        self, prompt_ids: list[int], params: SamplingParams, *, coalesce_s: float = 0.0
    ) -> CoalescedDeltas:
        raise NotImplementedError

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[Delta]:
        """One sequence's deltas; leaving the loop early cancels it."""
        stream = self.submit(prompt_ids, params)
        try:
            async for delta in stream:
                yield delta
        finally:
            stream.cancel()
