"""Odd but real pictures of a digit read as the plain 8-bit one: 16 bits a sample, big metadata,
CMYK, palettes, grayscale or palette with alpha, 1 bit a pixel, EXIF orientation in every format
that carries it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from model.preprocess import open_image, prepare_bytes
from tests.crafted import (
    encode,
    icc_chunk,
    itxt_xmp_chunk,
    png16,
    png_with_chunks_before_data,
    rotated,
    ztxt_chunk,
)


def _digit(digits: np.ndarray, index: int = 0) -> np.ndarray:
    """A real MNIST digit as dark ink on light paper, on a canvas taller than wide (so that a
    picture read sideways cannot pass for the upright one)."""
    canvas = np.zeros((40, 28), np.uint8)
    canvas[6:34] = digits[index]
    return 255 - canvas


def _pixels(data: bytes) -> np.ndarray:
    return prepare_bytes(data).pixels


def _plain(gray: np.ndarray) -> np.ndarray:
    return _pixels(encode(Image.fromarray(gray), "PNG"))


def _as_stored(image: Image.Image, fmt: str) -> bytes:
    """``image`` in ``fmt`` as the rotated tests store it (JPEG at quality 95, lossless WebP)."""
    return encode(image, fmt, **({"quality": 95} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}))


def _alike(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grayscale_is_scaled_to_8_bits_not_clipped(digits, fmt):
    gray = _digit(digits)
    wide = gray.astype(np.uint16) * 257  # the same levels over the 16-bit range
    data = png16(wide) if fmt == "PNG" else encode(Image.fromarray(wide), "TIFF")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    np.testing.assert_array_equal(_pixels(data), _plain(gray))


def test_16_bit_rgb_is_scaled_to_8_bits(digits):
    gray = _digit(digits)
    wide = np.repeat(gray[..., None].astype(np.uint16) * 257, 3, axis=2)
    np.testing.assert_array_equal(_pixels(png16(wide)), _plain(gray))


@pytest.mark.parametrize(
    "chunk",
    [icc_chunk(100_000), ztxt_chunk("comment", 100_000), itxt_xmp_chunk(100_000)],
    ids=["icc-100KB", "ztxt-100KB", "xmp-100KB"],
)
def test_png_metadata_over_the_cap_is_ignored_not_refused(digits, chunk):
    gray = _digit(digits)
    data = png_with_chunks_before_data(encode(Image.fromarray(gray), "PNG"), [chunk])
    assert len(data) > 1000 or chunk[0] != b"iCCP"
    assert "icc_profile" not in open_image(data).info
    np.testing.assert_array_equal(_pixels(data), _plain(gray))


@pytest.mark.parametrize(("mode", "fmt"), [("P", "PNG"), ("P", "GIF"), ("P", "TIFF"), ("CMYK", "TIFF")])
def test_palette_and_cmyk_pictures_read_as_the_gray_one(digits, mode, fmt):
    gray = _digit(digits)
    rgb = Image.fromarray(gray).convert("RGB")  # an adaptive palette holds every gray level of the digit
    data = encode(rgb.convert(mode, palette=Image.Palette.ADAPTIVE) if mode == "P" else rgb.convert(mode), fmt)
    assert Image.open(io.BytesIO(data)).mode == mode
    np.testing.assert_allclose(_pixels(data), _plain(gray), atol=0.02)


def test_cmyk_jpeg_reads_as_the_gray_jpeg(digits):
    gray = _digit(digits)
    cmyk = encode(Image.fromarray(gray).convert("CMYK"), "JPEG", quality=95)
    plain = encode(Image.fromarray(gray), "JPEG", quality=95)
    assert _alike(_pixels(cmyk), _pixels(plain)) > 0.98


@pytest.mark.parametrize(("mode", "fmt"), [("LA", "PNG"), ("LA", "TIFF"), ("PA", "TIFF")])
def test_grayscale_or_palette_with_alpha(digits, mode, fmt):
    # opaque everywhere: the gray levels are the picture
    gray = _digit(digits)
    opaque = Image.fromarray(gray).convert(mode)
    np.testing.assert_allclose(_pixels(encode(opaque, fmt)), _plain(gray), atol=0.02)
    # a drawing on a transparent canvas: the alpha channel is the ink, whatever its colour
    ink = 255 - gray
    drawing = Image.merge("LA", (Image.new("L", (28, 40), 90), Image.fromarray(ink)))
    if mode == "PA":
        drawing = Image.merge("PA", (Image.new("P", (28, 40), 0), Image.fromarray(ink)))
    np.testing.assert_allclose(_pixels(encode(drawing, fmt)), _pixels(encode(Image.fromarray(ink), "PNG")), atol=0.02)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_one_bit_pictures(digits, fmt):
    binary = np.where(_digit(digits) > 127, 255, 0).astype(np.uint8)
    data = encode(Image.fromarray(binary).convert("1"), fmt)
    assert Image.open(io.BytesIO(data)).mode == "1"
    np.testing.assert_array_equal(_pixels(data), _plain(binary))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_pictures_read_upright(digits, fmt, orientation):
    upright = Image.fromarray(_digit(digits))
    data = rotated(upright, fmt, orientation)
    assert Image.open(io.BytesIO(data)).getexif().get(0x0112) == orientation
    want = _pixels(_as_stored(upright, fmt))
    if fmt == "JPEG":  # the stored picture is turned, so its compression differs
        assert _alike(_pixels(data), want) > 0.98
    else:
        np.testing.assert_array_equal(_pixels(data), want)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_orientation_8_with_resolution_unit_as_text_reads_upright(digits, fmt):
    # Pillow's own EXIF transpose rewrites the EXIF and fails on the text where a number should be
    upright = Image.fromarray(_digit(digits))
    data = rotated(upright, fmt, 8, resolution_unit_text=True)
    assert len(data) < 1500
    want = _pixels(_as_stored(upright, fmt))
    assert _alike(_pixels(data), want) > 0.98
