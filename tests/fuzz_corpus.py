"""A seeded corpus of mutated pictures for fuzzing the service's decoding: real pictures of a digit in
every accepted format (PNG, JPEG, GIF, WebP, TIFF, BMP; with EXIF, metadata, palettes, 16 bits,
progressive scans), each mutated the ways hostile files differ from real ones: bytes flipped, the
file cut short, chunks, marker segments, blocks or tags repeated, a TIFF or EXIF tag given the wrong
type or a huge count, header fields set to extremes, two files spliced.

Standard library, NumPy and Pillow only; the same seed gives the same corpus.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image, PngImagePlugin

from tests.crafted import encode, exif, icc_chunk, png16, png_chunks, png_from_chunks, png_with_chunks_before_data

Rng = np.random.Generator
EXTREMES = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF)
MOST_BYTES = 4_000_000  # a repeated element is repeated no further: the service refuses bodies over 5 MB unread


def seeds(digit: np.ndarray) -> dict[str, bytes]:
    """Real pictures of ``digit`` (uint8 28x28, light on dark): name -> bytes; the name's first word
    is the format."""
    small = Image.fromarray(255 - digit)
    big = small.resize((200, 150))
    rgb, rgba = big.convert("RGB"), big.convert("RGBA")
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "a digit", zip=True)
    tags = exif(6, resolution_unit_text=False)
    return {
        "png small": encode(small, "PNG"),
        "png rgb": encode(rgb, "PNG"),
        "png palette": encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG", transparency=0),
        "png rgba": encode(rgba, "PNG", pnginfo=info),
        "png 16-bit": png16(np.asarray(big, np.uint16) * 257),
        "png exif icc": png_with_chunks_before_data(encode(big, "PNG", exif=tags), [icc_chunk(2000)]),
        "jpeg baseline": encode(rgb, "JPEG", quality=85, exif=b"Exif\x00\x00" + tags),
        "jpeg progressive": encode(big, "JPEG", quality=85, progressive=True),
        "jpeg cmyk": encode(big.convert("CMYK"), "JPEG"),
        "gif": encode(big.convert("P"), "GIF"),
        "gif animated": _animated_gif(big),
        "webp lossy": encode(rgb, "WEBP", quality=80, exif=tags),
        "webp lossless": encode(rgba, "WEBP", lossless=True),
        "tiff raw": encode(big, "TIFF", tiffinfo={0x0112: 8}),
        "tiff lzw": encode(rgb, "TIFF", compression="tiff_lzw"),
        "tiff 16-bit": encode(Image.fromarray(np.asarray(big, np.uint16) * 257), "TIFF"),
        "bmp": encode(rgb, "BMP"),
        "bmp palette": encode(big.convert("P"), "BMP"),
    }


def _animated_gif(image: Image.Image) -> bytes:
    frames = [image.convert("P"), image.rotate(20).convert("P")]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def corpus(digit: np.ndarray, count: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """``count`` mutated pictures: (the seed picture's name and the mutation's, bytes)."""
    rng = np.random.default_rng(seed)
    base = seeds(digit)
    names = sorted(base)
    for _ in range(count):
        name = names[int(rng.integers(len(names)))]
        mutation = MUTATIONS[int(rng.integers(len(MUTATIONS)))]
        other = base[names[int(rng.integers(len(names)))]]
        yield f"{name} / {mutation.__name__}", mutation(base[name], name.split()[0], rng, other)


def flip_bytes(data: bytes, fmt: str, rng: Rng, other: bytes) -> bytes:
    """1-16 bytes xored with random values, past the signature nine times in ten."""
    out = bytearray(data)
    start = 8 if rng.random() < 0.9 and len(out) > 16 else 0
    for at in rng.integers(start, len(out), int(rng.integers(1, 17))):
        out[at] ^= int(rng.integers(1, 256))
    return bytes(out)


def truncate(data: bytes, fmt: str, rng: Rng, other: bytes) -> bytes:
    return data[: int(rng.integers(1, len(data)))]


def splice(data: bytes, fmt: str, rng: Rng, other: bytes) -> bytes:
    """The head of this picture on the tail of another."""
    cut = int(rng.integers(8, max(9, len(data))))
    return data[:cut] + other[int(rng.integers(0, len(other))) :]


def header_extremes(data: bytes, fmt: str, rng: Rng, other: bytes) -> bytes:
    """A 1-, 2- or 4-byte field in the first 64 bytes (the header) set to an extreme value."""
    out = bytearray(data)
    size = int(rng.choice([1, 2, 4]))
    at = int(rng.integers(2, max(3, min(64, len(out)) - size)))
    value = int(rng.choice(EXTREMES)) & ((1 << (8 * size)) - 1)
    out[at : at + size] = value.to_bytes(size, "big" if rng.random() < 0.5 else "little")
    return bytes(out)


def repeat_structure(data: bytes, fmt: str, rng: Rng, other: bytes) -> bytes:
    """One element of the format's structure repeated: a PNG chunk, a JPEG marker segment or scan,
    a GIF block, a WebP chunk, a TIFF directory entry; a BMP's header fields set to extremes."""
    times = int(rng.choice([2, 10, 100, 1000, 20_000]))
    repeat = REPEATERS.get(fmt)
    return repeat(data, rng, times) if repeat is not None else header_extremes(data, fmt, rng, other)


def wrong_tag_types(data: bytes, fmt: str, rng: Rng, other: bytes) -> bytes:
    """Entries of the first TIFF directory in the file (a TIFF's own, or the EXIF of another
    format) given a random type, and some a huge count."""
    out = bytearray(data)
    start = _tiff_header(out)
    if start is None:
        return flip_bytes(data, fmt, rng, other)
    order = "<" if out[start : start + 2] == b"II" else ">"
    try:
        (offset,) = struct.unpack_from(order + "I", out, start + 4)
        (entries,) = struct.unpack_from(order + "H", out, start + offset)
        for index in rng.integers(0, max(entries, 1), int(rng.integers(1, 4))):
            at = start + offset + 2 + int(index) * 12
            struct.pack_into(order + "H", out, at + 2, int(rng.integers(0, 20)))
            if rng.random() < 0.3:
                struct.pack_into(order + "I", out, at + 4, int(rng.choice(EXTREMES[3:])))
    except struct.error:
        return bytes(out)
    return bytes(out)


def _tiff_header(data: bytearray) -> int | None:
    found = [at for at in (data.find(b"II*\x00"), data.find(b"MM\x00*")) if at >= 0]
    return min(found) if found else None


def _times(times: int, element: bytes) -> int:
    return max(1, min(times, MOST_BYTES // max(len(element), 1)))


def _repeat_png_chunk(data: bytes, rng: Rng, times: int) -> bytes:
    chunks = png_chunks(data)
    index = int(rng.integers(len(chunks)))
    times = _times(times, chunks[index][1] + b"x" * 12)
    return png_from_chunks(chunks[: index + 1] + [chunks[index]] * times + chunks[index + 1 :])


def _repeat_jpeg_segment(data: bytes, rng: Rng, times: int) -> bytes:
    """A marker segment before the first scan, or a whole scan, repeated."""
    if rng.random() < 0.5 and (last := data.rfind(b"\xff\xda")) > 0:
        scan = data[last:-2]
        return data[:-2] + scan * _times(min(times, 300), scan) + data[-2:]
    pos, segments = 2, []
    while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] != 0xDA:
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segments.append((pos, pos + 2 + length))
        pos += 2 + length
    if not segments:
        return data
    start, end = segments[int(rng.integers(len(segments)))]
    return data[:end] + data[start:end] * _times(times, data[start:end]) + data[end:]


def _repeat_gif_block(data: bytes, rng: Rng, times: int) -> bytes:
    """An extension block (graphic control, application, comment) repeated."""
    starts = [at for at in range(13, len(data) - 2) if data[at] == 0x21 and data[at + 1] in (0xF9, 0xFF, 0xFE)]
    if not starts:
        return data
    start = starts[int(rng.integers(len(starts)))]
    end = start + 2
    while end < len(data) and data[end] != 0:  # sub-blocks: a length byte, then that many bytes
        end += 1 + data[end]
    end += 1
    return data[:end] + data[start:end] * _times(times, data[start:end]) + data[end:]


def _repeat_webp_chunk(data: bytes, rng: Rng, times: int) -> bytes:
    """A RIFF chunk repeated; the RIFF size fixed, or not, at random."""
    chunks, pos = [], 12
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        end = pos + 8 + size + (size & 1)
        chunks.append((pos, min(end, len(data))))
        pos = end
    if not chunks:
        return data
    start, end = chunks[int(rng.integers(len(chunks)))]
    out = data[:end] + data[start:end] * _times(min(times, 1000), data[start:end]) + data[end:]
    if rng.random() < 0.5:
        out = out[:4] + struct.pack("<I", len(out) - 8) + out[8:]
    return out


def _repeat_tiff_entry(data: bytes, rng: Rng, times: int) -> bytes:
    """One entry of the first directory copied over others (a tag given twice or more)."""
    out = bytearray(data)
    order = "<" if out[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack_from(order + "I", out, 4)
        (entries,) = struct.unpack_from(order + "H", out, offset)
        source = offset + 2 + int(rng.integers(max(entries, 1))) * 12
        for index in rng.integers(0, max(entries, 1), min(times, 4)):
            at = offset + 2 + int(index) * 12
            out[at : at + 12] = out[source : source + 12]
    except struct.error:
        pass
    return bytes(out)


REPEATERS: dict[str, Callable[[bytes, Rng, int], bytes]] = {
    "png": _repeat_png_chunk,
    "jpeg": _repeat_jpeg_segment,
    "gif": _repeat_gif_block,
    "webp": _repeat_webp_chunk,
    "tiff": _repeat_tiff_entry,
}
MUTATIONS: list[Callable[[bytes, str, Rng, bytes], bytes]] = [
    flip_bytes,
    flip_bytes,
    truncate,
    splice,
    header_extremes,
    repeat_structure,
    repeat_structure,
    wrong_tag_types,
]
