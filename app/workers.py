"""Several uvicorn worker processes, each with its own ``SO_REUSEPORT`` listening socket.

uvicorn's own ``--workers`` binds one socket in the parent and shares it: whichever worker wakes
first accepts every connection waiting in the backlog, so a burst of new keep-alive connections can
land on one worker while the other idles. Measured here with 32 wrk connections and 2 workers:
splits of 24/8, 7/25, 11/21 and 32/0 in four runs, and half the throughput in the last. With a
socket per worker and ``SO_REUSEPORT``, the kernel hashes each connection to one of the sockets,
so every worker gets its share.

The supervisor starts the workers, restarts one that dies, and on SIGTERM or SIGINT stops them all
gracefully (uvicorn finishes the requests in flight). Each worker loads its models before it
listens, so the port opens once the first worker is ready.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import uvicorn

from app.logs import configure_logging
from app.settings import Settings

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0  # how long a worker may take to finish its requests before it is killed
QUICK_EXIT_S = 10.0  # a worker that dies sooner than this after starting counts as failing
MAX_QUICK_EXITS = 5  # consecutive quick deaths of one worker before the supervisor gives up
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` that other processes may bind too (SO_REUSEPORT).

    Not listening yet: the kernel sends connections only to listening sockets, and uvicorn calls
    ``listen`` once the app has started, so a worker that is still loading gets no connections.
    """
    family, kind, proto, _, address = _address(host, port)
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def port_is_free(host: str, port: int) -> bool:
    """Whether nobody else holds ``host:port``: a bind *without* SO_REUSEPORT fails if anyone does,
    including another instance of this service."""
    family, kind, proto, _, address = _address(host, port)
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            return False
    return True


def _address(host: str, port: int) -> tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]


def serve_worker(host: str, port: int, log_level: str, supervisor: int) -> None:
    """One worker process: its own socket, one uvicorn server, the app from ``app.asgi``.

    The worker listens only once its models are loaded and warmed up, so that a restarted worker
    takes no connections it cannot answer yet.
    """
    _die_with(supervisor)
    configure_logging(log_level)
    os.environ["VIT_DIGITS_LOAD_BEFORE_LISTEN"] = "true"
    config = uvicorn.Config("app.asgi:app", log_config=None, access_log=False)
    uvicorn.Server(config).run(sockets=[reuseport_socket(host, port)])


def _die_with(supervisor: int) -> None:
    """On Linux, have the kernel SIGTERM this worker when the supervisor dies, even by SIGKILL,
    rather than leave it serving as an orphan that still holds the port."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before prctl took effect
        raise SystemExit(0)


class Supervisor:
    """Runs ``settings.workers`` worker processes until SIGTERM or SIGINT."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._stop = threading.Event()

    def run(self) -> int:
        """Serve until told to stop; the process exit code (0 after a signal, 1 on failure)."""
        s = self.settings
        if not port_is_free(s.host, s.port):
            log.error("cannot listen: the address is already in use", extra={"host": s.host, "port": s.port})
            return 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        workers = [self._start(i) for i in range(s.workers)]
        started = [time.monotonic()] * s.workers
        quick_exits = [0] * s.workers
        log.info("serving", extra={"host": s.host, "port": s.port, "workers": s.workers})
        code = 0
        while not self._stop.wait(0.5):
            for i, worker in enumerate(workers):
                if worker.is_alive():
                    continue
                lived = time.monotonic() - started[i]
                quick_exits[i] = quick_exits[i] + 1 if lived < QUICK_EXIT_S else 0
                log.warning(
                    "worker exited; restarting it",
                    extra={"worker": i, "pid": worker.pid, "exitcode": worker.exitcode, "lived_s": round(lived, 1)},
                )
                if quick_exits[i] >= MAX_QUICK_EXITS:
                    log.error("a worker keeps dying right after it starts; giving up", extra={"worker": i})
                    self._stop.set()
                    code = 1
                    break
                workers[i], started[i] = self._start(i), time.monotonic()
        self._shutdown(workers)
        return code

    def _start(self, index: int) -> BaseProcess:
        s = self.settings
        process = self._context.Process(
            target=serve_worker, args=(s.host, s.port, s.log_level, os.getpid()), name=f"vit-digits-worker-{index}"
        )
        process.start()
        return process

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()

    def _shutdown(self, workers: list[BaseProcess]) -> None:
        """SIGTERM to every worker (uvicorn's graceful shutdown), then SIGKILL what is left."""
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for worker in workers:
            worker.join(max(deadline - time.monotonic(), 0))
            if worker.is_alive():
                log.warning("worker did not stop in time; killing it", extra={"pid": worker.pid})
                worker.kill()
                worker.join()
        log.info("stopped")
