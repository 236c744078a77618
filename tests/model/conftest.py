"""Model fixtures: real MNIST digits from the committed slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def digits(mnist_root: Path) -> np.ndarray:
    """The first 40 MNIST test digits, (40, 28, 28) uint8, light on dark."""
    from training.data import load_split

    test = load_split(mnist_root, train=False)
    return test.images[:40].numpy()
