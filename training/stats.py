"""Statistics for comparing trained variants: seed mean and spread, McNemar's paired test."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

ALPHA = 0.05
MIN_SEEDS = 3  # fewer seeds make no ranking: a paired test sees two networks, not two designs


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value: no spread measured)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float | int]:
    """McNemar's exact test on paired per-image correctness of two models on one test set.

    Only the discordant images count: ``a_only`` right by A and wrong by B, ``b_only`` the other
    way. Under "equally accurate" each discordant image is a fair coin, so the two-sided p-value is
    the exact binomial tail (computed with exact fractions: no normal approximation).
    """
    if correct_a.shape != correct_b.shape:
        raise ValueError(f"paired test needs the same images; got {correct_a.shape} and {correct_b.shape}")
    a_only = int(np.sum(correct_a & ~correct_b))
    b_only = int(np.sum(~correct_a & correct_b))
    n = a_only + b_only
    tail = sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1))
    p = min(1.0, float(2 * Fraction(tail, 2**n))) if n else 1.0
    return {"a_only": a_only, "b_only": b_only, "p": p}


def verdict(a: str, b: str, diff_points: float, tests: Sequence[dict[str, float | int]]) -> str:
    """A claim a reader can rely on: "A > B" only when, over at least :data:`MIN_SEEDS` seeds,
    every seed's paired test rejects "equal" at ``ALPHA`` with A ahead; "A < B" likewise;
    otherwise "no measurable difference".

    McNemar's test compares two trained networks on one test set; it does not see how much a
    design varies from seed to seed. Asking every seed to agree is what makes it a claim about
    the designs, which is why fewer seeds give no ranking at all.
    """
    if len(tests) < MIN_SEEDS:
        return f"{len(tests)} of {MIN_SEEDS} seeds run: not a ranking yet"
    ahead = [t for t in tests if float(t["p"]) < ALPHA and int(t["a_only"]) > int(t["b_only"])]
    behind = [t for t in tests if float(t["p"]) < ALPHA and int(t["a_only"]) < int(t["b_only"])]
    if len(ahead) == len(tests) and diff_points > 0:
        return f"{a} > {b}"
    if len(behind) == len(tests) and diff_points < 0:
        return f"{a} < {b}"
    return "no measurable difference"
