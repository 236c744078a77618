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

This module is the command; the concepts live beside it: ``training/suites.py`` (the suites, the
base they vary, their costs), ``training/runs.py`` (the run store: records, reuse, resuming) and
``training/reports.py`` (aggregates, comparisons, tables and the document's blocks).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from model.config import ConfigError
from training.reports import update_doc, write_results
from training.runs import QUICK_DIR, RESULTS_DIR, budget_tag, train_suite
from training.suites import BASE, SUITES, measure_costs

log = logging.getLogger(__name__)

QUICK = {"epochs": 1, "limit": 3000, "val_size": 300}  # --quick's budget
DEFAULT_SEEDS = (0, 1, 2)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``experiments`` command's arguments."""
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
    """Train what the suite lacks, measure its costs, write its tables (as the flags ask); returns
    the results that ``results.json`` holds, with their Markdown."""
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
        train_suite(
            suite,
            base,
            out,
            budget,
            args.seeds,
            args.variants,
            after_run=lambda: write_results(out, args.suite, budget),  # the tables fill in as it goes
        )
    costs_file = out / "costs.json"
    measure = args.costs_only or (not args.no_costs and (args.remeasure or not costs_file.is_file()))
    if measure and not args.tables_only:
        costs_file.write_text(json.dumps(measure_costs(suite, base), indent=2))
    results = write_results(out, args.suite, budget)
    if args.doc is not None and results["rows"]:
        update_doc(args.doc, out.name, results["markdown"])
        log.info("suite %s: its table in %s rewritten", args.suite, args.doc)
    log.info("suite %s: %.1f min in this invocation", args.suite, (time.perf_counter() - started) / 60)
    print(results["markdown"], end="")
    return results
