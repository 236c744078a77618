"""A pool of worker processes whose limits the parent enforces: a deadline that kills the process,
and a cap on the memory it may map.

Each worker runs one task at a time: a top-level function from bytes to bytes, given when the pool
is built. The parent sends the task's input over a Unix socket of the worker's own, and waits on
the event loop for the answer until the task's deadline; past it, the worker is killed (SIGKILL:
the work stops where it is) and replaced. A worker maps at most ``memory_bytes`` more than it had
mapped when it started (RLIMIT_AS): beyond that, allocations fail inside the task. A worker is also
replaced after ``max_tasks`` tasks, which bounds what fragmentation or a leak can hold.

Why not ``concurrent.futures.ProcessPoolExecutor``: a future that times out leaves its worker busy
until the task ends (``cancel()`` cannot stop a running task), and killing that worker by hand
breaks the whole executor (``BrokenProcessPool``: every pending task fails) through its private
state. The standard parts used here instead are multiprocessing's processes, started from a
fork server (a clean process that has imported the task's module once, so a replacement costs a
fork, not an interpreter start), and the event loop's own socket transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import multiprocessing
import os
import resource
import signal
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

log = logging.getLogger(__name__)

Task = Callable[[bytes], bytes]
_LENGTH = struct.Struct("<Q")  # every message on a worker's socket: its length, then its bytes
_PR_SET_PDEATHSIG = 1  # prctl(2)
_EXIT_WAIT_S = 1.0  # how long a worker told to stop may take before it is killed
_RETRY_S = 1.0  # a replacement that could not be started (out of processes or memory) is tried again after this


class WorkerTimeoutError(TimeoutError):
    """The task was not done in time (a worker running it was killed); ``task_limit`` if the limit
    that passed was the task's own (``task_timeout``), not the overall one."""

    def __init__(self, message: str, task_limit: bool = False):
        super().__init__(message)
        self.task_limit = task_limit


class WorkerDiedError(RuntimeError):
    """The worker ended (a crash, a signal, the kernel's OOM killer) before it answered."""


@dataclass(frozen=True)
class Limits:
    """``processes`` workers; each may map ``memory_bytes`` beyond what it mapped at start, and
    is replaced after ``max_tasks`` tasks."""

    processes: int
    memory_bytes: int
    max_tasks: int


class _Replies(asyncio.Protocol):
    """The parent's end of one worker's socket: collects the answer to the task in flight."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[bytes] | None = None
        self.closed = False

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) < _LENGTH.size:
            return
        (length,) = _LENGTH.unpack_from(self.buffer)
        if len(self.buffer) >= _LENGTH.size + length and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(bytes(self.buffer[_LENGTH.size : _LENGTH.size + length]))
            del self.buffer[: _LENGTH.size + length]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(WorkerDiedError("the worker exited before it answered"))


@dataclass(eq=False)  # each worker is its own: compared and hashed by identity
class _Worker:
    process: BaseProcess
    transport: asyncio.Transport
    replies: _Replies
    tasks: int = 0


class WorkerPool:
    """``limits.processes`` processes running ``task``; :meth:`run` gives one of them an input and
    returns its answer, or kills it at the deadline. Used from one event loop."""

    def __init__(self, task: Task, limits: Limits, name: str = "worker"):
        self.task, self.limits, self.name = task, limits, name
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload([task.__module__])
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._workers: set[_Worker] = set()
        self._pending: set[asyncio.Task[None]] = set()  # replacements being started
        self._closed = False

    async def start(self) -> None:
        """Start every worker; returns once they all listen."""
        await asyncio.gather(*(self._add() for _ in range(self.limits.processes)))

    def pids(self) -> list[int]:
        """The process ids of the live workers."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    async def run(self, payload: bytes, timeout: float, task_timeout: float | None = None) -> bytes:
        """``task(payload)`` in a worker, waiting for a free one and for its answer at most
        ``timeout`` seconds in all, and for the task itself at most ``task_timeout``.

        Raises:
            WorkerTimeoutError: a deadline passed (a worker running the task was killed).
            WorkerDiedError: the worker ended before it answered (it is replaced).
        """
        if not math.isfinite(timeout) or (task_timeout is not None and not math.isfinite(task_timeout)):
            raise ValueError(f"timeouts must be finite; got {timeout}, {task_timeout}")
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        worker = await self._take(until)
        if loop.time() >= until:  # free only as the deadline passed: nothing to start
            self._idle.put_nowait(worker)
            raise WorkerTimeoutError(f"no {self.name} process was free before the deadline")
        task_limit = task_timeout is not None and loop.time() + task_timeout < until
        if task_timeout is not None:
            until = min(until, loop.time() + task_timeout)
        waiter: asyncio.Future[bytes] = loop.create_future()
        worker.replies.waiter = waiter
        try:
            expiry = loop.call_at(until, _expire, waiter, task_limit)
        except BaseException:  # the task never started: the worker is free
            worker.replies.waiter = None
            self._idle.put_nowait(worker)
            raise
        try:
            worker.transport.writelines([_LENGTH.pack(len(payload)), payload])
            answer = await waiter
        except BaseException:  # timed out, died, or the caller was cancelled: the worker may be busy
            self._replace(worker)
            raise
        finally:
            expiry.cancel()
            worker.replies.waiter = None
        worker.tasks += 1
        if worker.tasks >= self.limits.max_tasks:
            self._replace(worker)
        else:
            self._idle.put_nowait(worker)
        return answer

    async def close(self) -> None:
        """Stop every worker: told to (end of input), killed if it has not exited within a second.
        Replacements being started finish first (a fork cannot be called back), then stop."""
        self._closed = True
        await asyncio.gather(*self._pending, return_exceptions=True)
        workers, self._workers = list(self._workers), set()
        for worker in workers:
            worker.transport.close()
        await asyncio.gather(*(asyncio.to_thread(_stop, w.process, _EXIT_WAIT_S) for w in workers))

    async def _take(self, until: float) -> _Worker:
        """A free worker, waiting for one until ``until`` (the loop's clock); one that ended while
        it was free (killed from outside) is replaced on the way."""
        while True:
            if self._idle.empty():
                timeout = until - asyncio.get_running_loop().time()
                try:
                    worker = await asyncio.wait_for(self._idle.get(), max(timeout, 0.0))
                except TimeoutError:
                    raise WorkerTimeoutError(f"no {self.name} process was free before the deadline") from None
            else:
                worker = self._idle.get_nowait()
            if not worker.replies.closed:
                return worker
            self._replace(worker)

    def _replace(self, worker: _Worker) -> None:
        """Kill ``worker`` (whatever it is doing) and start another in its place; nothing for a
        worker that is no longer the pool's (:meth:`close` stops those)."""
        if worker not in self._workers:
            return
        self._workers.discard(worker)
        worker.transport.abort()
        with contextlib.suppress(ProcessLookupError):
            worker.process.kill()
        replacement = asyncio.get_running_loop().create_task(self._reap_and_add(worker.process))
        self._pending.add(replacement)
        replacement.add_done_callback(self._pending.discard)

    async def _reap_and_add(self, process: BaseProcess) -> None:
        await asyncio.to_thread(_stop, process, _EXIT_WAIT_S)
        while not self._closed:
            try:
                await self._add()
                return
            except OSError as exc:  # fork or socketpair failed: the pool is a worker short until it works
                log.error("could not start a %s process; trying again", self.name, exc_info=exc)
                await asyncio.sleep(_RETRY_S)

    async def _add(self) -> None:
        """Start one worker (in a thread: forking blocks) and make it available."""
        process, sock = await asyncio.to_thread(self._spawn)
        loop = asyncio.get_running_loop()
        try:
            transport, replies = await loop.create_unix_connection(_Replies, sock=sock)
        except BaseException:
            sock.close()
            await asyncio.to_thread(_stop, process, 0.0)
            raise
        worker = _Worker(process, transport, replies)
        if self._closed:  # closed while this one started
            transport.close()
            await asyncio.to_thread(_stop, process, _EXIT_WAIT_S)
            return
        self._workers.add(worker)
        self._idle.put_nowait(worker)

    def _spawn(self) -> tuple[BaseProcess, socket.socket]:
        ours, theirs = socket.socketpair()
        process = self._context.Process(
            target=serve,
            args=(theirs, self.task, self.limits.memory_bytes),
            name=f"vit-digits-{self.name}",
            daemon=True,
        )
        process.start()
        theirs.close()
        ours.setblocking(False)
        return process, ours


def _expire(waiter: asyncio.Future[bytes], task_limit: bool) -> None:
    if not waiter.done():
        waiter.set_exception(WorkerTimeoutError("the task ran past its time; its worker was killed", task_limit))


def _stop(process: BaseProcess, wait_s: float) -> None:
    """Wait up to ``wait_s`` for ``process`` to exit, then kill it; reap it either way."""
    process.join(wait_s)
    if process.exitcode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.join()
    process.close()


# ---- in the worker process -------------------------------------------------------------------


def serve(sock: socket.socket, task: Task, memory_bytes: int) -> None:
    """A worker's life: limits set, then ``task`` on each input until the parent closes the socket.

    Its standard output and error go to /dev/null: C libraries write there what they make of the
    inputs (libtiff's complaints about a hostile file), which would land raw among the server's
    JSON log lines; a task reports through its answer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    _die_with_parent()
    _limit_memory(memory_bytes)
    _silence_output()
    sock.setblocking(True)
    with sock:
        while (payload := _receive(sock)) is not None:
            answer = task(payload)
            sock.sendall(_LENGTH.pack(len(answer)) + answer)


def _silence_output() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _die_with_parent() -> None:
    """Be killed when the process that started us (the fork server, which exits with the server)
    ends, even by SIGKILL, rather than finish a task nobody waits for."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _limit_memory(extra_bytes: int) -> None:
    """Allow this process ``extra_bytes`` of address space beyond what it has mapped now; no core
    files (a crash on a hostile picture would write one as big as the process)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    mapped = _mapped_bytes()
    if mapped is not None:
        resource.setrlimit(resource.RLIMIT_AS, (mapped + extra_bytes, mapped + extra_bytes))


def _mapped_bytes() -> int | None:
    """This process's address space in bytes (Linux: /proc/self/statm), or None where unknown."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def _receive(sock: socket.socket) -> bytes | None:
    """The next input from the parent, or None when it has closed the socket."""
    header = _exactly(sock, _LENGTH.size)
    if header is None:
        return None
    (length,) = _LENGTH.unpack(header)
    return _exactly(sock, length) if length else b""


def _exactly(sock: socket.socket, size: int) -> bytes | None:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return bytes(buffer)
