import csv
import json

import torch

from tests.conftest import MNIST_SLICE
from training.cli import main
from training.experiments import attention_cost, shuffle_patches


def test_experiments_quick_suite_writes_results_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [
        "experiments",
        "posenc",
        "--quick",
        "--limit",
        "300",
        "--data-dir",
        str(MNIST_SLICE),
        "--out-dir",
        str(tmp_path / "exp"),
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    out = tmp_path / "exp" / "posenc"
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["variant"] for r in rows] == ["learned", "sincos2d", "none"]
    assert all(int(r["tokens"]) == 50 for r in rows)
    assert all(0 <= float(r["test_accuracy"]) <= 1 and 0 <= float(r["shuffled_patch_accuracy"]) <= 1 for r in rows)
    assert int(rows[2]["parameters"]) < int(rows[0]["parameters"])  # no learned position table
    assert all(float(r["mflops_per_image"]) > 0 and float(r["activation_mb_per_128"]) > 0 for r in rows)
    for png in ("accuracy.png", "train_speed.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    stamp = (out / "runs" / "learned" / "metrics.jsonl").stat().st_mtime
    assert main(args) == 0  # resumed: finished variants are not trained again
    assert (out / "runs" / "learned" / "metrics.jsonl").stat().st_mtime == stamp
    assert len(json.loads((out / "results.json").read_text())["results"]) == 3


def test_shuffle_patches_is_a_permutation_of_patches():
    x = torch.arange(2 * 28 * 28, dtype=torch.float32).reshape(2, 1, 28, 28)
    y = shuffle_patches(x, 7, torch.Generator().manual_seed(0))
    assert not torch.equal(x, y)
    assert torch.equal(x.flatten(1).sort(dim=1).values, y.flatten(1).sort(dim=1).values)
    assert _tiles(x) == _tiles(y)


def _tiles(t: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(t[0, 0, r : r + 7, c : c + 7].flatten().tolist()) for r in range(0, 28, 7) for c in range(0, 28, 7)}


def test_attention_cost_grows_with_tokens():
    rows = attention_cost(tokens=(16, 256), repeats=2)
    assert rows[1]["explicit_ms"] > rows[0]["explicit_ms"]
