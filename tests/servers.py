"""The service started as its users start it, ``python -m app`` in a process of its own on loopback:
the one way the tests over real sockets and the benchmarks (bench/) start it.

Standard library only, so that bench/lean_serving.py can use it inside the runtime image too.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
Output = int | IO[Any] | None  # where a server's stdout or stderr goes, as subprocess takes it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def app_env(checkpoints: Path, port: int, workers: int | None, root: Path, **env: str) -> dict[str, str]:
    """The environment of ``python -m app`` from ``root``, serving ``checkpoints`` on
    127.0.0.1:``port`` with ``workers`` processes (``None``: the setting's default); ``env``
    (``VIT_DIGITS_*`` variables) goes over all that."""
    settings = {
        "VIT_DIGITS_CHECKPOINTS": str(checkpoints),
        "VIT_DIGITS_PORT": str(port),
        "VIT_DIGITS_HOST": "127.0.0.1",
        "PYTHONPATH": str(root),
    }
    if workers is not None:
        settings["VIT_DIGITS_WORKERS"] = str(workers)
    return {**os.environ, **settings, **env}


def start_app(
    checkpoints: Path,
    port: int,
    *,
    workers: int | None = 1,
    root: Path = ROOT,
    stdout: Output = subprocess.DEVNULL,
    stderr: Output = subprocess.DEVNULL,
    **env: str,
) -> subprocess.Popen[bytes]:
    """``python -m app`` started (see :func:`app_env`); it is the caller's to wait for and to stop."""
    return subprocess.Popen(
        [sys.executable, "-m", "app"],
        cwd=root,
        env=app_env(checkpoints, port, workers, root, **env),
        stdout=stdout,
        stderr=stderr,
    )


def run_app(
    checkpoints: Path, *, workers: int | None = 1, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[bytes]:
    """``python -m app`` run until it exits, its output captured: a server that cannot start."""
    return subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        env=app_env(checkpoints, free_port(), workers, ROOT, **env),
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 120, interval: float = 0.05) -> None:
    """Return once ``base``/readyz answers 200.

    Raises:
        RuntimeError: the process exited, or ``timeout`` seconds passed, first.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet, or 503 while the models load
        time.sleep(interval)
    raise RuntimeError(f"the server at {base} was not ready after {timeout} s")


@contextmanager
def serving(
    checkpoints: Path, *, stdout: Output = subprocess.DEVNULL, stderr: Output = subprocess.DEVNULL, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """One ``python -m app`` worker on a free port, ready; yields its base URL and process, and
    stops it afterwards."""
    port = free_port()
    proc = start_app(checkpoints, port, stdout=stdout, stderr=stderr, **env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)
