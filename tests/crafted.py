"""Pictures made byte by byte: the odd ones real programs write and the hostile ones of issue 32.

Each function returns the bytes of one file. Standard library, NumPy and Pillow only.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ORIENTATION = 0x0112
# EXIF orientation -> how to store an upright picture so that a viewer that honours the tag shows
# it upright: the inverse of the transpose the tag asks for
STORED = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of each chunk of a well-formed PNG."""
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def png_from_chunks(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return PNG_SIGNATURE + b"".join(png_chunk(kind, data) for kind, data in chunks)


def png_with_chunks_before_data(png: bytes, extra: list[tuple[bytes, bytes]]) -> bytes:
    """``png`` with ``extra`` chunks right after its header (where metadata goes)."""
    chunks = png_chunks(png)
    return png_from_chunks([chunks[0], *extra, *chunks[1:]])


def png16(gray_or_rgb: np.ndarray) -> bytes:
    """A 16-bit PNG (grayscale for (H, W), RGB for (H, W, 3)) of uint16 samples, written by hand:
    Pillow writes no 16-bit RGB."""
    height, width = gray_or_rgb.shape[:2]
    colour = 2 if gray_or_rgb.ndim == 3 else 0
    rows = gray_or_rgb.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    return png_from_chunks([(b"IHDR", header), (b"IDAT", zlib.compress(raw)), (b"IEND", b"")])


def exif(orientation: int, resolution_unit_text: bool = False) -> bytes:
    """Little-endian EXIF (a TIFF header and one directory) with ``orientation``; with
    ``resolution_unit_text`` also a ResolutionUnit stored as ASCII, where the standard has a SHORT."""
    entries = [(ORIENTATION, 3, 1, struct.pack("<HH", orientation, 0))]
    if resolution_unit_text:
        entries.append((0x0128, 2, 4, b"cm\x00\x00"))
    directory = struct.pack("<H", len(entries))
    directory += b"".join(struct.pack("<HHI", tag, kind, count) + value for tag, kind, count, value in entries)
    return b"II*\x00" + struct.pack("<I", 8) + directory + b"\x00\x00\x00\x00"


def rotated(image: Image.Image, fmt: str, orientation: int, resolution_unit_text: bool = False) -> bytes:
    """``image`` stored turned, in ``fmt``, with the EXIF ``orientation`` that turns it upright."""
    stored = image.transpose(STORED[orientation])
    data = exif(orientation, resolution_unit_text)
    if fmt == "JPEG":
        return encode(stored, fmt, exif=b"Exif\x00\x00" + data, quality=95)
    if fmt == "TIFF":
        return encode(stored, fmt, tiffinfo={ORIENTATION: orientation})
    return encode(stored, fmt, exif=data, **({"lossless": True} if fmt == "WEBP" else {}))


def tiff_with_strip_offsets(count: int, kind: int = 4, side: int = 256) -> bytes:
    """An uncompressed ``side`` x ``side`` grayscale TIFF of one row a strip whose StripOffsets
    table holds ``count`` entries of TIFF type ``kind`` (1 BYTE, 3 SHORT, 4 LONG, 12 DOUBLE). Each
    entry is a strip Pillow decodes (past the last row it starts over, as for another plane)."""
    sizes = {1: 1, 3: 2, 4: 4, 12: 8}
    formats = {1: "B", 3: "H", 4: "I", 12: "d"}
    entries = 8
    table_at = 8 + 2 + entries * 12 + 4
    pixels_at = table_at + count * sizes[kind]
    offset = min(pixels_at, {1: 255, 3: 65535}.get(kind, pixels_at))  # where the type can point
    table = struct.pack(f"<{count}{formats[kind]}", *([offset] * count))
    directory = [
        (256, 3, 1, side),  # ImageWidth
        (257, 3, 1, side),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: black is zero
        (273, kind, count, table_at),  # StripOffsets
        (278, 3, 1, 1),  # RowsPerStrip
        (279, 4, 1, side),  # StripByteCounts
    ]
    ifd = struct.pack("<H", entries)
    for tag, typ, n, value in directory:
        packed = struct.pack("<HHI", tag, typ, n)
        ifd += packed + (struct.pack("<HH", value, 0) if typ == 3 and n == 1 else struct.pack("<I", value))
    ifd += b"\x00\x00\x00\x00"
    pixels = np.full((side, side), 200, np.uint8)
    pixels[side // 4 : 3 * side // 4, side // 2 - 8 : side // 2 + 8] = 20
    return b"II*\x00" + struct.pack("<I", 8) + ifd + table + pixels.tobytes()


def jpeg_segments(data: bytes) -> tuple[list[bytes], bytes]:
    """A baseline or progressive JPEG cut into its segments before the first scan (each with its
    marker) and the rest (scans and what lies between them, through EOI)."""
    segments, pos = [], 2
    while data[pos + 1] != 0xDA:
        (length,) = struct.unpack_from(">H", data, pos + 2)
        segments.append(data[pos : pos + 2 + length])
        pos += 2 + length
    return segments, data[pos:]


def jpeg_with_empty_app_markers(jpeg: bytes, count: int) -> bytes:
    """``jpeg`` with ``count`` empty APP1 segments after its start-of-image marker."""
    return jpeg[:2] + b"\xff\xe1\x00\x02" * count + jpeg[2:]


def progressive_jpeg_with_scans(image: Image.Image, repeats: int) -> bytes:
    """A progressive JPEG of ``image`` whose last scan (an AC refinement) is repeated ``repeats``
    more times: each repetition is another pass over every block for the decoder."""
    data = encode(image, "JPEG", progressive=True, quality=90)
    last = data.rindex(b"\xff\xda")
    scan = data[last:-2]  # through the end of its entropy-coded data; -2: the EOI marker
    return data[:-2] + scan * repeats + b"\xff\xd9"


def png_with_private_chunks(png: bytes, count: int) -> bytes:
    """``png`` with ``count`` empty private chunks before its pixel data."""
    chunks = png_chunks(png)
    private = png_chunk(b"prIv", b"")
    head = PNG_SIGNATURE + png_chunk(*chunks[0])
    return head + private * count + b"".join(png_chunk(kind, data) for kind, data in chunks[1:])


def icc_chunk(size: int, seed: int = 0) -> tuple[bytes, bytes]:
    """An iCCP chunk holding ``size`` bytes of (incompressible) profile."""
    profile = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    return b"iCCP", b"photoshop ICC\x00\x00" + zlib.compress(profile)


def ztxt_chunk(keyword: str, size: int) -> tuple[bytes, bytes]:
    """A zTXt chunk whose text inflates to ``size`` bytes."""
    return b"zTXt", keyword.encode() + b"\x00\x00" + zlib.compress(b"x" * size)


def itxt_xmp_chunk(size: int) -> tuple[bytes, bytes]:
    """A compressed iTXt chunk of XMP (Adobe's keyword) inflating to ``size`` bytes."""
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">' + b" " * size + b"</x:xmpmeta>"
    return b"iTXt", b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + zlib.compress(xmp)
