"""The experiments' reports: a suite's runs aggregated and compared, written as JSON, CSV, plots and
the Markdown tables of docs/RESULTS.md, and those tables put into a document's table block.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from model.config import ConfigError
from training.markdown import table
from training.runs import finished_runs
from training.stats import CONFIDENCE, mcnemar, mean_sd, paired_interval, reading
from training.suites import SUITES, run_name


def collect(out: Path, suite_name: str, budget: dict[str, Any]) -> dict[str, Any]:
    """Every finished run of the suite, the per-variant summary and the paired comparisons."""
    suite = SUITES[suite_name]
    costs_file = out / "costs.json"
    costs = json.loads(costs_file.read_text()) if costs_file.is_file() else {}
    runs = finished_runs(out, suite, budget)
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
    """One variant's row: its seeds, the seed mean and sd of each score, its mean wall time, its costs."""
    row: dict[str, Any] = {"variant": variant, "seeds": [r["seed"] for r in runs]}
    for key in ("test_accuracy", "test_loss", "val_loss", "shuffled_patch_accuracy"):
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            mean, sd = mean_sd(values)
            # unrounded: the tables round once, when they print
            row[key] = {"mean": mean, "sd": sd, "n": len(values)}
    if runs:
        row["train_wall_s"] = round(sum(r["train_wall_s"] for r in runs) / len(runs), 1)
        logged = [e["images_per_s"] for r in runs for e in r.get("epochs", []) if "images_per_s" in e]
        if logged:  # what the runs' own logs say, on a machine shared as it then was
            row["train_log_images_per_s"] = round(sum(logged) / len(logged), 1)
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
    """Collect the suite's runs in ``out`` and write results.json, results.md, results.csv and the plots."""
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
    return text + _speed_check(results) + _extra_tables(results["costs"])


def _speed_check(results: dict[str, Any]) -> str:
    """For a suite that asks for it (:attr:`Suite.speeds_beside_logs`), measured at its own training
    batch: the benchmark's training speeds beside the runs' logs, each as a ratio to the first
    variant with as many tokens."""
    batch = results["costs"].get("train_batch")
    rows = [r for r in results["rows"] if "train_images_per_s" in r and "train_log_images_per_s" in r]
    if batch is None or not rows or not SUITES[results["suite"]].speeds_beside_logs:
        return ""
    first: dict[Any, dict[str, Any]] = {}
    cells = []
    for r in rows:
        ref = first.setdefault(r.get("tokens"), r)
        bench, logged = r["train_images_per_s"]["median"], r["train_log_images_per_s"]
        cells.append(
            [
                r["variant"],
                f"{bench:g}",
                f"{bench / ref['train_images_per_s']['median']:.2f}",
                f"{logged:g}",
                f"{logged / ref['train_log_images_per_s']:.2f}",
            ]
        )
    head = ["variant", f"benchmark img/s (batch {batch})", "ratio", "training logs img/s", "ratio"]
    note = (
        f"\nTraining speed, the benchmark (AdamW steps at the training batch of {batch}, median of the"
        " rounds) beside the runs' logs (mean over epochs and seeds); each ratio is to the first"
        " variant with as many tokens:\n\n"
    )
    return note + table(head, cells)


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


# --- a document's table block -----------------------------------------------------------------


def update_doc(doc: Path, name: str, tables: str | None) -> None:
    """Put ``tables`` between ``<!-- table:NAME -->`` and ``<!-- /table -->`` in the markdown file
    ``doc``; with ``tables`` None, only check that the block is there."""
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
    if tables is not None:
        doc.write_text(block.sub(lambda m: m.group(1) + tables.rstrip("\n") + "\n" + m.group(2), text, count=1))
