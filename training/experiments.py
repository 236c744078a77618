"""``python -m training experiments <suite>``: the coursework's questions, answered with numbers.

A suite is a list of named variants, each a set of overrides of one base training config, and the
pairs of variants its reading compares. Every variant (or those ``--variants`` names) trains from
scratch with the same budget, once per seed (``--seeds``, three by default); a run that another
suite has already done with the same config is reused instead (the position suite, which scores the
network on shuffled patches, only where that run's checkpoint is on this machine). Each run is
scored on the MNIST test set (accuracy, cross-entropy, and which images it gets right, for the
paired tests) and keeps its training curve.
Then the suite's costs are measured once per variant on fresh models (parameters, FLOPs with the
attention products, activation memory, and interleaved speed rounds: see ``training/costs.py``).

Results go to ``<out>/<suite>/`` (``<out>/<suite>-<budget>/`` for a non-default budget; ``<out>`` is
``docs/results`` unless ``--out-dir`` says otherwise): ``results.json``, ``results.csv``,
``results.md`` (the tables of docs/RESULTS.md), PNG plots, and ``runs/<run>/`` per run (``--quick``:
``runs/experiments``). A finished
run is never trained again and an interrupted one resumes from its last epoch, so the same command
continues a suite where it stopped. The finished runs' records are committed, checkpoints aside: on
a fresh clone they count as done, and a run interrupted elsewhere starts again from its first epoch.
``--quick`` shrinks data and epochs to minutes. ``--tables-only`` rewrites the tables from the run
records alone, and ``--doc docs/RESULTS.md`` writes the suite's table into that document's block.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model.checkpoint import load_checkpoint
from model.config import ConfigError, ViTConfig
from model.device import resolve_device
from model.factory import build_model, count_parameters
from training.config import AugmentConfig, TrainConfig
from training.costs import activation_bytes, flops_per_image, interleaved_speeds, spread, step_peak_bytes
from training.data import Split, load_split, prepare_root, to_input
from training.engine import fit_input, input_shape, predict, score
from training.markdown import table
from training.stats import CONFIDENCE, mcnemar, mean_sd, paired_interval, reading

log = logging.getLogger(__name__)

_MODEL_FIELDS = {f.name for f in dataclasses.fields(ViTConfig)}


@dataclass(frozen=True)
class Suite:
    """One question: its variants (overrides of model or training fields), the pairs its reading
    compares (A, B), and the budget it trains with when that differs from :data:`BASE`'s."""

    question: str
    variants: dict[str, dict[str, Any]]
    comparisons: tuple[tuple[str, str], ...]
    budget: dict[str, Any] = field(default_factory=dict)


# patch 2 (one token per 2x2 pixels of the 28x28 digit, or per pixel of the digit upsampled to
# 56x56), mean pooling (the window and pooled-key variants need the tokens to be exactly the grid),
# and the conv stem, which gives usable tokens within the short budget these token counts allow
_EFFICIENT = {"patch_size": 2, "pool": "mean", "stem": "conv"}
SUITES: dict[str, Suite] = {
    "tokens": Suite(
        "How do patch size and token count drive cost and accuracy?",
        {f"patch{p}": {"patch_size": p} for p in (2, 4, 7, 14)},
        (("patch2", "patch4"), ("patch7", "patch4"), ("patch14", "patch7")),
    ),
    "posenc": Suite(
        "What does the positional encoding do?",
        {name: {"pos_embed": name} for name in ("learned", "sincos2d", "none")},
        (("sincos2d", "learned"), ("none", "learned")),
    ),
    "pooling": Suite(
        "Class token or mean pooling?",
        {"cls-token": {"pool": "cls"}, "mean-pool": {"pool": "mean"}},
        (("mean-pool", "cls-token"),),
    ),
    "timm": Suite(
        "Our ViT against timm's; grayscale against replicated RGB, with the stem's step controlled",
        {
            "ours-1ch": {},
            "timm-1ch": {"impl": "timm"},
            "ours-3ch": {"in_chans": 3},
            "timm-3ch": {"impl": "timm", "in_chans": 3},
            # replicating the grey channel 3 times triples the effective step of the patch
            # embedding under AdamW; these two give the other input the same step
            "ours-1ch-stem3x": {"stem_lr_scale": 3.0},
            "ours-3ch-stem1/3": {"in_chans": 3, "stem_lr_scale": 1 / 3},
            "timm-1ch-stem3x": {"impl": "timm", "stem_lr_scale": 3.0},
        },
        (
            ("timm-1ch", "ours-1ch"),
            ("ours-3ch", "ours-1ch"),
            ("timm-3ch", "timm-1ch"),
            ("ours-3ch", "ours-1ch-stem3x"),
            ("ours-3ch-stem1/3", "ours-1ch"),
            ("ours-1ch-stem3x", "ours-1ch"),
            ("timm-1ch-stem3x", "timm-1ch"),
            ("timm-3ch", "timm-1ch-stem3x"),
        ),
    ),
    "size": Suite(
        "Width, depth and heads around the base",
        {
            "d64-l6-h4": {},
            "d32-l6-h4": {"dim": 32},
            "d128-l6-h4": {"dim": 128},
            "d64-l2-h4": {"depth": 2},
            "d64-l12-h4": {"depth": 12},
            "d64-l6-h1": {"heads": 1},
            "d64-l6-h8": {"heads": 8},
        },
        (
            ("d32-l6-h4", "d64-l6-h4"),
            ("d128-l6-h4", "d64-l6-h4"),
            ("d64-l2-h4", "d64-l6-h4"),
            ("d64-l12-h4", "d64-l6-h4"),
            ("d64-l6-h1", "d64-l6-h4"),
            ("d64-l6-h8", "d64-l6-h4"),
        ),
    ),
    "stem": Suite(
        "Linear patch embedding or a convolutional stem?",
        {"linear": {"stem": "linear"}, "conv": {"stem": "conv"}},
        (("conv", "linear"),),
    ),
    "efficient": Suite(
        "Full attention against local-window, linear and key/value-pooling attention, at 196 and 784 tokens",
        {
            f"{kind}-{tokens}": _EFFICIENT | {"image_size": size, "attention": kind}
            for size, tokens in ((28, 196), (56, 784))
            for kind in ("full", "window", "linear", "kvpool")
        },
        tuple((f"{kind}-{n}", f"full-{n}") for n in (196, 784) for kind in ("window", "linear", "kvpool"))
        # and the kind that learns fastest against the other two
        + tuple((f"window-{n}", f"{kind}-{n}") for n in (196, 784) for kind in ("linear", "kvpool")),
        # full attention over 784 tokens trains at about a dozen images/s on this CPU: the suite
        # trains every variant for 2 epochs on 8,000 images (2,000 more for validation) in batches
        # of 32 (500 steps), and tests on 3,333 test images drawn at random
        budget={"epochs": 2, "limit": 10000, "batch_size": 32},
    ),
}
# The base every suite varies: the plain ViT of the coursework (linear patch embedding, so patch
# sizes 7 and 14 and timm's model are comparable), pinned here so that changing the CLI's default
# recipe never silently changes an experiment.
BASE = TrainConfig(
    model=ViTConfig(patch_size=4, dim=64, depth=6, heads=4, mlp_ratio=2.0, stem="linear", pos_embed="learned"),
    epochs=2,
    batch_size=64,
    lr=2e-3,
    warmup_epochs=0.2,
    label_smoothing=0.0,
    ema_decay=0.0,
    # No augmentation: the suites compare architectures at a short, fixed budget, and random affine
    # pays off only over long schedules; early on it slows every variant down.
    augment=AugmentConfig.off(),
    export=False,
)
QUICK = {"epochs": 1, "limit": 3000, "val_size": 300}
DEFAULT_SEEDS = (0, 1, 2)
# The runs' records (config, curve, result, which test images each got right) are small and tracked
# by git, so a fresh clone resumes a suite where it stopped; their checkpoints are ignored.
RESULTS_DIR = Path("docs/results")
QUICK_DIR = Path("runs/experiments")  # --quick runs are trials: they stay out of git


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", choices=sorted(SUITES), help="which question to answer")
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS), help="seeds per variant (0 1 2)")
    p.add_argument(
        "--variants",
        nargs="+",
        metavar="VARIANT",
        help="train only these of the suite's variants (default: all; the costs cover them all)",
    )
    p.add_argument("--quick", action="store_true", help="3,000 images, 1 epoch: minutes, not hours")
    p.add_argument("--epochs", type=int, help=f"epochs per run (default {BASE.epochs}, or the suite's)")
    p.add_argument("--limit", type=int, help="training images per run (default: all, or the suite's)")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument(
        "--out-dir",
        type=Path,
        help=f"where suites keep their runs and tables (default {RESULTS_DIR}, tracked by git, checkpoints "
        f"aside; with --quick {QUICK_DIR})",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    p.add_argument("--remeasure", action="store_true", help="measure the costs again even if they are stored")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--no-costs", action="store_true", help="train only; measure the costs in a later, quiet run")
    only.add_argument("--costs-only", action="store_true", help="train nothing: measure the costs, rewrite the tables")
    only.add_argument(
        "--tables-only", action="store_true", help="train and measure nothing: rewrite the tables from the run records"
    )
    p.add_argument(
        "--doc",
        type=Path,
        help="also write the suite's table into this markdown file, between '<!-- table:FOLDER -->' and "
        "'<!-- /table -->' (FOLDER: the suite's results folder, e.g. posenc-epochs10)",
    )


def run_experiments(args: argparse.Namespace) -> dict[str, Any]:
    suite = SUITES[args.suite]
    unknown = sorted(set(args.variants or ()) - set(suite.variants))
    if unknown:
        raise ConfigError(f"suite {args.suite} has no variant {', '.join(unknown)}; it has {', '.join(suite.variants)}")
    train = not (args.costs_only or args.tables_only)
    if args.variants and not train:
        raise ConfigError("--variants picks what to train: it does nothing with --costs-only or --tables-only")
    if args.remeasure and (args.no_costs or args.tables_only):
        raise ConfigError("--remeasure measures the costs: it contradicts --no-costs and --tables-only")
    budget = dict(suite.budget) | (dict(QUICK) if args.quick else {})
    budget |= {k: v for k, v in (("epochs", args.epochs), ("limit", args.limit)) if v is not None}
    out_dir = args.out_dir or (QUICK_DIR if args.quick else RESULTS_DIR)
    out = out_dir / (args.suite + budget_tag(budget, suite.budget))
    if args.doc is not None:
        update_doc(args.doc, out.name, None)  # a missing table block stops the suite before it trains
    if args.tables_only and not list(out.glob("runs/*/result.json")):
        # an empty table written over a document's would erase figures whose records are gone
        raise ConfigError(f"{out} has no run records to make tables from")
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = dataclasses.replace(
        BASE, data_dir=args.data_dir, device=args.device, run_dir=out / "runs", threads=args.threads, **budget
    )
    started = time.perf_counter()
    if train:
        train_suite(args, base, out, budget)
    costs_file = out / "costs.json"
    measure = args.costs_only or (not args.no_costs and (args.remeasure or not costs_file.is_file()))
    if measure and not args.tables_only:
        costs_file.write_text(json.dumps(measure_costs(args.suite, base), indent=2))
    results = write_results(out, args.suite, budget)
    if args.doc is not None and results["rows"]:
        update_doc(args.doc, out.name, results["markdown"])
        log.info("suite %s: its table in %s rewritten", args.suite, args.doc)
    log.info("suite %s: %.1f min in this invocation", args.suite, (time.perf_counter() - started) / 60)
    print(results["markdown"], end="")
    return results


def train_suite(args: argparse.Namespace, base: TrainConfig, out: Path, budget: dict[str, Any]) -> None:
    """Train (or reuse) every run the suite still lacks, seed-major: an interrupted suite has every
    variant at the same seeds."""
    suite = SUITES[args.suite]
    out_dir = out.parent
    test = _test_split(args.data_dir, base.limit)
    for seed in args.seeds:
        for variant, overrides in suite.variants.items():
            if args.variants and variant not in args.variants:
                continue
            cfg = variant_config(base, variant, overrides, seed)
            result_file = cfg.run_path / "result.json"
            if result_file.is_file() and json.loads(result_file.read_text()).get("run_key") == run_key(cfg):
                continue
            shuffled = "pos_embed" in overrides
            # the shuffled-patches score needs the trained network, so the position suite reuses
            # a run only where its checkpoint is on this machine (git does not keep checkpoints)
            same = find_same_run(out_dir, cfg, len(test), checkpoint=shuffled)
            if same is not None:  # the base model recurs in most suites: trained once per seed
                result = reuse_run(same, cfg, test, shuffled)
            else:
                result = run_variant(cfg, test, shuffled=shuffled)
            result |= {"budget": budget, "run_key": run_key(cfg)}
            result_file.write_text(json.dumps(result, indent=2))
            write_results(out, args.suite, budget)  # after every run: the tables fill in as it goes


def update_doc(doc: Path, name: str, table: str | None) -> None:
    """Put ``table`` between ``<!-- table:NAME -->`` and ``<!-- /table -->`` in the markdown file
    ``doc``; with ``table`` None, only check that the block is there."""
    if not doc.is_file():
        raise ConfigError(f"--doc {doc}: no such file")
    text = doc.read_text()
    # the block's body may not hold another block's start: a missing end marker is an error, never
    # a reason to swallow the next table
    block = re.compile(rf"(<!-- table:{re.escape(name)} -->\n)(?:(?!<!-- table:).)*?(<!-- /table -->)", re.S)
    found = len(block.findall(text))
    if found != 1:
        raise ConfigError(
            f"--doc {doc} has {found or 'no'} '<!-- table:{name} -->' ... '<!-- /table -->' blocks for this "
            "table; it needs exactly one"
        )
    if table is not None:
        doc.write_text(block.sub(lambda m: m.group(1) + table.rstrip("\n") + "\n" + m.group(2), text, count=1))


def budget_tag(budget: dict[str, Any], default: dict[str, Any]) -> str:
    """'' for the suite's own budget, else e.g. ``-epochs10`` so other budgets never mix."""
    changed = {k: v for k, v in sorted(budget.items()) if default.get(k) != v}
    return "".join(f"-{k.replace('_', '')}{v}" for k, v in changed.items())


def run_name(variant: str, seed: int) -> str:
    return f"{variant.replace('/', '_')}-seed{seed}"


def variant_config(base: TrainConfig, variant: str, overrides: dict[str, Any], seed: int) -> TrainConfig:
    """The training config of one run: the model overrides go to the model, the rest to training."""
    model = {k: v for k, v in overrides.items() if k in _MODEL_FIELDS}
    training = {k: v for k, v in overrides.items() if k not in _MODEL_FIELDS}
    return dataclasses.replace(
        base, name=run_name(variant, seed), seed=seed, model=base.model.replace(**model), **training
    )


def run_key(cfg: TrainConfig) -> str:
    """What makes two runs the same run: the whole training config but its name and where it runs."""
    data = cfg.to_dict()
    for key in ("name", "run_dir", "data_dir", "download", "output", "device", "threads"):
        data.pop(key, None)
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
        if run_key(_config_from_dict(json.loads((run_dir / "config.json").read_text()))) == key:
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


def _config_from_dict(data: dict[str, Any]) -> TrainConfig:
    data = dict(data)
    data["model"] = ViTConfig.from_dict(data["model"])
    data["augment"] = AugmentConfig(**data["augment"])
    for key in ("data_dir", "run_dir", "output", "init"):
        data[key] = None if data[key] is None else Path(data[key])
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in data.items() if k in known})


def _test_split(data_dir: Path, limit: int) -> Split:
    """The MNIST test set; a run on fewer training images scores on a fixed random third as many
    test images (drawn at random: MNIST's first test images are from the cleaner writers)."""
    test = load_split(prepare_root(data_dir), train=False)
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
        earlier = run_key(_config_from_dict(json.loads((run_path / "config.json").read_text())))
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


def measure_costs(suite_name: str, base: TrainConfig) -> dict[str, Any]:
    """Parameters, FLOPs, activation memory and interleaved speeds of every variant, on fresh models."""
    suite = SUITES[suite_name]
    torch.manual_seed(0)
    models = {v: build_model(variant_config(base, v, o, 0).model) for v, o in suite.variants.items()}
    costs: dict[str, Any] = {
        v: {
            "tokens": m_cfg.num_patches + m_cfg.num_prefix_tokens,
            "parameters": count_parameters(m),
            "mflops_per_image": round(flops_per_image(m) / 1e6, 2),
            "activation_mb_per_128": round(activation_bytes(m) / 2**20, 2),
            "step_peak_mb_per_64": round(step_peak_bytes(m_cfg, 64) / 2**20, 1),
        }
        for v, m in models.items()
        for m_cfg in [variant_config(base, v, suite.variants[v], 0).model]
    }
    log.info("measuring speeds of %d variants in interleaved rounds", len(models))
    for v, speeds in interleaved_speeds(models).items():
        costs[v] |= speeds
    extra: dict[str, Any] = {"measured": time.strftime("%Y-%m-%d %H:%M"), "threads": torch.get_num_threads()}
    if suite_name == "tokens":
        extra["attention_cost"] = attention_cost()
    if suite_name == "timm":
        extra["pretrained_route"] = pretrained_route_cost()
    return {"variants": costs} | extra


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


def attention_cost(
    tokens: tuple[int, ...] = (16, 49, 100, 196, 400, 784, 1024),
    dim: int = 64,
    heads: int = 4,
    batch: int = 8,
    rounds: int = 5,
    repeats: int = 5,
) -> list[dict[str, Any]]:
    """Milliseconds per attention forward at growing token counts, fused SDPA against the explicit
    softmax, from interleaved rounds (median, min, max)."""
    rows = []
    d = dim // heads
    for n in tokens:
        q, k, v = (torch.randn(batch, heads, n, d) for _ in range(3))
        samples: dict[str, list[float]] = {"fused": [], "explicit": []}
        with torch.inference_mode():
            for r in range(rounds + 1):
                for name in ("fused", "explicit") if r % 2 == 0 else ("explicit", "fused"):
                    fn = _fused if name == "fused" else _explicit
                    start = time.perf_counter()
                    for _ in range(repeats):
                        fn(q, k, v)
                    if r:
                        samples[name].append((time.perf_counter() - start) / repeats * 1000)
        rows.append({"tokens": n} | {f"{name}_ms": spread(times, 3) for name, times in samples.items()})
    return rows


def _fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.scaled_dot_product_attention(q, k, v)


def _explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ v


def pretrained_route_cost(rounds: int = 5) -> dict[str, Any]:
    """What the ImageNet-pretrained route costs: timm's ``vit_tiny_patch16_224`` (built with
    ``pretrained=False``: the same network without the download) at 224x224 RGB, against the
    shipped model's architecture at 28x28, in interleaved rounds (inference, batch 16, and one
    image)."""
    import timm

    from training.config import PRESETS

    tiny = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
    ours = build_model(PRESETS["shipped"]["model"])
    models = {"vit_tiny": tiny, "shipped": ours}
    speeds = interleaved_speeds(models, rounds=rounds, train_steps=1, train_batch=16, infer_batch=16)
    return {
        name: {
            "parameters": count_parameters(m),
            "input": f"{input_shape(m)[0]}x{input_shape(m)[1]}x{input_shape(m)[1]}",
            "mflops_per_image": round(flops_per_image(m) / 1e6, 2),
        }
        | speeds[name]
        for name, m in models.items()
    }


# --- results: aggregate the runs, compare, write tables and plots ---------------------------------


def collect(out: Path, suite_name: str, budget: dict[str, Any]) -> dict[str, Any]:
    """Every finished run of the suite, the per-variant summary and the paired comparisons."""
    suite = SUITES[suite_name]
    costs_file = out / "costs.json"
    costs = json.loads(costs_file.read_text()) if costs_file.is_file() else {}
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
    measured = costs.get("variants", {})
    rows = [summarise(v, runs[v], measured.get(v, {})) for v in suite.variants if runs[v] or v in measured]
    comparisons = [compare(out, a, b, runs[a], runs[b]) for a, b in suite.comparisons if runs[a] and runs[b]]
    wall = sum(r["train_wall_s"] for rs in runs.values() for r in rs if "same_as" not in r)
    return {
        "suite": suite_name,
        "question": suite.question,
        "budget": budget,
        "train_wall_min": round(wall / 60, 1),
        "rows": rows,
        "comparisons": comparisons,
        "costs": {k: v for k, v in costs.items() if k != "variants"},
        "runs": runs,
    }


def summarise(variant: str, runs: list[dict[str, Any]], costs: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"variant": variant, "seeds": [r["seed"] for r in runs]}
    for key in ("test_accuracy", "test_loss", "val_loss", "shuffled_patch_accuracy"):
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            mean, sd = mean_sd(values)
            # unrounded: the tables round once, when they print
            row[key] = {"mean": mean, "sd": sd, "n": len(values)}
    if runs:
        row["train_wall_s"] = round(sum(r["train_wall_s"] for r in runs) / len(runs), 1)
    return row | costs


def compare(out: Path, a: str, b: str, runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]]) -> dict[str, Any]:
    """A against B over every seed both have run: the mean accuracy difference, McNemar's test per
    seed, and the interval of the difference (over seeds and test images) with its reading
    (``training/stats.py``). Without every seed's per-image records there is no interval and no
    reading."""
    seeds = sorted({r["seed"] for r in runs_a} & {r["seed"] for r in runs_b})
    files = {
        s: (out / "runs" / run_name(a, s) / "test_correct.npy", out / "runs" / run_name(b, s) / "test_correct.npy")
        for s in seeds
    }
    pairs = {s: (np.load(fa), np.load(fb)) for s, (fa, fb) in files.items() if fa.is_file() and fb.is_file()}
    tests = [{"seed": s} | mcnemar(*pair) for s, pair in pairs.items()]
    acc = {r["seed"]: r["test_accuracy"] for r in runs_a}, {r["seed"]: r["test_accuracy"] for r in runs_b}
    diff = 100 * sum(acc[0][s] - acc[1][s] for s in seeds) / max(len(seeds), 1)
    result = {"a": a, "b": b, "diff_points": round(diff, 2), "tests": tests}
    missing = ", ".join(str(s) for s in seeds if s not in pairs)
    if missing or not seeds:
        why = f"no per-image records at seed {missing}" if missing else "no seed run by both"
        return result | {"interval_points": None, "reading": f"no reading: {why}"}
    low, high = (round(x, 2) for x in paired_interval(list(pairs.values())))
    return result | {"interval_points": [low, high], "reading": reading(a, b, (low, high), len(seeds))}


def write_results(out: Path, suite_name: str, budget: dict[str, Any]) -> dict[str, Any]:
    results = collect(out, suite_name, budget)
    results["markdown"] = markdown(results)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(results["markdown"])
    _write_csv(out / "results.csv", results["rows"])
    if results["rows"]:
        from training.plots import plot_curves_by_variant, plot_error_bars

        rows = results["rows"]
        names = [r["variant"] for r in rows]
        if all("test_accuracy" in r for r in rows):
            plot_error_bars(
                names,
                [100 * r["test_accuracy"]["mean"] for r in rows],
                [100 * (r["test_accuracy"]["sd"] or 0.0) for r in rows],
                "test accuracy %",
                out / "accuracy.png",
            )
        if all("train_images_per_s" in r for r in rows):
            speeds = [r["train_images_per_s"] for r in rows]
            plot_error_bars(
                names,
                [s["median"] for s in speeds],
                [(s["median"] - s["min"], s["max"] - s["median"]) for s in speeds],
                "training images/s",
                out / "train_speed.png",
            )
        plot_curves_by_variant(results["runs"], out / "curves.png")
    return results


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    flat = [_flatten(r) for r in rows]
    columns = list(dict.fromkeys(k for r in flat for k in r))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat)


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}_")
        elif isinstance(value, list):
            flat[prefix + key] = " ".join(map(str, value))
        else:
            flat[prefix + key] = value
    return flat


def markdown(results: dict[str, Any]) -> str:
    """The suite's tables for docs/RESULTS.md: the variants, then the paired comparisons."""
    rows = results["rows"]
    shuffled = any("shuffled_patch_accuracy" in r for r in rows)
    head = ["variant", "seeds", "tokens", "params", "MFLOPs/img", "test acc %", "test loss", "val loss"]
    head += ["shuffled acc %"] if shuffled else []
    head += ["train img/s", "latency ms", "infer img/s", "saved activations MB/128", "step peak MB/64"]
    text = table(head, [_variant_cells(r, shuffled) for r in rows])
    if results["comparisons"]:
        head = [
            "A vs B",
            "A - B, points (seed mean)",
            f"{100 * CONFIDENCE:g}% interval, points (t over seeds, plus test-image noise)",
            "McNemar p per seed (A only / B only right)",
            "reading",
        ]
        text += "\n" + table(head, [_comparison_cells(c) for c in results["comparisons"]])
    return text + _extra_tables(results["costs"])


def _variant_cells(r: dict[str, Any], shuffled: bool) -> list[str]:
    """One variant's row of the suite's table (``shuffled``: with the shuffled-patches column)."""
    cells = [
        r["variant"],
        str(len(r["seeds"])),
        str(r.get("tokens", "")),
        f"{r['parameters']:,}" if "parameters" in r else "",
        str(r.get("mflops_per_image", "")),
        _mean_sd(r.get("test_accuracy"), 100),
        _mean_sd(r.get("test_loss"), 1, 3),
        _mean_sd(r.get("val_loss"), 1, 3),
    ]
    cells += [_mean_sd(r.get("shuffled_patch_accuracy"), 100)] if shuffled else []
    cells += [_speed(r.get(k)) for k in ("train_images_per_s", "latency_ms", "images_per_s")]
    cells += [str(r.get("activation_mb_per_128", "")), str(r.get("step_peak_mb_per_64", ""))]
    return cells


def _comparison_cells(c: dict[str, Any]) -> list[str]:
    """One paired comparison's row: the difference, its interval, McNemar per seed, the reading."""
    tests = "; ".join(f"{_p_value(t['p'])} ({t['a_only']}/{t['b_only']})" for t in c["tests"])
    interval = _interval(c["interval_points"], len(c["tests"]))
    return [f"{c['a']} vs {c['b']}", f"{c['diff_points']:+.2f}", interval, tests, c["reading"]]


def _interval(interval: list[float] | None, seeds: int) -> str:
    if interval is None:
        return "cannot be computed: no per-image records"
    one = " (one seed: test images only, z)" if seeds == 1 else ""
    return f"{interval[0]:+.2f} to {interval[1]:+.2f}{one}"


def _p_value(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-300 else "<1e-300"  # below what a float holds


def _extra_tables(costs: dict[str, Any]) -> str:
    """The tokens suite's attention microbenchmark and the timm suite's pretrained-route costs."""
    text = ""
    if "attention_cost" in costs:
        text += "\nAttention alone, one forward, batch 8, 4 heads of 16 dims (ms, median (min-max) of rounds):\n\n"
        text += table(
            ["tokens", "fused SDPA ms", "explicit softmax ms", "explicit / fused"],
            [
                [
                    str(r["tokens"]),
                    _speed(r["fused_ms"]),
                    _speed(r["explicit_ms"]),
                    f"{r['explicit_ms']['median'] / r['fused_ms']['median']:.1f}",
                ]
                for r in costs["attention_cost"]
            ],
        )
    if "pretrained_route" in costs:
        text += "\nThe pretrained route against the shipped architecture (inference, interleaved rounds):\n\n"
        text += table(
            ["model", "input", "params", "MFLOPs/img", "latency ms", "infer img/s (batch 16)"],
            [
                [
                    name,
                    r["input"],
                    f"{r['parameters']:,}",
                    str(r["mflops_per_image"]),
                    _speed(r["latency_ms"]),
                    _speed(r["images_per_s"]),
                ]
                for name, r in costs["pretrained_route"].items()
            ],
        )
    return text


def _mean_sd(value: dict[str, Any] | None, scale: float, digits: int = 2) -> str:
    if value is None:
        return ""
    sd = "—" if value["sd"] is None else f"{scale * value['sd']:.{digits}f}"  # one seed: no spread
    return f"{scale * value['mean']:.{digits}f} ± {sd}"


def _speed(value: dict[str, float] | None) -> str:
    if value is None:
        return ""
    return f"{value['median']:g} ({value['min']:g}-{value['max']:g})"
