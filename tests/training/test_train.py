import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model import load_checkpoint
from tests.conftest import MNIST_SLICE, ROOT
from training.augment import random_affine
from training.cli import main
from training.config import AugmentConfig

FAST = ["--patch-size", "7", "--stem", "linear", "--dim", "16", "--depth", "1", "--heads", "2", "--batch-size", "64"]


def _train(tmp_path: Path, *extra: str) -> Path:
    args = [
        "train",
        "--data-dir",
        str(MNIST_SLICE),
        "--run-dir",
        str(tmp_path / "runs"),
        "--name",
        "t",
        "--val-size",
        "200",
        *FAST,
        *extra,
    ]
    assert main(args) == 0
    return tmp_path / "runs" / "t"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the extraction cache (.cache/mnist) lands in the test's folder


def test_train_dry_run_writes_checkpoint_metrics_and_config(tmp_path):
    run = _train(tmp_path, "--dry-run")
    ckpt = load_checkpoint(run / "best.safetensors")
    assert ckpt.meta.config.patch_size == 7
    summary = ckpt.meta.training
    assert {"test_accuracy", "dataset_sha256", "git_commit", "versions", "seed", "created"} <= set(summary)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["epoch"] == 1
    assert json.loads((run / "config.json").read_text())["model"]["dim"] == 16


@pytest.mark.slow
def test_train_learns_on_real_digits_and_is_reproducible(tmp_path):
    quick = ("--epochs", "5", "--lr", "1e-2", "--no-augment", "--batch-size", "32", "--dim", "32")
    a = _train(tmp_path / "a", *quick)
    b = _train(tmp_path / "b", *quick)
    acc = [json.loads(line)["val_acc"] for line in (a / "metrics.jsonl").read_text().splitlines()]
    assert acc[-1] > 0.35, f"validation accuracy after 5 epochs on 800 images (chance: 0.1): {acc}"
    assert (a / "metrics.jsonl").read_text().split('"lr"')[0] == (b / "metrics.jsonl").read_text().split('"lr"')[0]


@pytest.mark.slow
def test_train_resume_continues_where_it_stopped(tmp_path):
    run = _train(tmp_path, "--epochs", "1")
    _train(tmp_path, "--epochs", "2", "--resume")
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_train_ema_and_label_smoothing_and_timm_and_rgb(tmp_path):
    run = _train(
        tmp_path, "--dry-run", "--ema-decay", "0.9", "--label-smoothing", "0.1", "--impl", "timm", "--in-chans", "3"
    )
    ckpt = load_checkpoint(run / "best.safetensors")
    assert ckpt.meta.config.impl == "timm" and ckpt.meta.preprocess.mean == (0.1307,) * 3


def test_cli_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "train" in out and "evaluate" in out and "experiments" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--patch-size", "5"], "divisible by patch_size"),
        (["train", "--epochs", "0"], "epochs must be at least 1"),
        (["train", "--data-dir", "/nonexistent"], "MNIST not found under /nonexistent"),
        (["train", "--stem", "banana"], "invalid choice"),
        (["train", "--device", "banana", "--data-dir", str(MNIST_SLICE)], "device must be auto, cpu"),
        (["evaluate", "--checkpoint", "/nope.safetensors"], "no such checkpoint"),
    ],
)
def test_cli_bad_arguments_exit_2_with_a_message(args, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_random_affine_keeps_background_and_moves_ink():
    x = torch.full((8, 1, 28, 28), -0.42)
    x[:, :, 10:18, 12:16] = 2.8
    out = random_affine(
        x, AugmentConfig(rotate=15, translate=0.1, scale=0.1, shear=5), torch.Generator().manual_seed(0)
    )
    assert out.shape == x.shape
    assert torch.allclose(out[:, :, 0, 0], torch.tensor(-0.42))
    assert not torch.allclose(out, x)
    assert out.max() <= 2.8 + 1e-5


@pytest.mark.slow
def test_train_two_process_distributed_run(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29533",
        "-m",
        "training",
        "train",
        "--data-dir",
        str(MNIST_SLICE),
        "--run-dir",
        str(tmp_path / "runs"),
        "--name",
        "ddp",
        "--val-size",
        "200",
        "--limit",
        "600",
        "--epochs",
        "1",
        *FAST,
    ]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # rank 0 alone writes
    assert "2 process(es)" in done.stderr
    load_checkpoint(run / "best.safetensors")


@pytest.mark.slow
def test_outlier_exposure_flattens_the_answer_on_non_digits(mnist_root):
    from model import build_model
    from tests.conftest import TINY
    from training.data import Split, load_split
    from training.engine import EpochOptions, predict, train_one_epoch
    from training.pictures import build_set, non_digits

    train = load_split(mnist_root, train=True)
    outliers = torch.from_numpy(build_set(non_digits(("letters", "shapes"), 40, seed=0)).images)
    cpu = torch.device("cpu")

    def outlier_confidence(weight: float) -> float:
        torch.manual_seed(0)
        model = build_model(TINY)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        generator = torch.Generator().manual_seed(0)
        options = EpochOptions(
            device=cpu, batch_size=64, augment=AugmentConfig.off(), label_smoothing=0.0, grad_clip=1.0,
            outliers=outliers, outlier_weight=weight,
        )  # fmt: skip
        for _ in range(4):
            train_one_epoch(model, train, optimizer, lambda: None, generator, options)
        logits = predict(model, Split(outliers, torch.zeros(len(outliers), dtype=torch.long)), cpu)
        return float(logits.softmax(-1).amax(-1).mean())

    exposed, plain = outlier_confidence(1.0), outlier_confidence(0.0)
    assert exposed < plain - 0.05, f"top probability on non-digits: {exposed:.3f} with exposure, {plain:.3f} without"


@pytest.mark.slow
def test_train_from_init_with_outliers_and_typed_digits(tmp_path):
    first = _train(tmp_path / "a", "--dry-run")
    run = _train(
        tmp_path / "b", "--dry-run", "--init", str(first / "best.safetensors"),
        "--outlier-weight", "0.5", "--outliers-per-kind", "4", "--typed-digits", "8",
    )  # fmt: skip
    recipe = load_checkpoint(run / "best.safetensors").meta.training["recipe"]
    assert (
        recipe["outlier_weight"] == 0.5 and recipe["typed_digits"] == 8 and recipe["init"].endswith("best.safetensors")
    )


def test_shipped_preset_needs_the_base_model(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--preset", "shipped", "--data-dir", str(MNIST_SLICE), "--dry-run"])
    assert exit_info.value.code == 2 and "--init" in capsys.readouterr().err


@pytest.mark.slow
def test_ship_runs_the_whole_recipe_and_leaves_a_calibrated_checkpoint(tmp_path):
    out = tmp_path / "shipped.safetensors"
    args = ["ship", "--data-dir", str(MNIST_SLICE), "--run-dir", str(tmp_path / "runs"), "--output", str(out)]
    assert main([*args, "--limit", "400", "--epochs-scale", "0.01", "--pictures-scale", "0.004"]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.meta.calibration.threshold is not None
    recipe = ckpt.meta.training["recipe"]
    assert recipe["outlier_weight"] > 0 and recipe["init"].endswith("base/best.safetensors")
    assert (tmp_path / "runs" / "base" / "best.safetensors").is_file()
    teacher = tmp_path / "runs" / "teacher" / "teacher.safetensors"  # both stages distilled from it
    assert recipe["distill"] == "hard" and recipe["teacher"] == str(teacher) and teacher.is_file()
    assert load_checkpoint(tmp_path / "runs" / "base" / "best.safetensors").meta.training["recipe"]["distill"] == "hard"


@pytest.mark.slow
def test_ship_with_seeds_reports_the_spread_of_each_trust_figure(tmp_path, capsys):
    out, runs = tmp_path / "shipped.safetensors", tmp_path / "runs"
    args = ["ship", "--data-dir", str(MNIST_SLICE), "--run-dir", str(runs), "--output", str(out), "--seeds", "3", "4"]
    assert main([*args, "--limit", "400", "--epochs-scale", "0.01", "--pictures-scale", "0.004"]) == 0
    assert not out.exists()  # a spread run never replaces the shipped checkpoint
    for seed in (3, 4):
        ckpt = load_checkpoint(runs / f"seed{seed}" / f"shipped-seed{seed}.safetensors")
        assert ckpt.meta.calibration.threshold is not None and ckpt.meta.training["recipe"]["seed"] == seed
    summary = json.loads((runs / "spread.json").read_text())
    accuracy = summary["figures"]["MNIST test accuracy"]
    assert summary["seeds"] == [3, 4] and len(accuracy["values"]) == 2
    assert accuracy["min"] <= accuracy["mean"] <= accuracy["max"] and accuracy["sd"] is not None
    assert "| non-digits flagged, held-out kinds |" in capsys.readouterr().out


def _one_epoch(images: int, **options):
    """One SGD epoch of the tiny model over ``images`` random pictures, in batches of 4."""
    from model import build_model
    from tests.conftest import TINY
    from training.data import Split
    from training.engine import EpochOptions, train_one_epoch

    data = Split(torch.randint(0, 256, (images, 28, 28), dtype=torch.uint8), torch.arange(images) % 10)
    model = build_model(TINY)
    epoch = EpochOptions(
        device=torch.device("cpu"), batch_size=4, augment=AugmentConfig.off(), label_smoothing=0.0, grad_clip=0.0,
        **options,
    )  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return train_one_epoch(model, data, optimizer, lambda: None, torch.Generator().manual_seed(0), epoch)


def test_an_epoch_counts_its_short_last_batch_as_a_step():
    stats = _one_epoch(10, curve_every=1)
    # 10 images in batches of 4: 4 + 4 + 2, three optimiser steps (images // batch would say 2)
    assert stats.steps == 3 and stats.images == 10 and [step for step, _ in stats.curve] == [1, 2, 3]


def test_an_epoch_stopped_at_max_steps_labels_its_last_curve_point_with_the_steps_taken():
    stats = _one_epoch(40, max_steps=3, curve_every=2)
    # 10 batches available, 3 taken: one full window of 2 steps, then the partial window ends at step 3
    assert stats.steps == 3 and stats.images == 12 and [step for step, _ in stats.curve] == [2, 3]
