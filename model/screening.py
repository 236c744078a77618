"""Bounded checks of an upload's container structure, before any codec parses it.

Pillow parses a file's headers in Python, one element at a time, and trusts their counts: a PNG's
chunks, a JPEG's marker segments, a TIFF's strip offsets. Hostile files hold millions of them in a
few megabytes, which costs seconds of CPU and, for a TIFF's strips, gigabytes. :func:`screen` walks
the same structure with a fixed bound on the number of steps and refuses what no real picture
holds. It also drops a PNG's metadata chunks that the service never reads (colour profiles, text,
private chunks), which Pillow would otherwise inflate or refuse. These checks are cheap and make a
hostile file's answer quick and clear; what bounds the cost of any file is the decoder process
that runs them (app/decoding.py), not these checks.
"""

from __future__ import annotations

import struct
import zlib

from PIL import PngImagePlugin

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8"
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, either byte order
# Pictures hold a few dozen chunks; an 8 KB-per-IDAT encoder writes ~600 for a 5 MB file.
MAX_PNG_CHUNKS = 10_000
# Chunks Pillow needs to decode a PNG and turn it upright; every other chunk is dropped unread.
_PNG_KEPT = frozenset({b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND", b"eXIf", b"acTL", b"fcTL", b"fdAT"})
# an eXIf chunk over this is dropped (the picture is read as stored): a JPEG's EXIF fits in 64 KB
MAX_PNG_EXIF = 64 * 1024
# Text chunks that can carry the EXIF orientation (ImageMagick's raw EXIF, Adobe's XMP), kept when
# they inflate to at most Pillow's cap for one chunk
_ORIENTATION_TEXT = frozenset({b"Raw profile type exif", b"XML:com.adobe.xmp"})
_TEXT = frozenset({b"tEXt", b"zTXt", b"iTXt"})
# A JPEG's segments before its first scan: tables, frame header, metadata (an ICC profile is split
# into 64 KB APP2 segments: 16 MB would be 256 of them)
MAX_JPEG_SEGMENTS = 512
# Start-of-scan markers in the whole file: progressive encoders write about ten scans; each one is
# a pass over every coefficient of the picture
MAX_JPEG_SCANS = 100
# TIFF: entries of the first directory (pictures have tens) and entries of a strip or tile table (a
# picture within the pixel caps with one strip per row has a few thousand)
MAX_TIFF_ENTRIES = 1_000
MAX_TIFF_STRIPS = 65_536
_TIFF_TABLES = {273: "StripOffsets", 279: "StripByteCounts", 324: "TileOffsets", 325: "TileByteCounts"}
_TIFF_TABLE_TYPES = frozenset({3, 4, 16})  # SHORT, LONG, LONG8: what the specification allows


class ScreeningError(ValueError):
    """A container whose structure no real picture has; the message says what was found."""


def screen(data: bytes) -> bytes:
    """``data`` checked as its signature says (PNG, JPEG, TIFF; other formats as they are), with a
    PNG's unread metadata chunks removed: the bytes to decode.

    Raises:
        ScreeningError: more elements than any real picture holds, or a table of the wrong type.
    """
    if data.startswith(PNG_SIGNATURE):
        return _screen_png(data)
    if data.startswith(JPEG_SIGNATURE):
        _screen_jpeg(data)
    elif data[:4] in TIFF_SIGNATURES:
        _screen_tiff(data)
    return data


def claimed_format(data: bytes) -> str | None:
    """The accepted format whose signature ``data`` starts with, if any: what the caller meant to
    send when no decoder takes the header that follows."""
    if data.startswith(PNG_SIGNATURE):
        return "PNG"
    if data.startswith(JPEG_SIGNATURE):
        return "JPEG"
    if data[:4] in TIFF_SIGNATURES:
        return "TIFF"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:2] == b"BM" and len(data) >= 26:  # a BMP file header and the start of its info header
        return "BMP"
    return None


def _screen_png(data: bytes) -> bytes:
    """The PNG's chunks, at most :data:`MAX_PNG_CHUNKS`, with those Pillow does not need left out;
    ``data`` itself when none is. A chunk that runs past the end is kept: Pillow reports it."""
    kept: list[memoryview] = [memoryview(data)[: len(PNG_SIGNATURE)]]
    dropped, pos, count, text_left = False, len(PNG_SIGNATURE), 0, PngImagePlugin.MAX_TEXT_MEMORY
    view = memoryview(data)
    while pos + 8 <= len(data):
        count += 1
        if count > MAX_PNG_CHUNKS:
            raise ScreeningError(f"the PNG holds more than {MAX_PNG_CHUNKS} chunks")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        keep = kind in _PNG_KEPT and not (kind == b"eXIf" and length > MAX_PNG_EXIF)
        if kind in _TEXT and (size := _orientation_text_size(kind, view[pos + 8 : min(end - 4, len(data))])):
            keep, text_left = size <= text_left, text_left - size
        if keep:
            kept.append(view[pos:end])
        dropped = dropped or not keep
        if kind == b"IEND" or end >= len(data):
            kept.append(view[end:])
            break
        pos = end
    else:
        kept.append(view[pos:])
    return b"".join(kept) if dropped else data


def _orientation_text_size(kind: bytes, body: memoryview) -> int:
    """The text's size once inflated if it is one that can carry the orientation and inflates to at
    most Pillow's cap for one chunk (inflated no further than that); 0 otherwise (dropped)."""
    keyword, _, rest = bytes(body[:80]).partition(b"\x00")
    if keyword not in _ORIENTATION_TEXT:
        return 0
    start = len(keyword) + 1
    if kind == b"tEXt":
        size = len(body) - start
    elif kind == b"zTXt":
        size = _inflated_size(body[start + 1 :])
    else:  # iTXt: compression flag, method, language, translated keyword, then the text
        flag = rest[:1]
        fields = bytes(body[start + 2 :]).split(b"\x00", 2)
        text = fields[2] if len(fields) == 3 else b""
        size = _inflated_size(memoryview(text)) if flag == b"\x01" else len(text)
    return size if 0 < size <= PngImagePlugin.MAX_TEXT_CHUNK else 0


def _inflated_size(compressed: memoryview) -> int:
    """The size of ``compressed`` inflated, up to one byte over Pillow's cap for a chunk; 0 if it
    is not zlib data."""
    try:
        return len(zlib.decompressobj().decompress(compressed, PngImagePlugin.MAX_TEXT_CHUNK + 1))
    except zlib.error:
        return 0


def _screen_jpeg(data: bytes) -> None:
    """At most :data:`MAX_JPEG_SEGMENTS` marker segments before the first scan, at most
    :data:`MAX_JPEG_SCANS` scans in all (counted by their marker, which no entropy-coded data holds:
    a 0xFF byte there is followed by 0x00 or a restart marker)."""
    scans = data.count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        raise ScreeningError(f"the JPEG holds {scans} scans, more than {MAX_JPEG_SCANS}")
    pos = 2
    for _ in range(MAX_JPEG_SEGMENTS):  # a fill byte (0xFF before a marker) counts as a segment
        if pos + 4 > len(data) or data[pos] != 0xFF:
            return  # truncated or corrupt: the decoder reports it
        marker = data[pos + 1]
        if marker in (0xDA, 0xD9):  # start of scan, end of image
            return
        if marker == 0xFF or 0xD0 <= marker <= 0xD8 or marker == 0x01:  # fill byte; markers without a length
            pos += 1 if marker == 0xFF else 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    raise ScreeningError(f"the JPEG holds more than {MAX_JPEG_SEGMENTS} segments before its first scan")


def _screen_tiff(data: bytes) -> None:
    """The first directory: at most :data:`MAX_TIFF_ENTRIES` entries, and its strip and tile tables
    of an integer type with at most :data:`MAX_TIFF_STRIPS` entries."""
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    try:
        if big:  # BigTIFF: 8-byte offsets and counts
            (offset,) = struct.unpack_from(order + "Q", data, 8)
            (entries,) = struct.unpack_from(order + "Q", data, offset)
            entry, size, first = struct.Struct(order + "HHQ"), 20, offset + 8
        else:
            (offset,) = struct.unpack_from(order + "I", data, 4)
            (entries,) = struct.unpack_from(order + "H", data, offset)
            entry, size, first = struct.Struct(order + "HHI"), 12, offset + 2
        if entries > MAX_TIFF_ENTRIES:
            raise ScreeningError(f"the TIFF's first directory holds {entries} entries, more than {MAX_TIFF_ENTRIES}")
        for index in range(entries):
            tag, kind, count = entry.unpack_from(data, first + index * size)
            name = _TIFF_TABLES.get(tag)
            if name is None:
                continue
            if kind not in _TIFF_TABLE_TYPES:
                raise ScreeningError(f"the TIFF's {name} are of type {kind}, not an integer type")
            if count > MAX_TIFF_STRIPS:
                raise ScreeningError(f"the TIFF's {name} hold {count} entries, more than {MAX_TIFF_STRIPS}")
    except struct.error:
        return  # a directory past the end: the decoder reports it
