"""The experiments' run store: one folder per run, its record, and when a run counts as done.

A suite keeps its runs in ``<out>/<suite>[-<budget>]/runs/<variant>-seed<N>/``: ``config.json``,
``metrics.jsonl`` (the curve), ``result.json`` (test accuracy and loss, the budget, the run key)
and ``test_correct.npy`` (which test images it got right, for the paired tests), beside the
checkpoints git ignores. A run is done when its ``result.json`` carries its config's
:func:`run_key`; a run of another suite with the same key is reused instead of trained again
(:func:`find_same_run`), and an interrupted one resumes from its last epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model.checkpoint import load_checkpoint
from model.config import ViTConfig
from model.device import resolve_device
from training.config import AugmentConfig, TrainConfig
from training.data import CANVAS_TEST_SEED, Split, load_split, on_canvas, prepare_root, to_input
from training.engine import fit_input, input_shape, predict, score
from training.suites import Suite, run_name, variant_config

log = logging.getLogger(__name__)

# The runs' records (config, curve, result, which test images each got right) are small and tracked
# by git, so a fresh clone resumes a suite where it stopped; their checkpoints are ignored.
RESULTS_DIR = Path("docs/results")
QUICK_DIR = Path("runs/experiments")  # --quick runs are trials: they stay out of git


def train_suite(
    suite: Suite,
    base: TrainConfig,
    out: Path,
    budget: dict[str, Any],
    seeds: Sequence[int],
    variants: Collection[str] | None,
    after_run: Callable[[], object],
) -> None:
    """Train (or reuse) every run the suite still lacks (of ``variants`` only, when given) into
    ``out``, seed-major: an interrupted suite has every variant at the same seeds. ``after_run``
    runs after every run that is recorded (the tables fill in as the suite goes)."""
    out_dir = out.parent
    tests: dict[int, Split] = {}  # the scoring set of each canvas (0: none) the variants use
    for seed in seeds:
        for variant, overrides in suite.variants.items():
            if variants and variant not in variants:
                continue
            cfg = variant_config(base, variant, overrides, seed)
            if cfg.canvas not in tests:
                tests[cfg.canvas] = scoring_set(base.data_dir, base.limit, cfg.canvas)
            test = tests[cfg.canvas]
            result_file = cfg.run_path / "result.json"
            # done if its recorded config is this one (fields the record predates taken at their defaults)
            if result_file.is_file() and run_key(recorded_config(cfg.run_path)) == run_key(cfg):
                continue
            shuffled = suite.shuffled_patches
            # the shuffled-patches score needs the trained network, so such a suite reuses a run
            # only where its checkpoint is on this machine (git does not keep checkpoints)
            same = find_same_run(out_dir, cfg, len(test), checkpoint=shuffled)
            if same is not None:  # the base model recurs in most suites: trained once per seed
                result = reuse_run(same, cfg, test, shuffled)
            else:
                if cfg.teacher is not None and not cfg.teacher.is_file():
                    train_teacher_for(cfg)
                result = run_variant(cfg, test, shuffled=shuffled)
            result |= {"budget": budget, "run_key": run_key(cfg)}
            result_file.write_text(json.dumps(result, indent=2))
            after_run()


def train_teacher_for(cfg: TrainConfig) -> None:
    """Train ``cfg``'s teacher on ``cfg``'s training images at its seed, as the shipped recipe
    trains its own (``python -m training ship``); its record lands beside it."""
    from training.ship import run_teacher
    from training.teacher import TeacherConfig

    assert cfg.teacher is not None
    cfg.teacher.parent.mkdir(parents=True, exist_ok=True)
    run_teacher(cfg, cfg.teacher, TeacherConfig.epochs)


def finished_runs(out: Path, suite: Suite, budget: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per variant, the records of its finished runs in ``out`` at ``budget``, in seed order."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for variant in suite.variants:
        prefix = run_name(variant, 0).rsplit("-seed", 1)[0]
        found = sorted(
            p  # <variant>-seed<N> only: not a run moved aside as <variant>-seed<N>.stale-<time>
            for p in (out / "runs").glob(f"{prefix}-seed*/result.json")
            if p.parent.name.removeprefix(f"{prefix}-seed").isdigit()
        )
        found_runs = [json.loads(p.read_text()) for p in found]
        runs[variant] = sorted((r for r in found_runs if r.get("budget") == budget), key=lambda r: r["seed"])
    return runs


def budget_tag(budget: dict[str, Any], default: dict[str, Any]) -> str:
    """'' for the suite's own budget, else e.g. ``-epochs10`` so other budgets never mix."""
    changed = {k: v for k, v in sorted(budget.items()) if default.get(k) != v}
    return "".join(f"-{k.replace('_', '')}{v}" for k, v in changed.items())


def run_key(cfg: TrainConfig) -> str:
    """What makes two runs the same run: the whole training config but its name and where it runs
    (a teacher counts by its file's name: it lives in the suite's folder, wherever that is)."""
    data = cfg.to_dict()
    for key in ("name", "run_dir", "data_dir", "download", "output", "device", "threads"):
        data.pop(key, None)
    if cfg.teacher is not None:
        data["teacher"] = Path(cfg.teacher).name
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def find_same_run(out_dir: Path, cfg: TrainConfig, test_images: int, checkpoint: bool = False) -> Path | None:
    """A finished run of another suite with ``cfg``'s training config, scored on as many test images
    (the same test set: the budget, which draws it, is part of the config). With ``checkpoint``, only
    a run that trained here and whose network is still on this machine."""
    key = run_key(cfg)
    for result_file in sorted(out_dir.glob("*/runs/*/result.json")):
        run_dir = result_file.parent
        if run_dir == cfg.run_path or not (run_dir / "config.json").is_file():
            continue
        if not (run_dir / "test_correct.npy").is_file():
            continue
        result = json.loads(result_file.read_text())
        if result.get("test_images") != test_images:
            continue
        if checkpoint and ("same_as" in result or not (run_dir / "best.safetensors").is_file()):
            continue
        if run_key(recorded_config(run_dir)) == key:
            return run_dir
    return None


def reuse_run(same: Path, cfg: TrainConfig, test: Split, shuffled: bool) -> dict[str, Any]:
    """Count the finished run ``same`` as ``cfg``'s: copy its record, and with ``shuffled`` score its
    network on shuffled patches (the position suite's question)."""
    log.info("%s: the same run is done in %s; reusing it", cfg.name, same)
    cfg.run_path.mkdir(parents=True, exist_ok=True)
    for name in ("best.safetensors", "last.state.safetensors"):
        (cfg.run_path / name).unlink(missing_ok=True)  # an interrupted run's network is not this run's
    for name in ("config.json", "metrics.jsonl", "test_correct.npy"):
        shutil.copyfile(same / name, cfg.run_path / name)
    earlier = json.loads((same / "result.json").read_text())
    result = earlier | {"same_as": earlier.get("same_as", str(same))}  # the run that trained it
    result.pop("shuffled_patch_accuracy", None)  # measured for the other suite's question
    if shuffled:
        device = resolve_device(cfg.device)
        model = load_checkpoint(same / "best.safetensors", device=device).model
        result["shuffled_patch_accuracy"] = shuffled_score(model, test, device, cfg)
    return result


def recorded_config(run_dir: Path) -> TrainConfig:
    """The training config a run's ``config.json`` records; fields it predates take their defaults."""
    data = json.loads((run_dir / "config.json").read_text())
    data["model"] = ViTConfig.from_dict(data["model"])
    data["augment"] = AugmentConfig(**data["augment"])
    for key in ("data_dir", "run_dir", "output", "init"):
        data[key] = None if data[key] is None else Path(data[key])
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in data.items() if k in known})


def scoring_set(data_dir: Path, limit: int, canvas: int = 0) -> Split:
    """The MNIST test set; a run on fewer training images scores on a fixed random third as many
    test images (drawn at random: MNIST's first test images are from the cleaner writers). With a
    ``canvas``, each at the position training's test set gives it."""
    test = load_split(prepare_root(data_dir), train=False)
    if canvas:
        test = on_canvas(test, canvas, CANVAS_TEST_SEED)
    if limit and limit < 30000:
        order = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))
        test = test.subset(order[: min(len(test), max(limit // 3, 200))].sort().values)
    return test


def run_variant(cfg: TrainConfig, test: Split, shuffled: bool = False) -> dict[str, Any]:
    """Train one run from scratch (or resume it), then score it on ``test``."""
    from training.train import run

    run_path = cfg.run_path
    resume = (run_path / "last.state.safetensors").is_file() and (run_path / "metrics.jsonl").is_file()
    if (run_path / "config.json").is_file():
        earlier = run_key(recorded_config(run_path))
        if earlier != run_key(cfg):  # another budget or variant ran here before: keep it, start afresh
            stale = run_path.with_name(f"{run_path.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
            log.warning("%s was run with another config; moved to %s", run_path, stale)
            run_path.rename(stale)
            resume = False
    if not resume and run_path.is_dir():
        for name in ("metrics.jsonl", "last.state.safetensors", "best.safetensors"):
            (run_path / name).unlink(missing_ok=True)  # a fresh start leaves no half-run behind
    run(cfg, resume=resume)
    device = resolve_device(cfg.device)
    model = load_checkpoint(run_path / "best.safetensors", device=device).model
    logits = predict(model, test, device)
    test_acc, test_loss = score(logits, test.labels)
    correct = (logits.argmax(1) == test.labels).numpy()
    np.save(run_path / "test_correct.npy", correct)
    epochs = [json.loads(line) for line in (run_path / "metrics.jsonl").read_text().splitlines()]
    best = max(epochs, key=lambda r: r["val_acc"])
    wall = sum(r["epoch_s"] for r in epochs)  # training time over every invocation, evaluation aside
    result: dict[str, Any] = {
        "seed": cfg.seed,
        "test_accuracy": round(test_acc, 5),
        "test_loss": round(test_loss, 5),
        "test_images": len(test),
        "val_accuracy": best["val_acc"],
        "val_loss": best.get("val_loss"),
        "train_wall_s": round(wall, 1),
        "epochs": [{k: v for k, v in r.items() if k != "train_curve"} for r in epochs],
        "train_curve": [point for r in epochs for point in r.get("train_curve", [])],
    }
    if shuffled:
        result["shuffled_patch_accuracy"] = shuffled_score(model, test, device, cfg)
    log.info("%s: test %.4f (loss %.4f), %.0f s", cfg.name, test_acc, test_loss, wall)
    return result


# --- the shuffled-patches score ------------------------------------------------------------------


def shuffled_score(model: nn.Module, test: Split, device: torch.device, cfg: TrainConfig) -> float:
    """The shuffled-patches accuracy of a run's network, as its result records it."""
    return round(shuffled_accuracy(model, test, device, cfg.model.patch_size), 5)


def shuffle_patches(x: torch.Tensor, patch: int, generator: torch.Generator) -> torch.Tensor:
    """Put the patches of every image in ``x`` (B, C, H, W) in an order of its own, drawn at random."""
    B, C, H, W = x.shape
    g = H // patch
    tiles = x.reshape(B, C, g, patch, g, patch).permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, C, patch, patch)
    order = torch.rand(B, g * g, generator=generator).argsort(dim=1)  # one permutation per image
    tiles = tiles[torch.arange(B)[:, None], order]
    return tiles.reshape(B, g, g, C, patch, patch).permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)


@torch.no_grad()
def shuffled_accuracy(model: nn.Module, test: Split, device: torch.device, patch: int) -> float:
    """Accuracy when every test image's patches are put in a random order of its own: what the
    model makes of the pieces without their layout."""
    generator = torch.Generator().manual_seed(0)
    in_chans, size = input_shape(model)
    model.eval()
    correct = 0
    for start in range(0, len(test), 500):
        x = shuffle_patches(to_input(test.images[start : start + 500], torch.device("cpu")), patch, generator)
        logits = model(fit_input(x.to(device), in_chans, size)).cpu()
        correct += int((logits.argmax(1) == test.labels[start : start + 500]).sum())
    return correct / max(len(test), 1)
