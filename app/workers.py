"""Several uvicorn worker processes behind one listening socket owned by a supervisor.

The supervisor accepts each connection and hands it to the next ready worker in turn (round
robin), passing the socket over a Unix socket (``SCM_RIGHTS``); the worker serves it with uvicorn's
own HTTP protocol. Every worker gets an equal share of the connections, which neither of the
usual ways gives:

- uvicorn's ``--workers`` shares one listening socket, and whichever worker wakes first accepts
  every connection waiting: 32 wrk connections split 24/8, 7/25, 11/21 and 32/0 over 2 workers in
  four runs here, the last at half the throughput.
- One ``SO_REUSEPORT`` socket per worker (this module's previous design) lets the kernel hash
  connections over the workers: splits of 14/18, 12/20, 10/22, and with the 4 connections of the
  batch benchmark 1/3 in six runs of eight, which left one worker's share of the CPU idle.

Connections are handed out only to workers whose models are loaded and warmed up, and the socket
starts listening once the first worker is ready. The supervisor restarts a worker that dies, except
one that could not start at all (its models failed to load: uvicorn's startup-failure status), in
which case it stops every worker and exits with status 1; on
SIGTERM or SIGINT stops taking connections and stops the workers gracefully (uvicorn finishes the
requests in flight). Handing over a connection costs the supervisor an ``accept`` and a
``sendmsg``; a keep-alive connection pays it once.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import multiprocessing
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import uvicorn

from app.logs import configure_logging
from app.server import uvicorn_options
from app.settings import Settings

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0  # how long a worker may take to finish its requests before it is killed
QUICK_EXIT_S = 10.0  # a worker that dies sooner than this after starting counts as failing
MAX_QUICK_EXITS = 5  # consecutive quick deaths of one worker before the supervisor gives up
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
READY = b"ready"  # worker -> supervisor, once its models are loaded
BACKLOG = 2048
STARTUP_FAILURE = 3  # a worker's exit status when its server could not start (uvicorn's own code)


def can_hand_over_connections() -> bool:
    """Whether this platform can pass sockets between processes (Unix: ``SCM_RIGHTS``)."""
    return hasattr(socket, "send_fds") and hasattr(socket, "AF_UNIX")


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port``, not yet listening. Raises OSError if the address is taken."""
    addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = addresses[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class HandedConnectionsServer(uvicorn.Server):
    """A uvicorn server with no listening socket of its own: it serves the connections the
    supervisor sends over ``channel``, and tells the supervisor when it is ready for them."""

    def __init__(self, config: uvicorn.Config, channel: socket.socket):
        super().__init__(config)
        self.channel = channel
        self._handshakes: set[asyncio.Task[Any]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # the lifespan (models load and warm up), no listening; a failure exits with STARTUP_FAILURE
        await super().startup(sockets=[])
        loop = asyncio.get_running_loop()
        self.channel.setblocking(False)
        loop.add_reader(self.channel.fileno(), self._take_connections, loop)
        self.channel.send(READY)

    def _protocol(self) -> asyncio.Protocol:
        """What uvicorn's own listening server makes for each connection. uvicorn has no public API
        for serving an accepted socket, so this repeats the arguments ``Server.startup`` gives its
        protocol class (uvicorn 0.54); tests/app/test_workers.py serves real requests through it."""
        config = self.config
        return config.http_protocol_class(  # type: ignore[call-arg, no-any-return]
            config=config, server_state=self.server_state, app_state=self.lifespan.state
        )

    def _take_connections(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(self.channel, len(READY), 1)
            except BlockingIOError:
                return
            except OSError:
                message, fds = b"", []
            if not message and not fds:  # the supervisor is gone: finish what is in flight, exit
                loop.remove_reader(self.channel.fileno())
                self.should_exit = True
                return
            for fd in fds:
                connection = socket.socket(fileno=fd)
                connection.setblocking(False)
                task = loop.create_task(loop.connect_accepted_socket(self._protocol, connection))
                self._handshakes.add(task)
                task.add_done_callback(self._handshakes.discard)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.channel.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(self.channel.fileno())
            self.channel.close()  # the supervisor sends nothing more here
        await super().shutdown(sockets=sockets)


def serve_worker(channel: socket.socket, settings: Settings, supervisor: int) -> None:
    """One worker process: one uvicorn server, the app from ``app.asgi``, connections from ``channel``."""
    _die_with(supervisor)
    configure_logging(settings.log_level)
    os.environ["VIT_DIGITS_LOAD_BEFORE_LISTEN"] = "true"  # ready only once the models are loaded
    config = uvicorn.Config("app.asgi:app", **uvicorn_options(settings))
    HandedConnectionsServer(config, channel).run()


def _die_with(supervisor: int) -> None:
    """On Linux, have the kernel SIGTERM this worker when the supervisor dies, even by SIGKILL,
    rather than leave it serving as an orphan."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before prctl took effect
        raise SystemExit(0)


@dataclass
class Worker:
    """The supervisor's view of one worker process and the channel it sends connections on."""

    index: int
    process: BaseProcess
    channel: socket.socket
    started: float = field(default_factory=time.monotonic)
    ready: bool = False


class Supervisor:
    """Runs ``settings.workers`` worker processes until SIGTERM or SIGINT, and hands each new
    connection to the next ready one."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._selector = selectors.DefaultSelector()
        self._workers: list[Worker] = []
        self._next = 0  # where the round robin goes on
        self._accepting = False
        self._stop = False

    def run(self) -> int:
        """Serve until told to stop; the process exit code (0 after a signal, 1 on failure)."""
        s = self.settings
        try:
            self._listener = listening_socket(s.host, s.port)
        except OSError as exc:
            reason = "the address is already in use" if exc.errno == errno.EADDRINUSE else str(exc)
            log.error(f"cannot listen: {reason}", extra={"host": s.host, "port": s.port})
            return 1
        self._listener.setblocking(False)
        wake, self._wake_signal = socket.socketpair()  # signals interrupt the select() below
        for end in (wake, self._wake_signal):
            end.setblocking(False)
        signal.set_wakeup_fd(self._wake_signal.fileno())
        self._selector.register(wake, selectors.EVENT_READ, None)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self._workers = [self._start(i) for i in range(s.workers)]
        quick_exits = [0] * s.workers
        code = 0
        try:
            while not self._stop:
                for key, _ in self._selector.select(timeout=0.5):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif isinstance(key.data, Worker):
                        self._hear_from(key.data)
                    else:
                        wake.recv(512)  # a signal arrived; its handler has run
                for worker in list(self._workers):
                    if worker.process.is_alive():
                        continue
                    lived = time.monotonic() - worker.started
                    i = worker.index
                    if worker.process.exitcode == STARTUP_FAILURE:
                        log.error(
                            "a worker could not start (see its log: the models failed to load); stopping",
                            extra={"worker": i, "pid": worker.process.pid},
                        )
                        self._stop, code = True, 1
                        break
                    quick_exits[i] = quick_exits[i] + 1 if lived < QUICK_EXIT_S else 0
                    log.warning(
                        "worker exited; restarting it",
                        extra={"worker": i, "pid": worker.process.pid, "exitcode": worker.process.exitcode},
                    )
                    self._forget(worker)
                    if quick_exits[i] >= MAX_QUICK_EXITS:
                        log.error("a worker keeps dying right after it starts; giving up", extra={"worker": i})
                        self._stop, code = True, 1
                        break
                    self._workers[i] = self._start(i)
        finally:
            self._shutdown()
        return code

    def _start(self, index: int) -> Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        process = self._context.Process(
            target=serve_worker, args=(theirs, self.settings, os.getpid()), name=f"vit-digits-worker-{index}"
        )
        process.start()
        theirs.close()  # the child has its own copy
        ours.setblocking(False)
        worker = Worker(index, process, ours)
        self._selector.register(ours, selectors.EVENT_READ, worker)
        return worker

    def _hear_from(self, worker: Worker) -> None:
        """A worker reports ready, or its end of the channel closed (it is exiting)."""
        try:
            message = worker.channel.recv(len(READY))
        except BlockingIOError:
            return
        except OSError:
            message = b""
        if message != READY:
            self._forget(worker)
            return
        worker.ready = True
        log.info("worker ready", extra={"worker": worker.index, "pid": worker.process.pid})
        self._update_accepting()

    def _forget(self, worker: Worker) -> None:
        worker.ready = False
        if worker.channel.fileno() >= 0:
            self._selector.unregister(worker.channel)
            worker.channel.close()
        self._update_accepting()

    def _update_accepting(self) -> None:
        """Accept connections only while some worker can take them; they wait in the backlog otherwise."""
        ready = any(w.ready for w in self._workers)
        if ready and not self._accepting:
            if not self._listening_started():
                self._listener.listen(BACKLOG)
                s = self.settings
                log.info("serving", extra={"host": s.host, "port": s.port, "workers": s.workers})
            self._selector.register(self._listener, selectors.EVENT_READ, None)
        elif not ready and self._accepting:
            self._selector.unregister(self._listener)
        self._accepting = ready

    def _listening_started(self) -> bool:
        return bool(self._listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: leave the rest in the backlog
                log.warning("accept failed", extra={"error": str(exc)})
                return
            with connection:
                if connection.family != socket.AF_UNIX:
                    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._hand_over(connection)

    def _hand_over(self, connection: socket.socket) -> None:
        """Send ``connection`` to the next ready worker in turn; our copy closes after."""
        count = len(self._workers)
        for step in range(count):
            worker = self._workers[(self._next + step) % count]
            if not worker.ready:
                continue
            try:
                socket.send_fds(worker.channel, [b"c"], [connection.fileno()])
            except OSError:  # it is exiting: the next one takes the connection
                self._forget(worker)
                continue
            self._next = (self._next + step + 1) % count
            return
        log.warning("no worker could take a connection; closed it")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop = True

    def _shutdown(self) -> None:
        """Stop accepting, SIGTERM every worker (uvicorn's graceful shutdown), then SIGKILL what is left."""
        self._listener.close()
        for worker in self._workers:
            if worker.process.is_alive():
                worker.process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for worker in self._workers:
            worker.process.join(max(deadline - time.monotonic(), 0))
            if worker.process.is_alive():
                log.warning("worker did not stop in time; killing it", extra={"pid": worker.process.pid})
                worker.process.kill()
                worker.process.join()
            if worker.channel.fileno() >= 0:
                worker.channel.close()
        log.info("stopped")
