import gzip
import shutil
from pathlib import Path

from tests.conftest import MNIST_SLICE
from training.data import RAW_FILES, load_split, prepare_root


def _smaller_copy(src: Path, dst: Path, images: int) -> None:
    """A copy of the slice with fewer test images (rewritten IDX headers)."""
    dst.mkdir(parents=True)
    for name in RAW_FILES:
        shutil.copy(src / f"{name}.gz", dst / f"{name}.gz")
    for name, item in (("t10k-images-idx3-ubyte", 784), ("t10k-labels-idx1-ubyte", 1)):
        data = gzip.decompress((src / f"{name}.gz").read_bytes())
        header = 16 if item == 784 else 8
        body = data[header : header + images * item]
        new = data[:4] + images.to_bytes(4, "big") + data[8:header] + body
        (dst / f"{name}.gz").write_bytes(gzip.compress(new))


def test_prepare_root_keeps_two_sources_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default cache, .cache/mnist, lands here
    _smaller_copy(MNIST_SLICE / "MNIST" / "raw", tmp_path / "small", images=100)
    big, small = prepare_root(MNIST_SLICE), prepare_root(tmp_path / "small")
    assert big != small
    assert len(load_split(small, train=False)) == 100
    assert len(load_split(prepare_root(MNIST_SLICE), train=False)) == 500  # not overwritten by the other


def test_prepare_root_never_writes_next_to_the_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "src"
    shutil.copytree(MNIST_SLICE, source)
    before = sorted(p.name for p in source.rglob("*"))
    root = prepare_root(source)
    assert sorted(p.name for p in source.rglob("*")) == before
    assert root.resolve().is_relative_to((tmp_path / ".cache").resolve())
