import gzip
import shutil
from pathlib import Path

import pytest
import torch

from model.config import ConfigError, ViTConfig
from tests.conftest import MNIST_SLICE
from training.config import TrainConfig
from training.data import RAW_FILES, DataError, load_split, on_canvas, prepare_root


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


def test_on_canvas_places_each_whole_digit_somewhere_else_the_same_way_for_a_seed():
    digits = load_split(prepare_root(MNIST_SLICE), train=False).subset(torch.arange(64))
    placed = on_canvas(digits, 56, seed=3)
    assert placed.images.shape == (64, 56, 56) and torch.equal(placed.labels, digits.labels)
    # every digit's ink is all there, none of it cut
    assert torch.equal(
        placed.images.sum(dim=(1, 2), dtype=torch.int64), digits.images.sum(dim=(1, 2), dtype=torch.int64)
    )
    rows = (placed.images.amax(dim=2) > 0).int().argmax(dim=1)  # first inked row of each canvas
    cols = (placed.images.amax(dim=1) > 0).int().argmax(dim=1)
    assert len(set(rows.tolist())) > 10 and len(set(cols.tolist())) > 10  # spread over the canvas
    assert torch.equal(on_canvas(digits, 56, seed=3).images, placed.images)
    assert not torch.equal(on_canvas(digits, 56, seed=4).images, placed.images)
    with pytest.raises(DataError, match="a 20x20 canvas cannot hold 28x28 digits"):
        on_canvas(digits, 20, seed=0)


def test_a_canvas_must_be_the_models_picture_and_takes_no_teacher_outliers_or_export(tmp_path):
    model = ViTConfig(image_size=56, patch_size=2, pool="mean")
    assert TrainConfig(model=model, canvas=56, export=False).canvas == 56
    with pytest.raises(ConfigError, match=r"canvas \(56\) must be the model's image_size \(28\)"):
        TrainConfig(canvas=56, export=False)
    with pytest.raises(ConfigError, match="neither outlier exposure nor a teacher"):
        TrainConfig(model=model, canvas=56, export=False, outlier_weight=0.5)
    with pytest.raises(ConfigError, match="neither outlier exposure nor a teacher"):
        TrainConfig(model=model, canvas=56, export=False, distill="soft", teacher=tmp_path / "t.safetensors")
    with pytest.raises(ConfigError, match="pass --no-export"):
        TrainConfig(model=model, canvas=56)


def test_a_canvas_runs_training_validation_and_test_digits_are_all_on_the_canvas():
    from training.train import load_data

    model = ViTConfig(image_size=56, patch_size=2, pool="mean")
    cfg = TrainConfig(model=model, canvas=56, export=False, data_dir=MNIST_SLICE, limit=300)
    plain = load_data(TrainConfig(data_dir=MNIST_SLICE, limit=300))
    for placed, digits in zip(load_data(cfg)[:3], plain[:3], strict=True):
        assert placed.images.shape[1:] == (56, 56) and len(placed) == len(digits)
        ink = placed.images.sum(dim=(1, 2), dtype=torch.int64)
        assert torch.equal(ink, digits.images.sum(dim=(1, 2), dtype=torch.int64))
    # a test picture's position does not hang on how many were taken
    more = load_data(TrainConfig(model=model, canvas=56, export=False, data_dir=MNIST_SLICE, limit=1000))[2]
    assert len(more) > len(plain[2]) and torch.equal(load_data(cfg)[2].images, more.images[: len(plain[2])])
