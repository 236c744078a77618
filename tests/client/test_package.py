"""The client is its own small package: it installs and imports with httpx alone."""

from __future__ import annotations

import io
import subprocess
import sys
from importlib.metadata import distribution

import numpy as np
import pytest
from PIL import Image

from vit_digits_client.images import png_from_array, sniff
from vit_digits_client.progress import ProgressBar

SERVER_ONLY = {"torch", "onnxruntime", "fastapi", "starlette", "pydantic", "uvicorn", "numpy", "PIL", "app", "model"}


def test_client_depends_on_httpx_only() -> None:
    requirements = distribution("vit-digits-client").requires or []
    required = [r for r in requirements if "extra ==" not in r]
    assert [r.split(">")[0].split("<")[0].strip() for r in required] == ["httpx"]
    extras = {r.split(";")[1].split("==")[1].strip(" '\"") for r in requirements if "extra ==" in r}
    assert extras == {"numpy", "pillow"}


def test_importing_the_client_imports_no_server_nor_optional_module() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import vit_digits_client, vit_digits_client.cli"],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert "vit_digits_client" in imported and "httpx" in imported
    assert not imported & SERVER_ONLY, imported & SERVER_ONLY


@pytest.mark.parametrize(
    "pixels",
    [
        np.arange(28 * 20, dtype=np.uint8).reshape(28, 20),
        np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8),
        np.random.default_rng(1).integers(0, 256, (4, 3, 4), dtype=np.uint8),
    ],
    ids=["grey", "rgb", "rgba"],
)
def test_arrays_are_written_as_png_pillow_reads_back_the_same(pixels: np.ndarray) -> None:
    data = png_from_array(pixels)
    assert sniff(data) == "image/png"
    np.testing.assert_array_equal(np.array(Image.open(io.BytesIO(data))), pixels)


def test_arrays_that_are_no_picture_are_refused() -> None:
    for wrong in (np.zeros((2, 2, 2), np.uint8), np.full((2, 2), 300), np.zeros((0, 3), np.uint8)):
        with pytest.raises(ValueError, match="not a picture"):
            png_from_array(wrong)


def test_progress_bar_redraws_one_line() -> None:
    stream = io.StringIO()
    bar = ProgressBar(10, stream)
    bar(4)
    bar(10)
    bar.close()
    lines = stream.getvalue().split("\r")
    assert lines[1].startswith("[" + "#" * 12 + "." * 18 + "]  4/10 pictures")
    assert lines[2].startswith("[" + "#" * 30 + "] 10/10 pictures") and stream.getvalue().endswith("\n")
