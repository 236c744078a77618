"""The container checks before any codec: hostile structures refused in a bounded number of steps,
real pictures passed through as they are, a PNG's unread metadata left out."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from model.preprocess import ImageError, decode_image, open_image
from model.screening import MAX_JPEG_SCANS, MAX_PNG_CHUNKS, ScreeningError, screen
from tests.crafted import (
    encode,
    icc_chunk,
    jpeg_with_empty_app_markers,
    png_chunks,
    png_with_chunks_before_data,
    png_with_private_chunks,
    progressive_jpeg_with_scans,
    rotated,
    tiff_with_strip_offsets,
    ztxt_chunk,
)

# well within the time a handful of Python steps take, far below what the files cost Pillow (1-27 s)
QUICK_S = 0.5


def _bar(side: int = 64) -> Image.Image:
    canvas = np.full((side, side), 230, np.uint8)
    canvas[side // 5 : 4 * side // 5, side // 2 - 3 : side // 2 + 3] = 20
    return Image.fromarray(canvas)


def _refused_quickly(data: bytes, match: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ScreeningError, match=match):
        screen(data)
    assert time.perf_counter() - started < QUICK_S
    with pytest.raises(ImageError) as err:
        open_image(data)
    assert err.value.code == "invalid_image"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (tiff_with_strip_offsets(1_000_000, kind=1), "StripOffsets are of type 1"),  # 1 MB of one-byte entries
        (tiff_with_strip_offsets(100_000, kind=4), "StripOffsets hold 100000 entries"),
        (tiff_with_strip_offsets(4, kind=12), "StripOffsets are of type 12"),  # DOUBLE
        (jpeg_with_empty_app_markers(encode(_bar(), "JPEG"), 1_200_000), "more than 512 segments"),
        (progressive_jpeg_with_scans(_bar(256), 3000), "scans, more than"),
        (png_with_private_chunks(encode(_bar(), "PNG"), 400_000), f"more than {MAX_PNG_CHUNKS} chunks"),
    ],
    ids=[
        "tiff-1M-byte-strips",
        "tiff-100k-long-strips",
        "tiff-double-strips",
        "jpeg-app-markers",
        "jpeg-scans",
        "png-private-chunks",
    ],
)
def test_hostile_structures_are_refused_in_bounded_steps(data, match):
    _refused_quickly(data, match)


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        ("PNG", {}),
        ("JPEG", {}),
        ("JPEG", {"progressive": True}),
        ("TIFF", {}),
        ("TIFF", {"compression": "tiff_lzw"}),
        ("GIF", {}),
        ("WEBP", {}),
        ("BMP", {}),
    ],
)
def test_real_pictures_pass_through_untouched(fmt, params):
    data = encode(_bar(300).convert("RGB"), fmt, **params)
    assert screen(data) is data


def test_progressive_jpeg_under_the_scan_cap_passes():
    data = progressive_jpeg_with_scans(_bar(64), MAX_JPEG_SCANS - 20)
    assert screen(data) is data


def test_png_metadata_is_left_out_and_what_the_decoder_needs_kept():
    png = encode(_bar(), "PNG")
    data = png_with_chunks_before_data(png, [icc_chunk(100_000), ztxt_chunk("comment", 100), (b"prIv", b"x" * 50)])
    screened = screen(data)
    assert [kind for kind, _ in png_chunks(screened)] == [kind for kind, _ in png_chunks(png)]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(screened))), np.asarray(_bar()))


def test_png_orientation_is_kept_where_it_can_be_and_oversized_exif_dropped():
    data = rotated(_bar(), "PNG", 6)
    assert screen(data) is data  # the eXIf chunk is kept
    big = png_with_chunks_before_data(encode(_bar(), "PNG"), [(b"eXIf", b"II*\x00" + b"\x00" * 70_000)])
    assert b"eXIf" not in [kind for kind, _ in png_chunks(screen(big))]


def test_truncated_png_is_left_for_the_decoder_to_refuse():
    data = encode(_bar(), "PNG")
    assert screen(data[: len(data) // 2]) == data[: len(data) // 2]
    with pytest.raises(ImageError) as err:
        decode_image(data[: len(data) // 2])
    assert err.value.code == "invalid_image"
