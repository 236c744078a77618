"""Which uploads the server decodes itself (a small plain PNG: app.decoding.is_small_png) rather than
in a decoder process: only those whose decoding cost the checked fields bound."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.decoding import is_small_png
from tests.crafted import encode, png16, png_chunk

DIGIT = np.tile(np.linspace(0, 255, 28, dtype=np.uint8), (28, 1))


def test_an_mnist_size_png_is_decoded_in_the_server():
    assert is_small_png(encode(Image.fromarray(DIGIT), "PNG"))
    assert is_small_png(encode(Image.fromarray(DIGIT).convert("P"), "PNG"))  # a palette is pixels too


@pytest.mark.parametrize(
    "data",
    [
        encode(Image.fromarray(DIGIT).resize((65, 65)), "PNG"),  # wider than 64
        b"",
        encode(Image.fromarray(DIGIT), "PNG")[:-12] + png_chunk(b"tEXt", b"k\x00v") + png_chunk(b"IEND", b""),
        encode(Image.fromarray(DIGIT), "PNG")[:40],  # cut off
        encode(Image.fromarray(DIGIT), "PNG") + b"trailing bytes",
        png16(DIGIT.astype(np.uint16) * 257),  # 16 bits a sample
        encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)), "PNG"),  # > 4 KB
        encode(Image.fromarray(DIGIT), "JPEG"),
    ],
    ids=["65-pixels", "empty", "text-chunk", "cut-off", "trailing-bytes", "16-bit", "over-4-KB", "jpeg"],
)
def test_anything_else_goes_to_a_decoder_process(data):
    assert not is_small_png(data)
