"""App fixtures: the app in-process (httpx TestClient, lifespan run) and a real uvicorn server."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.settings import Settings
from tests.conftest import ROOT


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def digit_png(mnist_root) -> bytes:
    from training.data import load_split

    return png_bytes(load_split(mnist_root, train=False).images[0].numpy())


def wait_ready(get: Callable[[str], httpx.Response], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError("the service did not become ready")


@pytest.fixture
def make_client(tiny_checkpoint: Path) -> Iterator[Callable[..., TestClient]]:
    """Factory: a started app with settings overrides (default: the tiny checkpoint)."""
    clients: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        # CPU unless a test says otherwise: on a host with a GPU, auto would serve the checkpoint with torch
        defaults = {"checkpoints": [tiny_checkpoint], "device": "cpu"}
        settings = Settings(**{**defaults, **overrides})  # type: ignore[arg-type]
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        if overrides.get("_no_wait") is None:
            wait_ready(client.get)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(checkpoint: Path, **env: str) -> Iterator[str]:
    """A real ``python -m app`` process on a free loopback port; yields its base URL."""
    with serve_process(checkpoint, **env) as (base, _):
        yield base


@contextmanager
def serve_process(checkpoint: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """:func:`serve`, yielding the process too."""
    port = free_port()
    settings = {
        "VIT_DIGITS_CHECKPOINTS": str(checkpoint),
        "VIT_DIGITS_PORT": str(port),
        "VIT_DIGITS_HOST": "127.0.0.1",
        "VIT_DIGITS_WORKERS": "1",  # one process: /metrics then counts every request
        "VIT_DIGITS_DEVICE": "cpu",
        "PYTHONPATH": str(ROOT),
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        env=dict(os.environ, **settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(lambda path: httpx.get(base + path, timeout=2))
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="session")
def live_server(tiny_checkpoint: Path) -> Iterator[str]:
    """The service on loopback, serving the tiny checkpoint, with a 200 kB body limit."""
    with serve(tiny_checkpoint, VIT_DIGITS_MAX_UPLOAD_BYTES="200000") as base:
        yield base
