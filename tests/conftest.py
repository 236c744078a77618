"""Shared fixtures: a tiny model and checkpoint, the committed MNIST slice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from model import CheckpointMeta, ViTConfig, build_model, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
MNIST_SLICE = ROOT / "tests" / "data" / "mnist"
FULL_MNIST = ROOT.parent / "shared" / "data" / "mnist"
SHIPPED = ROOT / "checkpoints" / "vit-digits.safetensors"
TINY = ViTConfig(patch_size=7, dim=16, depth=2, heads=2, mlp_ratio=2.0)

# Under pytest-xdist (make test) each process gets its share of the cores, so the processes' torch
# threads do not outnumber the cores and queue behind one another.
if workers := os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // int(workers)))


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed 1,000/500-image slice of real MNIST, extracted as torchvision expects."""
    from training.data import prepare_root

    return prepare_root(MNIST_SLICE, cache_dir=tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny ViT saved in the real checkpoint format, with its ONNX export next to it
    (so the service runs it as it runs the shipped model on CPU: ONNX Runtime, no torch)."""
    from model.checkpoint import load_checkpoint
    from model.onnx_export import export_onnx

    torch.manual_seed(0)
    model = build_model(TINY)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, model, CheckpointMeta(TINY, training={"test_accuracy": 0.1, "created": "2026-01-01"}))
    export_onnx(load_checkpoint(path))
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint_without_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint alone, as a checkpoint trained before exports existed: served with torch."""
    path = tmp_path_factory.mktemp("torch-ckpt") / "tiny.safetensors"
    path.write_bytes(tiny_checkpoint.read_bytes())
    return path
