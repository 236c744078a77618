import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.batcher import MicroBatcher, QueueFullError
from app.metrics import Metrics


def _batcher(run, **kw):
    opts = dict(
        max_batch=8,
        max_wait_s=0.005,
        queue_size=64,
        executor=ThreadPoolExecutor(1),
        metrics=Metrics(),
        labels={"model": "m", "kind": "predict"},
    )
    return MicroBatcher(run, **(opts | kw))


def test_batcher_groups_concurrent_requests_and_keeps_each_answer():
    seen: list[int] = []

    def run(x):
        seen.append(x.shape[0])
        return [float(v) for v in x.sum(axis=1)]

    async def main():
        b = _batcher(run)
        b.start()
        results = await asyncio.gather(*(b.submit(np.array([float(i), 1.0]), 5) for i in range(20)))
        await b.stop()
        return results

    assert asyncio.run(main()) == [i + 1.0 for i in range(20)]
    assert max(seen) > 1 and max(seen) <= 8 and sum(seen) == 20


def test_batcher_back_pressure_and_timeouts():
    def slow(x):
        time.sleep(0.3)
        return [0] * x.shape[0]

    async def main():
        b = _batcher(slow, max_batch=1, queue_size=2)
        b.start()
        first = asyncio.ensure_future(b.submit(np.zeros(1), 5))
        await asyncio.sleep(0.05)  # the first is running; two more fill the queue
        queued = [asyncio.ensure_future(b.submit(np.zeros(1), 5)) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError):
            await b.submit(np.zeros(1), 5)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(queued[0]), 0.01)
        assert await first == 0
        with pytest.raises(TimeoutError):
            await b.submit(np.zeros(1), 0.05)  # its own deadline passes while it waits
        await asyncio.gather(*queued)
        await b.stop()

    asyncio.run(main())


def test_batcher_model_error_reaches_every_request_of_the_batch_only():
    calls = {"n": 0}

    def flaky(x):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return [1] * x.shape[0]

    async def main():
        b = _batcher(flaky, max_wait_s=0.05)
        b.start()
        first = await asyncio.gather(*(b.submit(np.zeros(1), 5) for _ in range(3)), return_exceptions=True)
        second = await b.submit(np.zeros(1), 5)
        await b.stop()
        return first, second

    first, second = asyncio.run(main())
    assert all(isinstance(e, RuntimeError) for e in first) and second == 1
