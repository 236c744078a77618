"""MNIST: locating or extracting the original files, loading them as tensors, splitting."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MEAN, STD = 0.1307, 0.3081  # of the MNIST training pixels in [0, 1]
DEFAULT_CACHE = Path(".cache/mnist")


class DataError(RuntimeError):
    """MNIST could not be found, extracted or read; the message says where it looked."""


@dataclass(frozen=True)
class Split:
    """Images as uint8 (N, 28, 28) (or (N, side, side) on a canvas: :func:`on_canvas`) and labels as
    int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.images[index], self.labels[index])


def prepare_root(data_dir: Path, download: bool = False, cache_dir: Path | None = None) -> Path:
    """A folder laid out as torchvision's ``MNIST(root, download=False)`` expects.

    ``data_dir`` may already be such a root (``MNIST/raw`` with extracted files), or hold the four
    original ``.gz`` files (in itself, ``raw/`` or ``MNIST/raw/``): those are extracted into
    ``cache_dir`` (default: a folder under ``.cache/mnist`` named for the source), never next to
    the source, which may be read-only or shared. With ``download``, torchvision fetches the files into ``data_dir``.
    """
    if all((data_dir / "MNIST" / "raw" / name).is_file() for name in RAW_FILES):
        return data_dir
    gz_dir = _find_gz_dir(data_dir)
    if gz_dir is None:
        if download:
            from torchvision.datasets import MNIST

            MNIST(str(data_dir), train=True, download=True)
            MNIST(str(data_dir), train=False, download=True)
            return data_dir
        wanted = ", ".join(f"{n}.gz" for n in RAW_FILES)
        raise DataError(
            f"MNIST not found under {data_dir}: expected {wanted} in it, in raw/ or in MNIST/raw/ "
            f"(or pass --download to fetch them)"
        )
    # one cache folder per source folder: two sources never overwrite each other's files
    root = cache_dir or DEFAULT_CACHE / hashlib.sha256(str(gz_dir.resolve()).encode()).hexdigest()[:16]
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in RAW_FILES:
        _extract(gz_dir / f"{name}.gz", raw / name)
    return root


def load_split(root: Path, train: bool) -> Split:
    """The MNIST training or test split, read through torchvision."""
    from torchvision.datasets import MNIST

    try:
        ds = MNIST(str(root), train=train, download=False)
    except RuntimeError as exc:
        raise DataError(f"cannot read MNIST from {root}: {exc}") from exc
    return Split(ds.data.clone(), ds.targets.clone().long())


def dataset_checksum(root: Path) -> str:
    """sha256 over the four extracted files, in a fixed order: identifies the exact data."""
    digest = hashlib.sha256()
    for name in RAW_FILES:
        with open(root / "MNIST" / "raw" / name, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def train_val_split(split: Split, val_size: int, seed: int) -> tuple[Split, Split]:
    """A seeded random validation set carved from the training split."""
    if val_size >= len(split):
        raise DataError(f"val_size ({val_size}) must be smaller than the training set ({len(split)})")
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    return split.subset(order[val_size:]), split.subset(order[:val_size])


CANVAS_TEST_SEED = 10_000  # the test digits' positions on a canvas: one draw, so every run scores the same pictures


def on_canvas(split: Split, side: int, seed: int) -> Split:
    """The split's digits, each at a random position on a blank ``side`` x ``side`` canvas (the same
    positions for the same seed): a picture whose every part may hold the digit."""
    n, h, w = split.images.shape
    if side < max(h, w):
        raise DataError(f"a {side}x{side} canvas cannot hold {h}x{w} digits")
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, side - h + 1, (n,), generator=generator)
    cols = torch.randint(0, side - w + 1, (n,), generator=generator)
    canvas = torch.zeros(n, side, side, dtype=split.images.dtype)
    r = rows[:, None, None] + torch.arange(h)[None, :, None]  # (n, h, 1): each digit's rows on its canvas
    c = cols[:, None, None] + torch.arange(w)[None, None, :]  # (n, 1, w)
    canvas[torch.arange(n)[:, None, None], r, c] = split.images
    return Split(canvas, split.labels)


def to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W) -> normalised float (B, 1, H, W) on ``device``."""
    x = images.to(device, non_blocking=True).unsqueeze(1).float().div_(255.0)
    return (x - MEAN) / STD


def _find_gz_dir(data_dir: Path) -> Path | None:
    for candidate in (data_dir, data_dir / "raw", data_dir / "MNIST" / "raw"):
        if all((candidate / f"{name}.gz").is_file() for name in RAW_FILES):
            return candidate
    return None


def _extract(src: Path, dst: Path) -> None:
    """Extract ``src`` to ``dst`` unless ``dst`` was extracted from this very file already."""
    info = src.stat()
    source = f"{src.resolve()} {info.st_size} {info.st_mtime_ns}"
    stamp = dst.with_name(dst.name + ".source")
    if dst.is_file() and stamp.is_file() and stamp.read_text() == source:
        return
    log.info("extracting %s -> %s", src, dst)
    tmp = dst.with_name(f"{dst.name}.{os.getpid()}.part")  # distributed ranks may extract at once
    try:
        with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot extract {src}: {exc}") from exc
    tmp.replace(dst)
    stamp.write_text(source)
