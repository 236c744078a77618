"""App fixtures: the app in-process (httpx TestClient, lifespan run) and a real uvicorn server."""

from __future__ import annotations

import io
import subprocess
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
from tests.servers import Output, serving


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


@contextmanager
def serve(
    checkpoint: Path, *, stderr: Output = subprocess.DEVNULL, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real ``python -m app`` (one worker, on the CPU unless ``env`` says otherwise) on a free
    loopback port, ready; yields its base URL and process."""
    with serving(checkpoint, stderr=stderr, **{"VIT_DIGITS_DEVICE": "cpu", **env}) as server:
        yield server


LIVE_LIMITS = {"VIT_DIGITS_MAX_UPLOAD_BYTES": "200000"}


@pytest.fixture(scope="session")
def live_server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where :func:`live_server` writes its log (stderr)."""
    return tmp_path_factory.mktemp("live") / "stderr.log"


@pytest.fixture(scope="session")
def live_server(tiny_checkpoint: Path, live_server_log: Path) -> Iterator[str]:
    """The service on loopback, serving the tiny checkpoint, with a 200 kB body limit."""
    with live_server_log.open("wb") as log, serve(tiny_checkpoint, stderr=log, **LIVE_LIMITS) as (base, _):
        yield base
