"""Regenerate ``tests/data/mnist``: the first images of the real MNIST files, in the original
gzip IDX layout, so tests run on real digits without the full dataset.

    python tests/data/make_mnist_slice.py ../shared/data/mnist/MNIST/raw
"""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

SLICES = {"train": 1000, "t10k": 500}
OUT = Path(__file__).parent / "mnist" / "MNIST" / "raw"


def _slice(src: Path, dst: Path, count: int) -> None:
    with gzip.open(src, "rb") as fh:
        data = fh.read()
    (magic,) = struct.unpack(">I", data[:4])
    dims = magic & 0xFF
    header = 4 + 4 * dims
    shape = struct.unpack(f">{dims}I", data[4:header])
    item = 1
    for d in shape[1:]:
        item *= d
    body = data[header : header + count * item]
    new_header = struct.pack(">I", magic) + struct.pack(f">{dims}I", count, *shape[1:])
    with gzip.GzipFile(dst, "wb", mtime=0) as out:
        out.write(new_header + body)


def main(raw: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for prefix, count in SLICES.items():
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{prefix}-{kind}-ubyte.gz"
            _slice(raw / name, OUT / name, count)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
