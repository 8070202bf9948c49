"""The engine on its own thread, streaming each sequence's deltas into asyncio.

`Engine.step` is blocking torch work; `AsyncEngine` runs it on a thread that lives only
while there is work, and hands every sequence's deltas to the event loop that asked for
them. The Serve replica (serving/model_server.py) uses it; so do the engine's tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator

from serving.engine import Delta, Engine, SamplingParams

FULL_RATE_STREAMS = 8


class AsyncEngine:
    """Runs an `Engine` on its own thread and streams each sequence's deltas to asyncio.

    The thread lives only while there is work, so an engine nobody uses any more (a model
    version evicted from a replica) leaves nothing running and is garbage-collected.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()

    def wake(self) -> None:
        with self._thread_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._thread_lock:
                if not self.engine.has_work():
                    self._thread = None
                    return
            self.engine.step()

    def submit(
        self, prompt_ids: list[int], params: SamplingParams, *, coalesce_s: float = 0.0
    ) -> DeltaStream:
        """Queue a sequence now (EngineError if it cannot run); iterate the result.

        With `coalesce_s`, deltas after the first text come at most that often (less often
        when more than FULL_RATE_STREAMS sequences run), each carrying every token produced
        meanwhile: fewer, larger messages downstream.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Delta] = asyncio.Queue()

        def deliver(delta: Delta) -> None:  # called on the engine thread
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody listens
                loop.call_soon_threadsafe(queue.put_nowait, delta)

        seq_id = self.engine.add(prompt_ids, params, deliver)
        self.wake()
        return DeltaStream(self, seq_id, queue, coalesce_s)

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[Delta]:
        stream = self.submit(prompt_ids, params)
        try:
            async for delta in stream:
                yield delta
        finally:
            stream.cancel()


class DeltaStream:
    """One sequence's deltas; tokens that arrived together come as one delta.

    `cancel()` (a no-op once finished) frees the sequence's batch slot: call it when the
    consumer goes away, e.g. the client disconnected.
    """

    def __init__(
        self,
        owner: AsyncEngine,
        seq_id: int,
        queue: asyncio.Queue[Delta],
        coalesce_s: float = 0.0,
    ) -> None:
        self._owner = owner
        self._seq_id = seq_id
        self._queue = queue
        self._coalesce_s = coalesce_s
        self._last = -float("inf")
        self.done = False

    def __aiter__(self) -> DeltaStream:
        return self

    async def __anext__(self) -> Delta:
        if self.done:
            raise StopAsyncIteration
        delta = await self._queue.get()
        # Beyond FULL_RATE_STREAMS concurrent sequences the interval stretches, so a replica
        # sends about the same number of messages per second however many streams it has.
        stretch = max(1.0, self._owner.engine.running / FULL_RATE_STREAMS)
        wait = self._last + self._coalesce_s * stretch - time.monotonic()
        if wait > 0 and delta.finish_reason is None:
            await asyncio.sleep(wait)
        while not self._queue.empty() and delta.finish_reason is None:
            delta = _merge(delta, self._queue.get_nowait())
        if delta.text:  # until text shows (held-back bytes), nothing waits: first text is TTFT
            self._last = time.monotonic()
        self.done = delta.finish_reason is not None
        return delta

    def cancel(self) -> None:
        if not self.done:
            self.done = True
            self._owner.engine.cancel(self._seq_id)
            self._owner.wake()


def _merge(first: Delta, second: Delta) -> Delta:
    return Delta(
        first.text + second.text,
        first.tokens + second.tokens,
        second.finish_reason,
        second.prompt_tokens,
        second.completion_tokens,
    )
