"""The worker pool's limits, enforced: a task past its deadline is killed (its CPU stops), one that
maps more than its memory cap fails inside its worker, a crash is answered and the worker replaced,
and nothing outlives the pool."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from app.worker_pool import Limits, Task, WorkerDiedError, WorkerPool, WorkerTimeoutError
from tests.app.pool_tasks import command, pillow_load
from tests.crafted import tiff_with_strip_offsets
from tests.processes import alive, rss_mb

pytestmark = pytest.mark.slow  # each test starts decoder processes


T = TypeVar("T")
MB = 1 << 20


def with_pool(test: Callable[[WorkerPool], Awaitable[T]], task: Task = command, **limits: int) -> T:
    """``test(pool)`` on an event loop, with a started pool that is closed afterwards."""

    async def main() -> T:
        pool = WorkerPool(task, Limits(**{"processes": 1, "memory_bytes": 100 * MB, "max_tasks": 1000, **limits}))
        await pool.start()
        try:
            return await test(pool)
        finally:
            await pool.close()

    return asyncio.run(main())


def test_pool_answers_and_keeps_its_workers():
    async def test(pool: WorkerPool) -> None:
        assert await pool.run(b"echo:hello", 5) == b"hello"
        pids = {await pool.run(b"pid", 5) for _ in range(10)}
        assert len(pids) == 2 and set(map(int, pids)) == set(pool.pids())  # two workers, each kept

    with_pool(test, processes=2)


def test_a_task_past_its_deadline_is_killed_and_its_worker_replaced():
    async def test(pool: WorkerPool) -> None:
        (pid,) = pool.pids()
        started = time.monotonic()
        with pytest.raises(WorkerTimeoutError) as info:
            await pool.run(b"spin", 0.5, task_timeout=5)
        assert time.monotonic() - started < 0.5 + 1.0
        assert not info.value.task_limit  # the overall deadline came first
        for _ in range(100):  # the kill is asynchronous: the process is gone within moments
            if not alive(pid):
                break
            await asyncio.sleep(0.02)
        assert not alive(pid), "the worker running past its deadline still runs"
        assert await pool.run(b"echo:next", 10) == b"next"  # a replacement serves the next task
        assert pool.pids() != [pid]

    with_pool(test)


def test_task_timeout_bounds_the_task_within_a_longer_deadline():
    async def test(pool: WorkerPool) -> None:
        started = time.monotonic()
        with pytest.raises(WorkerTimeoutError) as info:
            await pool.run(b"spin", 30, task_timeout=0.3)
        assert time.monotonic() - started < 0.3 + 1.0
        assert info.value.task_limit

    with_pool(test)


def test_a_task_over_its_memory_cap_fails_inside_its_worker():
    async def test(pool: WorkerPool) -> None:
        assert await pool.run(b"allocate:%d" % (20 * MB), 10) == b"ok"
        assert await pool.run(b"allocate:%d" % (200 * MB), 10) == b"memory"
        (pid,) = pool.pids()
        assert rss_mb(pid) < 200, "the worker holds what it could not allocate"
        assert await pool.run(b"echo:alive", 10) == b"alive"  # the same worker goes on

    with_pool(test, memory_bytes=100 * MB)


def test_a_crashed_worker_is_reported_and_replaced():
    async def test(pool: WorkerPool) -> None:
        with pytest.raises(WorkerDiedError):
            await pool.run(b"crash", 10)
        assert await pool.run(b"echo:again", 10) == b"again"

    with_pool(test)


def test_workers_are_replaced_after_max_tasks():
    async def test(pool: WorkerPool) -> None:
        pids = [await pool.run(b"pid", 10) for _ in range(6)]
        assert pids[0] == pids[1] == pids[2] and pids[3] == pids[4] == pids[5] and pids[0] != pids[3]

    with_pool(test, max_tasks=3)


def test_waiting_for_a_busy_pool_is_bounded_by_the_deadline():
    async def test(pool: WorkerPool) -> None:
        busy = asyncio.ensure_future(pool.run(b"spin", 2))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(WorkerTimeoutError, match="free"):
            await pool.run(b"echo:x", 0.3)
        assert time.monotonic() - started < 0.3 + 0.5
        with pytest.raises(WorkerTimeoutError):
            await busy

    with_pool(test)


def test_a_cancelled_caller_does_not_leave_its_worker_busy():
    async def test(pool: WorkerPool) -> None:
        (pid,) = pool.pids()
        caller = asyncio.ensure_future(pool.run(b"spin", 60))
        await asyncio.sleep(0.2)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert await pool.run(b"echo:free", 10) == b"free"
        for _ in range(100):
            if not alive(pid):
                break
            await asyncio.sleep(0.02)
        assert not alive(pid)

    with_pool(test)


def test_close_leaves_no_worker_even_a_busy_one():
    async def main() -> list[int]:
        pool = WorkerPool(command, Limits(processes=2, memory_bytes=100 * MB, max_tasks=1000))
        await pool.start()
        pids = pool.pids()
        busy = asyncio.ensure_future(pool.run(b"spin", 60))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await pool.close()
        assert time.monotonic() - started < 3
        with pytest.raises(WorkerDiedError):
            await busy
        return pids

    pids = asyncio.run(main())
    assert len(pids) == 2 and not any(alive(pid) for pid in pids)


@pytest.mark.parametrize("kind", [1, 4], ids=["byte", "long"])
def test_the_box_bounds_pillow_on_the_huge_strip_table_tiff_without_screening(kind):
    # issue 32's TIFF (256x256, ~5 M strip offsets in 5 MB) straight to Pillow costs 27 s of CPU
    # and 1.3 GB wherever it runs. In the box: stopped by the memory cap or the deadline, the
    # server's process untouched.
    data = tiff_with_strip_offsets(5_000_000 if kind == 1 else 1_250_000, kind=kind)
    assert len(data) >= 5_000_000

    async def test(pool: WorkerPool) -> str:
        before = rss_mb(os.getpid())
        started = time.monotonic()
        try:
            answer = (await pool.run(data, 2.0)).decode()
        except WorkerTimeoutError:
            answer = "killed at the deadline"
        assert time.monotonic() - started < 2.0 + 1.0
        assert rss_mb(os.getpid()) - before < 30
        return answer

    answer = with_pool(test, task=pillow_load, memory_bytes=150 * MB)
    assert answer in ("memory", "killed at the deadline"), answer
