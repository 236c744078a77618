"""Client fixtures: a live ``python -m app`` serving the tiny checkpoint, and pictures to send it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.conftest import png_bytes, serve


@pytest.fixture(scope="session")
def server(tiny_checkpoint: Path) -> Iterator[str]:
    """The service on loopback with a batch limit of 4, so that a few pictures take several requests."""
    with serve(tiny_checkpoint, VIT_DIGITS_MAX_BATCH_FILES="4") as (base, _):
        yield base


@pytest.fixture(scope="session")
def digits(mnist_root: Path) -> list[bytes]:
    """Ten MNIST test digits as PNG files' bytes."""
    from training.data import load_split

    return [png_bytes(image.numpy()) for image in load_split(mnist_root, train=False).images[:10]]
