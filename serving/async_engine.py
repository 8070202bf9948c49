"""The engine on its own thread, streaming each sequence's deltas into asyncio.

`Engine.step` is blocking torch work; `AsyncEngine` runs it on a thread that lives only
while there is work, and hands every sequence's deltas to the event loop that asked for
them. The Serve replica (serving/model_server.py) uses it; so do the engine's tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from serving.delta_stream import CoalescedDeltas, StreamingEngine
from serving.engine import Delta, Engine, SamplingParams


class AsyncEngine(StreamingEngine):
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


class DeltaStream(CoalescedDeltas):
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
        super().__init__(queue, coalesce_s)
        self._owner = owner
        self._seq_id = seq_id

    def _running(self) -> int:
        return self._owner.engine.running

    def cancel(self) -> None:
        if not self.done:
            self.done = True
            self._owner.engine.cancel(self._seq_id)
            self._owner.wake()
