"""``python -m training ship``: the whole recipe of the shipped model, in one command.

0. ``teacher``: a small CNN trained on the same digits (``training/teacher.py``), unless
   ``--distill none``;
1. ``base``: the ViT trained from scratch on MNIST (the ``base`` preset), distilled from the teacher;
2. ``shipped``: continued from it with outlier exposure and typed digits (the ``shipped`` preset),
   still distilled;
3. ``trust --write``: temperature and not-a-digit threshold fitted on validation data and stored
   in the checkpoint.

With ``--seeds`` it runs the recipe once per seed, each in ``<run-dir>/seed<k>`` and nothing
written to ``--output``, and prints the spread of every trust figure and of the wall time (usually
with ``--epochs-scale`` for a shorter budget).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

from training.config import PRESETS, TrainConfig
from training.markdown import table
from training.teacher import TeacherConfig

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="MNIST root or folder with the .gz files")
    p.add_argument("--download", action="store_true", help="download MNIST into --data-dir if missing")
    p.add_argument("--output", type=Path, default=Path("checkpoints/vit-digits.safetensors"))
    p.add_argument("--run-dir", type=Path, default=Path("runs"), help="runs go to <run-dir>/base and <run-dir>/shipped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", help="run the recipe once per seed and report the spread")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--limit", type=int, default=0, help="only the first N training images (a quick check)")
    p.add_argument("--epochs-scale", type=float, default=1.0, help="scale both stages' epochs (a quick check)")
    p.add_argument("--pictures-scale", type=float, default=1.0, help="scale the generated picture sets (a quick check)")
    p.add_argument(
        "--distill",
        choices=("none", "soft", "hard", "token"),
        default="hard",
        help="distillation from a CNN teacher (token: on a distillation token of the model)",
    )


def run_ship(args: argparse.Namespace) -> dict[str, Any]:
    if args.seeds:
        return run_seeds(args)
    from training.train import run
    from training.trust import run_trust

    common = dict(data_dir=args.data_dir, download=args.download, run_dir=args.run_dir, seed=args.seed,
                  device=args.device, limit=args.limit)  # fmt: skip

    def stage(preset: str, **extra: Any) -> TrainConfig:
        if extra.get("distill") == "token":  # the preset's model with a distillation token
            extra["model"] = PRESETS[preset]["model"].replace(distill_token=True)
        cfg = TrainConfig(**(PRESETS[preset] | extra), name=preset, **common)
        return dataclasses.replace(cfg, epochs=max(1, round(cfg.epochs * args.epochs_scale)))

    def scaled(n: int) -> int:
        return max(1, round(n * args.pictures_scale))

    distill: dict[str, Any] = {}
    if args.distill != "none":
        teacher = args.run_dir / "teacher" / "teacher.safetensors"
        run_teacher(stage("base"), teacher, max(1, round(TeacherConfig.epochs * args.epochs_scale)))
        distill = dict(distill=args.distill, teacher=teacher)
    run(stage("base", **distill))
    shipped = PRESETS["shipped"]
    run(
        stage(
            "shipped",
            init=args.run_dir / "base" / "best.safetensors",
            output=args.output,
            outliers_per_kind=scaled(shipped["outliers_per_kind"]),
            typed_digits=scaled(shipped["typed_digits"]),
            staged_digits=scaled(shipped["staged_digits"]),
            **distill,
        )
    )
    trust = argparse.Namespace(
        checkpoint=args.output,
        data_dir=args.data_dir,
        compare=[],
        per_kind=scaled(500),
        staged=scaled(2000),
        write=True,
        out_dir=getattr(args, "trust_dir", None),
        from_records=None,
    )
    return run_trust(trust)


def run_teacher(cfg: TrainConfig, path: Path, epochs: int) -> dict[str, Any]:
    """Train the CNN teacher on ``cfg``'s training digits (its validation split held out, as the
    student's is), save it to ``path``, and record its accuracies and wall time beside it."""
    from training.teacher import teacher_logits, train_teacher
    from training.train import load_data

    started = time.perf_counter()
    train, val, test, _ = load_data(cfg)
    model = train_teacher(train, val, TeacherConfig(epochs=epochs, seed=cfg.seed), cfg.augment, path)
    record = {
        "epochs": epochs,
        "seed": cfg.seed,
        "val_accuracy": round(float((teacher_logits(model, val).argmax(1) == val.labels).float().mean()), 5),
        "test_accuracy": round(float((teacher_logits(model, test).argmax(1) == test.labels).float().mean()), 5),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    path.with_suffix(".json").write_text(json.dumps(record, indent=2))
    log.info("teacher: %s", json.dumps(record))
    return record


# the figures of a trust report that the spread is reported for: (label, path in the report)
SPREAD_FIGURES = (
    ("MNIST test accuracy", ("mnist_test", "accuracy")),
    ("ECE, MNIST test", ("mnist_test", "ece")),
    ("accuracy, staged test digits", ("staged_test", "accuracy", "all")),
    ("MNIST test digits flagged", ("mnist_test", "flagged")),
    ("staged test digits flagged", ("staged_test", "flagged", "all", "flagged")),
    ("non-digits flagged, held-out kinds", ("nondigits_held_out", "all", "flagged")),
    ("AUROC, held-out kinds", ("auroc_held_out", "all")),
)


def run_seeds(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe once per seed, then the mean, sample sd and range of each trust figure."""
    reports, walls = [], []
    for seed in args.seeds:
        folder = args.run_dir / f"seed{seed}"
        one = argparse.Namespace(**vars(args) | dict(seeds=None, seed=seed, run_dir=folder, trust_dir=folder / "trust"))
        one.output = folder / f"{args.output.stem}-seed{seed}{args.output.suffix}"
        started = time.perf_counter()
        reports.append(run_ship(one))
        walls.append(time.perf_counter() - started)
    summary = spread(reports, walls, args.seeds)
    (args.run_dir / "spread.json").write_text(json.dumps(summary, indent=2))
    print(spread_markdown(summary))
    return summary


def spread(reports: list[dict[str, Any]], walls: list[float], seeds: list[int]) -> dict[str, Any]:
    """Per figure: every seed's value, the mean, the sample sd (None for one seed), min and max."""

    def pick(report: dict[str, Any], path: tuple[str, ...]) -> float:
        value: Any = report
        for key in path:
            value = value[key]
        return float(value)

    rows = {label: [pick(r, path) for r in reports] for label, path in SPREAD_FIGURES}
    rows["wall time of the recipe, min"] = [w / 60 for w in walls]
    return {
        "seeds": list(seeds),
        "figures": {
            label: {
                "values": [round(v, 5) for v in values],
                "mean": round(statistics.fmean(values), 5),
                "sd": round(statistics.stdev(values), 5) if len(values) > 1 else None,
                "min": round(min(values), 5),
                "max": round(max(values), 5),
            }
            for label, values in rows.items()
        },
    }


def spread_markdown(summary: dict[str, Any]) -> str:
    """The spread of every figure over the seeds, as a Markdown table."""
    rows = [
        [label, f"{f['mean']:.4f}", "—" if f["sd"] is None else f"{f['sd']:.4f}", f"{f['min']:.4f}", f"{f['max']:.4f}"]
        for label, f in summary["figures"].items()
    ]
    return f"Seeds {', '.join(map(str, summary['seeds']))}:\n\n" + table(["figure", "mean", "sd", "min", "max"], rows)
