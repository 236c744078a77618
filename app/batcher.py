"""Dynamic micro-batching: concurrent requests share one forward pass.

Requests append their input to a queue; one task per batcher takes up to ``max_batch`` of them,
waiting at most ``max_wait`` for a batch to fill (by default not at all), and runs the model in a
single worker thread, off the event loop. While a batch runs, new requests queue up and form the
next batch at once, so under load batches grow by themselves without any added wait, and a lone
request is answered as fast as an unbatched server would. A bounded queue gives
back-pressure (:class:`QueueFullError`), and each request has its own deadline.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from app.metrics import Metrics

log = logging.getLogger(__name__)
R = TypeVar("R")


class QueueFullError(RuntimeError):
    """The batcher's queue is at capacity; the client should retry later."""


@dataclass
class _Pending(Generic[R]):
    x: np.ndarray
    future: asyncio.Future[R]


class MicroBatcher(Generic[R]):
    """Batches single inputs for ``run``, which maps a stacked (B, ...) array to B results.

    Args:
        run: the batched function; runs in ``executor``.
        max_batch: most inputs per call of ``run``.
        max_wait_s: how long the first input of a batch waits for others to join.
        queue_size: most inputs waiting; beyond it :meth:`submit` raises :class:`QueueFullError`.
        executor: where ``run`` executes (one thread keeps the model's batches in order).
        metrics, labels: batch-size, inference-time and queue-depth metrics, labelled so.
    """

    def __init__(
        self,
        run: Callable[[np.ndarray], Sequence[R]],
        *,
        max_batch: int,
        max_wait_s: float,
        queue_size: int,
        executor: Executor,
        metrics: Metrics,
        labels: dict[str, str],
    ):
        self._run, self._max_batch, self._max_wait = run, max_batch, max_wait_s
        self._queue_size, self._executor = queue_size, executor
        self._pending: collections.deque[_Pending[R]] = collections.deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._batch_size = metrics.batch_size.labels(**labels)
        self._inference = metrics.inference.labels(**labels)
        self._depth = metrics.queue_depth.labels(**labels)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                item.future.set_exception(RuntimeError("the server is shutting down"))

    async def submit(self, x: np.ndarray, timeout_s: float) -> R:
        """Queue ``x`` and wait for its result; TimeoutError past ``timeout_s``."""
        if len(self._pending) >= self._queue_size:
            raise QueueFullError(f"{len(self._pending)} images are already waiting")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(x, future))
        self._depth.set(len(self._pending))
        self._arrived.set()
        return await asyncio.wait_for(future, timeout_s)  # on timeout the future is cancelled: skipped

    def room(self) -> int:
        """How many more inputs the queue takes before :meth:`submit` raises :class:`QueueFullError`."""
        return self._queue_size - len(self._pending)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            deadline = loop.time() + self._max_wait
            while len(self._pending) < self._max_batch and (remaining := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            batch = [self._pending.popleft() for _ in range(min(self._max_batch, len(self._pending)))]
            self._depth.set(len(self._pending))
            batch = [item for item in batch if not item.future.done()]  # timed out while queued
            if batch:
                await self._execute(loop, batch)

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending[R]]) -> None:
        start = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._run, np.stack([i.x for i in batch]))
        except Exception as exc:  # the model failed: every request of the batch gets the error
            log.exception("batch of %d failed", len(batch))
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self._inference.observe(time.perf_counter() - start)
        self._batch_size.observe(len(batch))
        for item, result in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)
