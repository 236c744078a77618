"""``python -m training trust``: calibrate a checkpoint and measure whether its answers can be trusted.

Fitted on validation data only (the 5,000 training images the run held out, validation draws of
the training kinds of non-digits, and staged validation digits):

1. the temperature that minimises the negative log-likelihood of the validation digits;
2. the digit score with the best AUROC between validation digits and validation non-digits;
3. the threshold below which 0.5% of the validation digits (MNIST and staged) fall.

Measured on data that played no part in any of it: MNIST test, staged test digits, new draws of
the training kinds, and the held-out kinds (never used for training or the threshold). With
``--write`` the calibration is stored in the checkpoint; the service applies it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model.calibration import SCORES, Calibration, Score, digit_scores
from model.checkpoint import LoadedCheckpoint, load_checkpoint, save_checkpoint
from training.data import Split, load_split, prepare_root, train_val_split
from training.engine import predict
from training.export import export_next_to
from training.markdown import table
from training.pictures import (
    COMMON_SYMBOLS,
    FIT_STAGINGS,
    HELD_OUT_KINDS,
    HELD_OUT_STAGINGS,
    TRAIN_KINDS,
    Picture,
    PictureSet,
    common_symbols,
    non_digits,
    picture_set,
    staged_digits,
)
from training.plots import plot_reliability
from training.stats import ECE_BINS, FeatureDistance, auroc, choose_threshold, fit_temperature, reliability

log = logging.getLogger(__name__)
DIGIT_FLAG_RATE = 0.005  # share of validation digits the threshold may flag
OPERATING_RATES = (0.0025, 0.005, 0.0075, 0.01, 0.02)  # the trade-off table: shares of validation digits flagged
FEATURE_FIT_IMAGES = 20_000  # training digits the feature-space alternative's class means are fitted on
SEEDS = {
    "val_nondigits": 1001,
    "test_nondigits": 1002,
    "held_out": 1003,
    "staged_val": 1004,
    "staged_test": 1005,
    "common_symbols": 1006,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, default=Path("checkpoints/vit-digits.safetensors"))
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--compare", type=Path, nargs="*", default=[], help="other checkpoints to score the same way")
    p.add_argument("--per-kind", type=int, default=500, help="non-digit pictures per kind and set")
    p.add_argument("--staged", type=int, default=2000, help="MNIST test digits to stage (and a tenth as many typed)")
    p.add_argument("--write", action="store_true", help="store the fitted calibration in the checkpoint")
    p.add_argument("--out-dir", type=Path, help="report folder (default: runs/trust/<checkpoint name>)")
    p.add_argument(
        "--from-records",
        type=Path,
        metavar="DIR",
        help="score nothing: recompute a report's figures from its folder's per-picture records and check them",
    )


# ---------------------------------------------------------------------------------------------
# the data


@dataclasses.dataclass(frozen=True)
class Scored:
    """A set's logits, labels (-1 for non-digits), kinds, and how many pictures were refused (no
    ink: the service answers 422 ``no_digit`` and gives no digit)."""

    logits: torch.Tensor
    labels: torch.Tensor
    kinds: np.ndarray
    refused: dict[str, int]
    features: torch.Tensor  # the head's input per picture, for the feature-space alternative


def scored(model: torch.nn.Module, split: Split, kinds: np.ndarray, refused: dict[str, int]) -> Scored:
    """Logits and the head's input (a hook on ``model.head``: ours and timm's ViT both have one)."""
    features: list[torch.Tensor] = []
    hook = model.get_submodule("head").register_forward_hook(
        lambda _module, inputs, _output: features.append(inputs[0].detach().float().cpu())
    )
    try:
        logits = predict(model, split, torch.device("cpu"))
    finally:
        hook.remove()
    return Scored(logits, split.labels, kinds, refused, torch.cat(features) if features else torch.empty(0, 0))


def score_set(ckpt: LoadedCheckpoint, pictures: PictureSet) -> Scored:
    split = Split(torch.from_numpy(pictures.images), torch.from_numpy(pictures.labels).long())
    return scored(ckpt.model, split, pictures.kinds, pictures.refused)


def trust_sets(args: argparse.Namespace, seed: int, val_size: int) -> tuple[Split, Split, Split, dict[str, PictureSet]]:
    """MNIST training, validation and test splits, and the generated picture sets."""
    root = prepare_root(args.data_dir)
    train = load_split(root, train=True)
    train, val = train_val_split(train, min(val_size, len(train) // 5), seed)  # // 5: as a --limit run does
    test = load_split(root, train=False)
    n = args.per_kind

    def stage(digits: Split, count: int, stagings: tuple[str, ...]) -> Callable[[int, int], list[Picture]]:
        images, labels = digits.images[:count].numpy(), digits.labels[:count].numpy()
        return lambda _, s: staged_digits(images, labels, s, count // 10, stagings)

    sets = {
        "val_nondigits": picture_set(
            "trust-val", lambda c, s: non_digits(TRAIN_KINDS, c, s), n, SEEDS["val_nondigits"]
        ),
        "test_nondigits": picture_set(
            "trust-test", lambda c, s: non_digits(TRAIN_KINDS, c, s), n, SEEDS["test_nondigits"]
        ),
        "held_out": picture_set("trust-heldout", lambda c, s: non_digits(HELD_OUT_KINDS, c, s), n, SEEDS["held_out"]),
        "staged_val": picture_set(
            f"trust-staged-val-s{seed}", stage(val, 1000, FIT_STAGINGS), 1000, SEEDS["staged_val"]
        ),
        "staged_test": picture_set(
            "trust-staged-test",
            stage(test, args.staged, FIT_STAGINGS + HELD_OUT_STAGINGS),
            args.staged,
            SEEDS["staged_test"],
        ),
        "common_symbols": picture_set("trust-common-symbols", common_symbols, n, SEEDS["common_symbols"]),
    }
    return train, val, test, sets


# ---------------------------------------------------------------------------------------------
# the report


def fit(val: Scored, staged_val: Scored, val_nondigits: Scored) -> Calibration:
    """Temperature on the validation digits; score and threshold on validation digits + non-digits.

    The threshold flags :data:`DIGIT_FLAG_RATE` of the validation digits, MNIST's and the staged
    ones pooled. (Flagging at most that share of each pool, the lower of the two quantiles, was
    measured too: the 1,100 staged validation digits put the threshold so low that only 76% of the
    held-out non-digits were flagged, against 91%, while the staged test digits flagged fell only
    from ~2.2% to 1.9%; a caller that acts on a non-digit pays more than one asked to send again.)
    """
    temperature = fit_temperature(val.logits, val.labels)
    digits = torch.cat([val.logits, staged_val.logits])
    aurocs = validation_aurocs(digits, val_nondigits.logits, temperature)
    score: Score = max(SCORES, key=lambda s: aurocs[s])
    threshold = digit_threshold(digits, score, temperature)
    fitted = {
        "temperature_on": f"{len(val.labels)} validation digits (MNIST training images held out of training)",
        "threshold_on": f"{len(val.labels)} MNIST and {len(staged_val.labels)} staged validation digits, "
        f"{DIGIT_FLAG_RATE:.1%} of them flagged",
        "score_chosen_by": "best AUROC, validation digits against validation non-digits of the training kinds",
        "validation_auroc": {s: round(a, 5) for s, a in aurocs.items()},
    }
    return Calibration(temperature=temperature, score=score, threshold=threshold, fitted=fitted)


def validation_aurocs(digits: torch.Tensor, nondigits: torch.Tensor, temperature: float) -> dict[Score, float]:
    """Each score's AUROC between the validation digits' and non-digits' logits."""
    return {s: auroc(digit_scores(digits, s, temperature), digit_scores(nondigits, s, temperature)) for s in SCORES}


def digit_threshold(digits: torch.Tensor, score: Score, temperature: float) -> float:
    """The threshold below which :data:`DIGIT_FLAG_RATE` of the validation digits' scores fall."""
    return choose_threshold(digit_scores(digits, score, temperature), DIGIT_FLAG_RATE)


def flagged(cal: Calibration, s: Scored) -> dict[str, Any]:
    """Share of a set called not-a-digit (refused pictures count as flagged), overall and per kind."""
    return flagged_share(cal.is_digit(cal.scores(s.logits)), s)


def flagged_share(is_digit: np.ndarray, s: Scored) -> dict[str, Any]:
    """:func:`flagged` for any verdict ``is_digit`` on the pictures of ``s``."""
    out: dict[str, Any] = {}
    for kind in sorted(set(s.kinds.tolist()) | set(s.refused)):
        members = s.kinds == kind
        refused = s.refused.get(kind, 0)
        total = int(members.sum()) + refused
        out[kind] = {"flagged": round((int((~is_digit[members]).sum()) + refused) / total, 5), "n": total}
    total = len(s.labels) + sum(s.refused.values())
    out["all"] = {"flagged": round((int((~is_digit).sum()) + sum(s.refused.values())) / total, 5), "n": total}
    return out


def accuracy_by_kind(cal: Calibration, s: Scored) -> dict[str, Any]:
    """Top-1 accuracy per staging (refused pictures count as wrong) and overall."""
    right = (s.logits.argmax(1) == s.labels).numpy()
    out = {}
    for kind in sorted(set(s.kinds.tolist()) | set(s.refused)):
        members = s.kinds == kind
        out[kind] = round(int(right[members].sum()) / (int(members.sum()) + s.refused.get(kind, 0)), 5)
    out["all"] = round(int(right.sum()) / (len(right) + sum(s.refused.values())), 5)
    return out


def detection(cal: Calibration, digits: torch.Tensor, nondigits: Scored) -> dict[str, Any]:
    """AUROC of the calibration's score, digits against ``nondigits``, overall and per kind."""
    pos = cal.scores(digits)
    neg = cal.scores(nondigits.logits)
    per_kind = {k: round(auroc(pos, neg[nondigits.kinds == k]), 5) for k in sorted(set(nondigits.kinds))}
    return {"all": round(auroc(pos, neg), 5), **per_kind}


def report_for(
    ckpt: LoadedCheckpoint, args: argparse.Namespace
) -> tuple[Calibration, dict[str, Any], dict[str, Scored]]:
    """Fit on validation data, then every figure of the trust report, for one checkpoint; also the
    scored sets the figures come from."""
    recipe = ckpt.meta.training.get("recipe", {})
    train, val, test, sets = trust_sets(args, int(recipe.get("seed", 0)), int(recipe.get("val_size", 5000)))
    fit_on = Split(train.images[:FEATURE_FIT_IMAGES], train.labels[:FEATURE_FIT_IMAGES])
    scored_sets = {
        "mnist_train": scored(ckpt.model, fit_on, np.full(len(fit_on), "mnist"), {}),
        "mnist_val": scored(ckpt.model, val, np.full(len(val), "mnist"), {}),
        "mnist_test": scored(ckpt.model, test, np.full(len(test), "mnist"), {}),
        **{name: score_set(ckpt, pictures) for name, pictures in sets.items()},
    }
    cal = fit(scored_sets["mnist_val"], scored_sets["staged_val"], scored_sets["val_nondigits"])
    return cal, {"checkpoint": str(ckpt.path), **figures(cal, scored_sets)}, scored_sets


def figures(cal: Calibration, scored_sets: dict[str, Scored]) -> dict[str, Any]:
    """Every figure of the report from the scored sets and the fitted calibration alone (without
    ``mnist_train``'s features, the Mahalanobis alternative is left out)."""
    mnist_test, staged = scored_sets["mnist_test"], scored_sets["staged_test"]
    test_digits = torch.cat([mnist_test.logits, staged.logits])
    uncalibrated = Calibration()
    return {
        "calibration": cal.to_json(),
        "mnist_test": {
            "accuracy": round(float((mnist_test.logits.argmax(1) == mnist_test.labels).float().mean()), 5),
            "nll": round(float(F.cross_entropy(mnist_test.logits / cal.temperature, mnist_test.labels)), 5),
            "ece_before": reliability(uncalibrated.probabilities(mnist_test.logits), mnist_test.labels)["ece"],
            **reliability(cal.probabilities(mnist_test.logits), mnist_test.labels),
            "flagged": flagged(cal, mnist_test)["all"]["flagged"],
        },
        "staged_test": {
            "accuracy": accuracy_by_kind(cal, staged),
            "ece_before": reliability(uncalibrated.probabilities(staged.logits), staged.labels)["ece"],
            **reliability(cal.probabilities(staged.logits), staged.labels),
            "flagged": flagged(cal, staged),
        },
        "nondigits_training_kinds": flagged(cal, scored_sets["test_nondigits"]),
        "nondigits_held_out": flagged(cal, scored_sets["held_out"]),
        "common_symbols": flagged(cal, scored_sets["common_symbols"])["all"],
        "auroc_held_out": detection(cal, test_digits, scored_sets["held_out"]),
        "auroc_training_kinds": detection(cal, test_digits, scored_sets["test_nondigits"])["all"],
        "alternatives": alternatives(cal, scored_sets),
        "operating_points": operating_points(cal, scored_sets["mnist_val"], mnist_test, scored_sets),
        "best_possible": best_possible(cal, mnist_test, scored_sets),
    }


# ---------------------------------------------------------------------------------------------
# the per-picture records: every figure above can be recomputed from them and the calibration

RECORDS = "records.npz"


def write_records(path: Path, scored_sets: dict[str, Scored]) -> None:
    """Each set's logits, labels, kinds and refused counts (not ``mnist_train``: its logits are
    used for nothing but its features, which are too big to keep)."""
    arrays: dict[str, Any] = {}  # Any: numpy's stubs type savez_compressed's keywords as its bool flag
    refused = {}
    for name, s in scored_sets.items():
        if name == "mnist_train":
            continue
        arrays[f"{name}.logits"] = s.logits.numpy().astype(np.float32)
        arrays[f"{name}.labels"] = s.labels.numpy().astype(np.int16)
        arrays[f"{name}.kinds"] = s.kinds.astype(str)
        refused[name] = s.refused
    arrays["refused"] = np.array(json.dumps(refused, sort_keys=True))
    np.savez_compressed(path, **arrays)


def read_records(path: Path) -> dict[str, Scored]:
    with np.load(path) as data:
        refused = json.loads(str(data["refused"]))
        return {
            name: Scored(
                torch.from_numpy(data[f"{name}.logits"]),
                torch.from_numpy(data[f"{name}.labels"].astype(np.int64)),
                data[f"{name}.kinds"],
                counts,
                torch.empty(0, 0),
            )
            for name, counts in refused.items()
        }


def alternatives(cal: Calibration, scored_sets: dict[str, Scored]) -> dict[str, Any]:
    """Every score, each with its own validation-chosen threshold, on the held-out kinds: the three
    logit scores, and the Mahalanobis distance in feature space (fitted on ``mnist_train``, where
    its features are at hand)."""
    digits_val = [scored_sets["mnist_val"], scored_sets["staged_val"]]
    digits_test = [scored_sets["mnist_test"], scored_sets["staged_test"]]
    held_out = scored_sets["held_out"]

    def logit_rule(score: Score) -> Callable[[Scored], np.ndarray]:
        return lambda s: digit_scores(s.logits, score, cal.temperature)

    rules: dict[str, Callable[[Scored], np.ndarray]] = {score: logit_rule(score) for score in SCORES}
    train = scored_sets.get("mnist_train")
    if train is not None and train.features.numel():
        distance = FeatureDistance.fit(train.features, train.labels)
        rules["mahalanobis"] = lambda s: distance.scores(s.features)
    out: dict[str, Any] = {}
    for name, rule in rules.items():
        threshold = choose_threshold(np.concatenate([rule(s) for s in digits_val]), DIGIT_FLAG_RATE)
        test_scores = np.concatenate([rule(s) for s in digits_test])
        held_scores = rule(held_out)
        out[name] = {
            "auroc_held_out": round(auroc(test_scores, held_scores), 5),
            "held_out_flagged": flagged_share(held_scores >= threshold, held_out)["all"]["flagged"],
            "test_digits_flagged": round(float((test_scores < threshold).mean()), 5),
        }
    return out


def operating_points(
    cal: Calibration, val: Scored, test: Scored, scored_sets: dict[str, Scored]
) -> list[dict[str, Any]]:
    """What other thresholds on the same score would do: for each share of the validation digits
    flagged (:data:`OPERATING_RATES`), the threshold and the shares of MNIST test digits, staged test
    digits and held-out non-digits flagged. A caller that can afford to ask more senders again can
    apply a stricter threshold to ``digit_score`` itself; the service's is the one at
    :data:`DIGIT_FLAG_RATE`."""
    digits_val = np.concatenate([cal.scores(s.logits) for s in (val, scored_sets["staged_val"])])
    held_out = scored_sets["held_out"]
    points = []

    def flags(s: Scored, threshold: float) -> float:
        return round(float((cal.scores(s.logits) < threshold).mean()), 5)

    for rate in OPERATING_RATES:
        threshold = choose_threshold(digits_val, rate)
        points.append(
            {
                "validation_digits_flagged": rate,
                "threshold": round(threshold, 5),
                "mnist_test_flagged": flags(test, threshold),
                "staged_test_flagged": flags(scored_sets["staged_test"], threshold),
                "held_out_flagged": flagged_share(cal.scores(held_out.logits) >= threshold, held_out)["all"]["flagged"],
            }
        )
    return points


def best_possible(cal: Calibration, test: Scored, scored_sets: dict[str, Scored], rate: float = 0.01) -> dict[str, Any]:
    """A bound, not a setting: the highest threshold that flags at most ``rate`` of the MNIST test
    digits and of the staged test digits, picked on those test sets themselves, and the share of
    the held-out kinds it flags. No threshold chosen honestly (on validation data) can do better
    on both."""
    limits = []
    for s in (test, scored_sets["staged_test"]):
        ordered = np.sort(cal.scores(s.logits))
        limits.append(float(ordered[int(np.floor(rate * len(ordered)))]))  # the k+1-th lowest: k flagged
    threshold = min(limits)
    held_out = scored_sets["held_out"]
    is_digit = cal.scores(held_out.logits) >= threshold
    return {
        "digits_flagged_at_most": rate,
        "threshold": round(threshold, 5),
        "held_out_flagged": flagged_share(is_digit, held_out)["all"]["flagged"],
    }


# how far a recomputed figure may be from the stored one: its last rounded digit, which another CPU
# or torch build may flip; the temperature is an optimiser's result, so it gets more room
FIGURE_TOLERANCE = 2e-5
TEMPERATURE_TOLERANCE = 1e-3


def recheck(folder: Path) -> list[str]:
    """The report's calibration checked and its figures recomputed, from ``folder``'s records: the
    names of those that differ from what its ``report.json`` says (none, if the records are the
    report's). The temperature is fitted again; the stored score must be among the best by
    validation AUROC (scores within a rounding of each other are a tie, which the thread count can
    break either way); the threshold is recomputed for that score and temperature."""
    stored = json.loads((folder / "report.json").read_text())
    scored_sets = read_records(folder / RECORDS)
    calibration = stored["calibration"]
    cal = Calibration.from_json(calibration)
    val = scored_sets["mnist_val"]
    digits = torch.cat([val.logits, scored_sets["staged_val"].logits])
    nondigits = scored_sets["val_nondigits"].logits
    aurocs = validation_aurocs(digits, nondigits, cal.temperature)
    threshold = digit_threshold(digits, cal.score, cal.temperature)
    differ = []
    if not (
        _close(fit_temperature(val.logits, val.labels), cal.temperature, TEMPERATURE_TOLERANCE)
        and aurocs[cal.score] >= max(aurocs.values()) - FIGURE_TOLERANCE
        and _close(aurocs, calibration["fitted"]["validation_auroc"])
        and _close(threshold, cal.threshold)
    ):
        differ.append("calibration")
    again = json.loads(json.dumps(figures(cal, scored_sets)))
    stored["alternatives"] = {k: v for k, v in stored["alternatives"].items() if k in again["alternatives"]}
    return differ + [key for key in again if key != "calibration" and not _close(again[key], stored.get(key))]


def _close(a: Any, b: Any, tolerance: float = FIGURE_TOLERANCE) -> bool:
    """Equal, but for floats anywhere inside, which may differ by ``tolerance``."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tolerance) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tolerance) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and abs(a - b) <= tolerance
    return bool(a == b)


def run_trust(args: argparse.Namespace) -> dict[str, Any]:
    if args.from_records:
        differ = recheck(args.from_records)
        print(f"{args.from_records}: {', '.join(differ) + ' differ' if differ else 'every figure recomputed equal'}")
        if differ:
            raise SystemExit(1)
        return json.loads((args.from_records / "report.json").read_text())
    ckpt = load_checkpoint(args.checkpoint)
    out_dir = args.out_dir or Path("runs/trust") / args.checkpoint.stem
    out_dir.mkdir(parents=True, exist_ok=True)
    cal, report, scored_sets = report_for(ckpt, args)
    report["drawn_with"] = {"seeds": SEEDS, "per_kind": args.per_kind, "staged": args.staged}
    report["compared"] = {str(p): report_for(load_checkpoint(p), args)[1] for p in args.compare}
    write_records(out_dir / RECORDS, scored_sets)
    plot_reliability(
        {
            f"MNIST test (ECE {report['mnist_test']['ece']:.4f})": report["mnist_test"]["curve"],
            f"staged test digits (ECE {report['staged_test']['ece']:.4f})": report["staged_test"]["curve"],
        },
        out_dir / "reliability.png",
    )
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    (out_dir / "trust.md").write_text(markdown(report))
    if args.write:
        save_checkpoint(args.checkpoint, ckpt.model, dataclasses.replace(ckpt.meta, calibration=cal))
        export_next_to(args.checkpoint)  # the export carries the calibration too
        log.info("calibration written to %s", args.checkpoint)
    print(markdown(report))
    print(f"report: {out_dir}/report.json, {out_dir}/trust.md, {out_dir}/reliability.png, {out_dir}/{RECORDS}")
    return report


def markdown(report: dict[str, Any]) -> str:
    """The trust figures as Markdown tables (for the model card and the README)."""
    cal, staged = report["calibration"], report["staged_test"]
    held, train_kinds = report["nondigits_held_out"], report["nondigits_training_kinds"]
    blocks = [
        f"Calibration: temperature {cal['temperature']:.4f}; not-a-digit score `{cal['score']}`, "
        f"threshold {cal['threshold']:.4f} (is_digit = score >= threshold).\n",
        table(["measure", "value"], _measures(report)),
        table(
            ["held-out kind", "flagged", "AUROC"],
            [[k, _pct(v["flagged"]), f"{report['auroc_held_out'][k]:.4f}"] for k, v in held.items() if k != "all"],
        ),
        table(
            ["training kind (new draws)", "flagged"],
            [[k, _pct(v["flagged"])] for k, v in train_kinds.items() if k != "all"],
        ),
        table(
            ["staged digits", "accuracy", "flagged", "threshold fitted on it"],
            [
                [
                    k,
                    _pct(staged["accuracy"][k]),
                    _pct(staged["flagged"][k]["flagged"]),
                    "no (held out)" if k in HELD_OUT_STAGINGS else "yes" if k in FIT_STAGINGS else "no",
                ]
                for k in staged["accuracy"]
                if k != "all"
            ],
        ),
        table(
            ["score (own threshold, as above)", "AUROC held-out", "held-out flagged", "test digits flagged"],
            [
                [
                    f"{name}: `{score}`",
                    f"{a['auroc_held_out']:.4f}",
                    _pct(a["held_out_flagged"]),
                    _pct(a["test_digits_flagged"]),
                ]
                for name, rep in [("this model", report), *report.get("compared", {}).items()]
                for score, a in rep["alternatives"].items()
            ],
        ),
        f"Other thresholds on `{cal['score']}` (the service's flags {_pct(DIGIT_FLAG_RATE)} of the validation "
        "digits):\n",
        table(
            [
                "validation digits flagged",
                "threshold",
                "MNIST test flagged",
                "staged test flagged",
                "held-out kinds flagged",
            ],
            [
                [
                    _pct(o["validation_digits_flagged"]),
                    f"{o['threshold']:.4f}",
                    _pct(o["mnist_test_flagged"]),
                    _pct(o["staged_test_flagged"]),
                    _pct(o["held_out_flagged"]),
                ]
                for o in report.get("operating_points", [])
            ],
        ),
    ]
    if best := report.get("best_possible"):
        blocks.append(
            f"A bound, picked on the test sets themselves: the highest threshold that flags at most "
            f"{_pct(best['digits_flagged_at_most'])} of the MNIST and of the staged test digits "
            f"({best['threshold']:.4f}) flags {_pct(best['held_out_flagged'])} of the held-out kinds.\n"
        )
    return "\n".join(blocks)


def _measures(report: dict[str, Any]) -> list[list[str]]:
    """The rows of the report's first table: one figure each."""
    test, staged = report["mnist_test"], report["staged_test"]
    held, train_kinds = report["nondigits_held_out"], report["nondigits_training_kinds"]
    rows = [
        ["MNIST test accuracy", _pct(test["accuracy"])],
        [
            f"expected calibration error, MNIST test ({ECE_BINS} bins)",
            f"{test['ece']:.4f} (uncalibrated {test['ece_before']:.4f})",
        ],
        [
            "expected calibration error, staged test digits",
            f"{staged['ece']:.4f} (uncalibrated {staged['ece_before']:.4f})",
        ],
        ["accuracy on staged test digits", _pct(staged["accuracy"]["all"])],
        ["real digits flagged not-a-digit: MNIST test", _pct(test["flagged"])],
        ["real digits flagged not-a-digit: staged test digits", _pct(staged["flagged"]["all"]["flagged"])],
        ["non-digits flagged, held-out kinds", f"{_pct(held['all']['flagged'])} ({held['all']['n']} pictures)"],
        ["non-digits flagged, training kinds (new draws)", _pct(train_kinds["all"]["flagged"])],
        ["AUROC digits vs non-digits, held-out kinds", f"{report['auroc_held_out']['all']:.4f}"],
    ]
    if "common_symbols" in report:
        rows.append([f"common symbols ({COMMON_SYMBOLS}) flagged", _pct(report["common_symbols"]["flagged"])])
    return rows


def _pct(share: float) -> str:
    return f"{100 * share:.2f}%"
