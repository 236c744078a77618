"""How the service's processes are run: one uvicorn server in this process, or several under gunicorn.

Both are configured only through public settings: uvicorn's ``Config`` options, gunicorn's
settings and server hooks (its "custom application" API), and the ``CONFIG_KWARGS`` of
``uvicorn_worker.UvicornWorker``, the documented way to configure uvicorn inside gunicorn.

- One process (``workers=1``, what a container runs; the orchestrator scales replicas):
  ``uvicorn.Server`` serves the app here. SIGTERM stops taking connections, gives the requests in
  flight ``shutdown_grace_s`` to finish, cancels what is left and runs the app's shutdown.
- Several processes on one host: gunicorn's arbiter forks ``workers`` uvicorn workers, each
  listening on a socket of its own (``reuse_port``; or all on one shared socket). It restarts a
  worker that dies; one that stops answering for ``worker_timeout_s`` (hung, or stopped with
  SIGSTOP) is killed and replaced; one whose models fail to load stops the whole server (exit
  status 3). Each worker reports to Prometheus through prometheus_client's multiprocess files
  (:mod:`app.metrics`), so that ``/metrics`` adds up.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker
from uvicorn_worker import UvicornWorker

from app.settings import Settings

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when it is first imported
HEARTBEATS_PER_TIMEOUT = 4  # a worker tells the arbiter it is alive this often per worker_timeout_s
ARBITER_MARGIN_S = 2  # the arbiter waits this much longer than the workers' own grace before SIGKILL


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn ``Config`` options of every server of this service (one process or several)."""
    options: dict[str, Any] = {
        "http": settings.http,
        "timeout_keep_alive": settings.keep_alive_s,
        "timeout_graceful_shutdown": settings.shutdown_grace_s,
        "limit_concurrency": settings.max_connections,
        "log_config": None,
        "access_log": False,
    }
    if settings.http == "h11":
        options["h11_max_incomplete_event_size"] = settings.max_header_bytes
    return options


def serve_one(app: FastAPI, settings: Settings) -> None:
    """Serve ``app`` with one uvicorn server in this process until SIGTERM or SIGINT."""
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, **uvicorn_options(settings)))

    def exit_server() -> None:
        server.should_exit = True

    app.state.exit_server = exit_server  # lets the app stop the server when its models fail to load
    server.run()


def serve_workers(settings: Settings) -> int:
    """Serve with ``settings.workers`` uvicorn workers under gunicorn's arbiter; its exit status.

    Prometheus's multiprocess directory is made fresh for this server before any worker starts
    (or, if ``PROMETHEUS_MULTIPROC_DIR`` names one, emptied), and a temporary one is removed after.
    """
    if settings.reuse_port:
        if taken := _address_in_use(settings.host, settings.port):
            log.error("cannot listen on %s:%s: %s", settings.host, settings.port, taken)
            return 1
        # gunicorn's own "Listening at" names no address when each worker binds its own socket
        log.info("listening on %s:%s, a socket per worker", settings.host, settings.port)
    given = os.environ.get(MULTIPROC_ENV)
    directory = Path(given) if given else Path(tempfile.mkdtemp(prefix="vit-digits-metrics-"))
    _empty_metrics_dir(directory)
    os.environ[MULTIPROC_ENV] = str(directory)
    arbiter = os.getpid()
    try:
        WorkersApplication(settings).run()
    except SystemExit as exc:  # the arbiter exits through sys.exit, 3 if a worker failed to boot
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    finally:
        # a forked worker leaves through here too (gunicorn ends it with sys.exit): only the arbiter
        # may remove the directory, which the other workers still write to
        if not given and os.getpid() == arbiter:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


def _address_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound, or None. With ``reuse_port`` the arbiter binds nothing and each
    worker binds on its own, so an address taken by another program would fail every worker's boot in
    turn; this checks it once, before any worker starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn's own sockets do
            probe.bind((host, port))
    except OSError as exc:  # in use, an address this host does not have, IPv6 switched off, ...
        return "address in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
    return None


def _empty_metrics_dir(directory: Path) -> None:
    """Remove a previous server's metric files: their counts would be added to this one's."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


def _worker_exited(arbiter: Arbiter, worker: Worker) -> None:
    """gunicorn's ``child_exit`` hook: drop the gauges of a worker that is gone (its counts stay)."""
    from prometheus_client import multiprocess  # imported after PROMETHEUS_MULTIPROC_DIR is set

    multiprocess.mark_process_dead(worker.pid)


class WorkersApplication(BaseApplication):  # type: ignore[misc]
    """gunicorn configured from the service's settings; each worker builds the app after the fork."""

    def __init__(self, settings: Settings):
        # a worker's models are loaded and warmed up before it accepts connections (with a socket
        # per worker, the kernel may queue some on its socket meanwhile); one whose models fail to
        # load then exits with uvicorn's startup-failure status, and gunicorn stops
        self.settings = settings.model_copy(update={"load_before_listen": True})
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        host = f"[{s.host}]" if ":" in s.host else s.host
        for name, value in {
            "bind": [f"{host}:{s.port}"],
            "workers": s.workers,
            "worker_class": worker_class(s),
            "timeout": s.worker_timeout_s,
            "graceful_timeout": s.shutdown_grace_s + ARBITER_MARGIN_S,
            "keepalive": s.keep_alive_s,
            "loglevel": s.log_level,
            "logconfig_dict": gunicorn_log_config(s.log_level),
            "child_exit": _worker_exited,
            "proc_name": "vit-digits",
            "control_socket_disable": True,  # gunicorn 27's runtime control socket: not used here
            # each worker binds its own socket and the kernel hashes connections over them; one shared
            # socket let one worker take 95 of wrk's 128 connections (docs/PERFORMANCE.md)
            "reuse_port": s.reuse_port,
        }.items():
            self.cfg.set(name, value)

    def load(self) -> FastAPI:
        from app.logs import configure_logging
        from app.main import create_app  # after the fork: each worker has its own models and threads

        configure_logging(self.settings.log_level)
        return create_app(self.settings)


class ServiceWorker(UvicornWorker):  # type: ignore[misc]
    """uvicorn's gunicorn worker that also stops when its arbiter is gone, as gunicorn's own workers
    do, rather than serve on as an orphan after the arbiter was killed (even by SIGKILL)."""

    def notify(self) -> None:
        super().notify()
        if os.getppid() != self.ppid:
            self.log.warning("the arbiter is gone; shutting down (worker %s)", self.pid)
            os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown


def gunicorn_log_config(level: str) -> dict[str, Any]:
    """gunicorn's own messages as the service's JSON lines on stderr (``app.logs``), like the rest."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "app.logs.JsonFormatter"}},
        "handlers": {"console": handler, "error_console": handler},  # the names gunicorn's defaults use
        "root": {"level": level.upper(), "handlers": ["error_console"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
        },
    }


def worker_class(settings: Settings) -> type[ServiceWorker]:
    """:class:`ServiceWorker` with this service's uvicorn options."""
    options = uvicorn_options(settings) | {
        # uvicorn tells the arbiter it is alive once per timeout_notify; at the arbiter's own timeout
        # that would race its check and kill healthy workers, so it reports several times as often
        "timeout_notify": max(settings.worker_timeout_s / HEARTBEATS_PER_TIMEOUT, 0.5),
        "loop": "auto",
    }
    return type("VitDigitsWorker", (ServiceWorker,), {"CONFIG_KWARGS": options})
