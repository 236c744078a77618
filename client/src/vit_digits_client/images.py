"""Whatever a caller holds as a picture, as the bytes and content type to upload.

A file path or bytes are sent as they are; a PIL image or a numpy array is encoded as PNG. Neither
numpy nor Pillow is imported here unless such an object is passed (they are optional extras): an
array is written with the standard library's zlib, so sending one needs numpy alone.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, "Image.Image", "np.ndarray[Any, Any]"]
# The formats the service reads, by their first bytes (WebP: "RIFF", four bytes of size, "WEBP").
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)
UNKNOWN_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class Upload:
    """A picture ready to send: its bytes, content type (``application/octet-stream`` if not
    recognised: the server says why it refuses it) and a name for the batch's results."""

    data: bytes
    content_type: str
    name: str


def to_upload(image: ImageInput, name: str = "image") -> Upload:
    """``image`` (a path, bytes, a PIL image, or an array: (H, W) or (H, W, 1|3|4), uint8 or floats in [0, 1]).

    Raises:
        TypeError: ``image`` is none of those.
        OSError: the path cannot be read.
    """
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        data = path.read_bytes()
        return Upload(data, sniff(data), path.name)
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
        return Upload(data, sniff(data), name)
    module = type(image).__module__
    if module.startswith("PIL."):
        return Upload(_png_from_pil(image), "image/png", name)
    if module == "numpy":
        return Upload(png_from_array(image), "image/png", name)
    raise TypeError(f"cannot send a {type(image).__name__} as a picture: give a path, bytes, a PIL image or an array")


def sniff(data: bytes) -> str:
    """The image content type of ``data`` by its first bytes, or ``application/octet-stream``."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for signature, kind in _SIGNATURES if data.startswith(signature)), UNKNOWN_TYPE)


def png_from_array(array: Any) -> bytes:
    """A PNG of ``array``: (H, W) grey, or (H, W, C) with C = 1 (grey), 3 (RGB) or 4 (RGBA); uint8, or
    floats in [0, 1] (scaled to 0-255).

    Raises:
        ValueError: another shape or type.
    """
    import numpy as np

    pixels = np.asarray(array)
    if pixels.dtype.kind == "f":
        pixels = (np.clip(pixels, 0.0, 1.0) * 255).round()
    elif pixels.dtype.kind not in "ui" or (pixels.size and (pixels.min() < 0 or pixels.max() > 255)):
        raise ValueError(f"an array of {pixels.dtype} values is not a picture: send uint8, or floats in [0, 1]")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    colour = {2: 0, 3: {3: 2, 4: 6}.get(pixels.shape[-1], -1)}.get(pixels.ndim, -1)  # PNG colour types
    if colour < 0 or 0 in pixels.shape:
        raise ValueError(f"an array of shape {pixels.shape} is not a picture: send (H, W) or (H, W, 1|3|4)")
    rows = np.ascontiguousarray(pixels.astype(np.uint8))
    height, width = rows.shape[:2]
    scanlines = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 (none) per row
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(scanlines)) + _chunk(b"IEND")


def _png_from_pil(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
