"""Uploads decoded in a box: the decoder processes' task, and the server's side of it.

Every byte of an upload that a codec parses, its header included, is parsed in a decoder process
(:class:`app.worker_pool.WorkerPool`): the server sends the upload and the model's preprocessing,
the process answers with the preprocessed digit (two small arrays) or the reason it has none. A
decode that runs past the request's deadline, or past ``decode_timeout_s``, is stopped by killing
its process; one that needs more memory than ``decode_memory_mb`` fails inside its process.

One exception, measured: a small plain PNG (:func:`is_small_png`, at most 4 KB and
64x64, only pixel chunks, checked without parsing anything else) is decoded right here, because
the round trip to a decoder process costs more than decoding it, and what decoding it can cost is
bounded by its checked size as the box bounds any other (docs/HARDENING.md has the figures).

The messages have fixed binary layouts, not pickle: the server never unpickles what a process
that has parsed hostile bytes wrote.
"""

from __future__ import annotations

import logging
import struct
import traceback
from dataclasses import dataclass

import numpy as np

from app.worker_pool import WorkerDiedError, WorkerPool, WorkerTimeoutError
from model.meta import Preprocessing
from model.preprocess import ImageError, Prepared, prepare_bytes
from model.screening import PNG_SIGNATURE

log = logging.getLogger(__name__)

# request: max_pixels, max_full_decode_pixels, image size, channels; then mean and std (float64 a
# channel each); then the upload
_REQUEST = struct.Struct("<QQHH")
# answer: its kind, then for a digit: inverted, channels, size; the model input (channels, size,
# size) and the pixels (size, size) as float32. For an error: the length of its code; the code,
# then the message (UTF-8)
_KIND = struct.Struct("<B")
_DIGIT = struct.Struct("<BHH")
_ERROR = struct.Struct("<H")
DIGIT, IMAGE_ERROR, UNEXPECTED = 0, 1, 2
# the codes an image error may carry (model.preprocess.ImageError); any other is invalid_image
IMAGE_ERROR_CODES = frozenset({"empty_image", "unsupported_format", "image_too_large", "invalid_image", "no_digit"})
_TRACE_CHARS = 4000  # of an unexpected exception's traceback, sent to the server for its log
# A small plain PNG (is_small_png): what decoding it can cost is bounded by these, whatever its bytes
SMALL_PNG_BYTES = 4096
SMALL_PNG_SIDE = 64
_SMALL_PNG_CHUNKS = frozenset({b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"})
_SMALL_PNG_MOST_CHUNKS = 8


class DecodeTimeoutError(TimeoutError):
    """The picture was not decoded in time: ``by_decode_limit`` if it took longer than a picture
    may (``timeout_s``; its decoder was killed), else the caller's timeout passed first."""

    def __init__(self, message: str, by_decode_limit: bool):
        super().__init__(message)
        self.by_decode_limit = by_decode_limit


@dataclass(frozen=True)
class _Request:
    max_pixels: int
    max_full_decode_pixels: int
    pre: Preprocessing
    data: bytes


def _encode_request(request: _Request) -> bytes:
    pre = request.pre
    header = _REQUEST.pack(request.max_pixels, request.max_full_decode_pixels, pre.image_size, len(pre.mean))
    norms = struct.pack(f"<{2 * len(pre.mean)}d", *pre.mean, *pre.std)
    return header + norms + request.data


def _decode_request(payload: bytes) -> _Request:
    max_pixels, max_full, size, channels = _REQUEST.unpack_from(payload)
    norms = struct.unpack_from(f"<{2 * channels}d", payload, _REQUEST.size)
    pre = Preprocessing(size, tuple(norms[:channels]), tuple(norms[channels:]))
    return _Request(max_pixels, max_full, pre, payload[_REQUEST.size + 16 * channels :])


def decode_task(payload: bytes) -> bytes:
    """In a decoder process: one upload decoded and preprocessed; the answer (it never raises)."""
    try:
        request = _decode_request(payload)
        pre = request.pre
        prepared = prepare_bytes(
            request.data, pre.mean, pre.std, pre.image_size, request.max_pixels, request.max_full_decode_pixels
        )
    except ImageError as exc:
        return _error(IMAGE_ERROR, exc.code, str(exc))
    except MemoryError:
        return _error(IMAGE_ERROR, "image_too_large", "decoding the picture needs more memory than a picture may use")
    except Exception as exc:  # a fault of ours on an odd picture: the server logs its traceback
        return _error(UNEXPECTED, type(exc).__name__, "".join(traceback.format_exception(exc))[-_TRACE_CHARS:])
    return _digit(prepared)


def _digit(prepared: Prepared) -> bytes:
    channels, size = prepared.model_input.shape[:2]
    return b"".join(
        (
            _KIND.pack(DIGIT),
            _DIGIT.pack(prepared.inverted, channels, size),
            np.ascontiguousarray(prepared.model_input, np.float32).tobytes(),
            np.ascontiguousarray(prepared.pixels, np.float32).tobytes(),
        )
    )


def _error(kind: int, code: str, message: str) -> bytes:
    encoded = code.encode()
    return _KIND.pack(kind) + _ERROR.pack(len(encoded)) + encoded + message.encode("utf-8", "replace")


class Decoder:
    """Decodes and preprocesses uploads in ``pool``'s processes: pictures up to ``max_pixels``
    (``max_full_decode_pixels`` for the formats decoded at full size), each in at most
    ``timeout_s`` of its decoder's time."""

    def __init__(self, pool: WorkerPool, max_pixels: int, max_full_decode_pixels: int, timeout_s: float):
        self.pool = pool
        self.max_pixels, self.max_full_decode_pixels, self.timeout_s = max_pixels, max_full_decode_pixels, timeout_s

    async def prepare(self, data: bytes, pre: Preprocessing, timeout: float) -> Prepared:
        """``data`` as the model's input, waiting at most ``timeout`` seconds (a free decoder
        included).

        Raises:
            ImageError: the picture cannot be read as a digit (a decoder that crashed on it
                included: ``invalid_image``).
            DecodeTimeoutError: not done in time; the decoder working on it was killed.
        """
        if not is_small_png(data):
            return await self.prepare_in_box(data, pre, timeout)
        return _prepare_here(data, pre)  # the box's round trip costs more than this bounded decode: docs/HARDENING.md

    async def prepare_in_box(self, data: bytes, pre: Preprocessing, timeout: float) -> Prepared:
        """:meth:`prepare` in a decoder process, whatever the picture."""
        request = _encode_request(_Request(self.max_pixels, self.max_full_decode_pixels, pre, data))
        try:
            answer = await self.pool.run(request, timeout, task_timeout=self.timeout_s)
        except WorkerTimeoutError as exc:
            raise DecodeTimeoutError(str(exc), by_decode_limit=exc.task_limit) from None
        except WorkerDiedError:
            raise ImageError("invalid_image", "the picture could not be decoded: its decoder crashed") from None
        return read_answer(answer, pre)


def is_small_png(data: bytes) -> bool:
    """Whether ``data`` is a small plain PNG: at most :data:`SMALL_PNG_BYTES`, an IHDR of at most
    :data:`SMALL_PNG_SIDE` pixels a side with 8 bits or fewer a sample and no interlacing, and
    nothing but the chunks that hold pixels (at most eight, the last IEND, ending the data).

    Decoding such a file is bounded by these numbers alone: a few chunks for Pillow's parser, a few
    kilobytes for zlib, a 64x64 picture. Only the fields named here are read; nothing is inflated.
    """
    if len(data) > SMALL_PNG_BYTES or not data.startswith(PNG_SIGNATURE):
        return False
    pos = len(PNG_SIGNATURE)
    for index in range(_SMALL_PNG_MOST_CHUNKS):
        if pos + 12 > len(data):
            return False
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind not in _SMALL_PNG_CHUNKS or (index == 0) != (kind == b"IHDR"):
            return False
        if kind == b"IHDR" and not (length == 13 and _small_plain_header(data, pos + 8)):
            return False
        pos += 12 + length
        if kind == b"IEND":
            return pos == len(data)
    return False


def _small_plain_header(data: bytes, at: int) -> bool:
    if len(data) < at + 13:  # cut off inside its header: Pillow, in the box, says what is wrong
        return False
    width, height, depth, _, _, _, interlace = struct.unpack_from(">IIBBBBB", data, at)
    return 0 < width <= SMALL_PNG_SIDE and 0 < height <= SMALL_PNG_SIDE and depth <= 8 and interlace == 0


def _prepare_here(data: bytes, pre: Preprocessing) -> Prepared:
    """A small plain PNG decoded and preprocessed in this process; a fault of ours on it is logged
    and answered as the decoder processes answer theirs."""
    try:
        return prepare_bytes(data, pre.mean, pre.std, pre.image_size)
    except ImageError:
        raise
    except Exception as exc:  # a fault of ours on an odd picture, as in decode_task
        log.exception("preprocessing failed on a small PNG", exc_info=exc)
        raise ImageError("invalid_image", f"the picture could not be decoded ({type(exc).__name__})") from None


def read_answer(answer: bytes, pre: Preprocessing) -> Prepared:
    """The decoder's ``answer`` for a picture preprocessed as ``pre`` says.

    Raises:
        ImageError: the decoder's refusal; a fault of the decoder (logged) as ``invalid_image``.
        ValueError: an answer of the wrong shape (a fault of this module).
    """
    (kind,) = _KIND.unpack_from(answer)
    if kind == DIGIT:
        inverted, channels, size = _DIGIT.unpack_from(answer, _KIND.size)
        if (channels, size) != (len(pre.mean), pre.image_size):
            raise ValueError(f"the decoder answered {channels}x{size}x{size} for {len(pre.mean)}x{pre.image_size}")
        start = _KIND.size + _DIGIT.size
        inputs = np.frombuffer(answer, np.float32, channels * size * size, start).reshape(channels, size, size)
        pixels = np.frombuffer(answer, np.float32, size * size, start + inputs.nbytes).reshape(size, size)
        return Prepared(model_input=inputs, pixels=pixels, inverted=bool(inverted))
    (length,) = _ERROR.unpack_from(answer, _KIND.size)
    start = _KIND.size + _ERROR.size
    code, message = answer[start : start + length].decode(), answer[start + length :].decode("utf-8", "replace")
    if kind == UNEXPECTED:
        log.error("the decoder failed on a picture", extra={"error": code, "traceback": message})
        raise ImageError("invalid_image", f"the picture could not be decoded ({code})")
    if code not in IMAGE_ERROR_CODES:
        code = "invalid_image"
    raise ImageError(code, message)
