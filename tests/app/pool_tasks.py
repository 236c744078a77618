"""Tasks for the worker pool's tests, run in its worker processes: standard library and Pillow only
(a worker imports this module)."""

from __future__ import annotations

import io
import os
import signal
import time


def command(payload: bytes) -> bytes:
    """``echo:<bytes>`` (the bytes back), ``pid`` (the worker's), ``spin`` (burn CPU until killed),
    ``allocate:<n>`` (``ok`` or ``memory`` if n bytes cannot be had), ``crash`` (die by SIGSEGV)."""
    name, _, argument = payload.partition(b":")
    if name == b"echo":
        return argument
    if name == b"pid":
        return str(os.getpid()).encode()
    if name == b"spin":
        while True:
            time.process_time()
    if name == b"allocate":
        try:
            block = bytearray(int(argument))
        except MemoryError:
            return b"memory"
        block[:: 1 << 12] = b"\x01" * len(block[:: 1 << 12])  # touch every page: real memory, not reserved
        return b"ok"
    if name == b"crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    raise ValueError(f"unknown command {name!r}")


def pillow_load(payload: bytes) -> bytes:
    """Pillow's own decoding of ``payload``, no screening: ``ok``, ``memory``, or the exception's type."""
    from PIL import Image

    try:
        Image.open(io.BytesIO(payload)).load()
    except MemoryError:
        return b"memory"
    except Exception as exc:
        return type(exc).__name__.encode()
    return b"ok"
