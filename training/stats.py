"""Statistics for comparing trained variants: seed mean and spread, McNemar's paired test, and the
interval and three-class reading of a paired difference (a bootstrap over seeds and test images)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

ALPHA = 0.05
MIN_SEEDS = 3  # fewer seeds make no ranking: a paired test sees two networks, not two designs
CONFIDENCE = 0.95  # of the interval of a paired difference
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # every interval is drawn from its own generator with this seed: tables are reproducible
EQUIVALENCE_MARGIN = 0.2  # accuracy points: an interval inside [-margin, +margin] reads "equivalent"


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value: no spread measured)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def discordant(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int, int]:
    """Images only A gets right, images only B gets right, and all the images, of one paired test set."""
    if correct_a.shape != correct_b.shape or correct_a.ndim != 1:
        raise ValueError(f"paired records need the same images; got {correct_a.shape} and {correct_b.shape}")
    a = correct_a.astype(bool)
    b = correct_b.astype(bool)
    return int(np.sum(a & ~b)), int(np.sum(~a & b)), len(a)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float | int]:
    """McNemar's exact test on paired per-image correctness of two models on one test set.

    Only the discordant images count: ``a_only`` right by A and wrong by B, ``b_only`` the other
    way. Under "equally accurate" each discordant image is a fair coin, so the two-sided p-value is
    the exact binomial tail (computed with exact fractions: no normal approximation).
    """
    a_only, b_only, _ = discordant(correct_a, correct_b)
    n = a_only + b_only
    tail = sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1))
    p = min(1.0, float(2 * Fraction(tail, 2**n))) if n else 1.0
    return {"a_only": a_only, "b_only": b_only, "p": p}


def bootstrap_differences(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> np.ndarray:
    """Mean accuracy differences A - B in points, one per resample of a hierarchical bootstrap.

    ``pairs`` holds one (A, B) pair of per-image correctness records per seed, both on that seed's
    test images. Each resample draws as many seeds as there are, with replacement, and within every
    drawn seed as many test images as it has, with replacement and jointly for A and B (an image
    drawn counts for both), then averages the drawn seeds' differences. An image drawn adds +1 to
    the count of A's right answers minus B's when only A gets it right, -1 when only B does and 0
    otherwise, so a seed's resampled difference is drawn directly from the multinomial counts of
    those three kinds of image: the same distribution as drawing image indices, without them.
    """
    if not pairs:
        raise ValueError("a paired bootstrap needs at least one seed")
    counts = [discordant(a, b) for a, b in pairs]
    if any(n == 0 for _, _, n in counts):
        raise ValueError("a paired bootstrap needs test images in every seed")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(counts), size=(resamples, len(counts)))
    differences = np.empty((resamples, len(counts)))
    for index, (a_only, b_only, n) in enumerate(counts):
        draws = rng.multinomial(n, [a_only / n, b_only / n, (n - a_only - b_only) / n], size=picks.shape)
        chosen = picks == index
        differences[chosen] = (draws[..., 0] - draws[..., 1])[chosen] / n
    return 100 * differences.mean(axis=1)


def paired_interval(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """The percentile interval of :func:`bootstrap_differences` at ``confidence``, in points."""
    tail = (1 - confidence) / 2
    low, high = np.quantile(bootstrap_differences(pairs, resamples, seed), [tail, 1 - tail])
    return float(low), float(high)


def reading(a: str, b: str, interval: tuple[float, float], seeds: int, margin: float = EQUIVALENCE_MARGIN) -> str:
    """The claim an interval of A - B (points) supports, in one of three classes.

    "ranked" when it excludes 0 (saying which of the two is ahead), "equivalent" when it lies
    inside [-``margin``, +``margin``], and "inconclusive" when neither. An interval that excludes 0
    and also lies inside the margin is ranked: the difference is real, if small. Fewer than
    :data:`MIN_SEEDS` seeds give no reading: the seeds' share of the interval rests on too few.
    """
    if seeds < MIN_SEEDS:
        return f"{seeds} of {MIN_SEEDS} seeds run: no reading yet"
    low, high = interval
    if low > 0:
        return f"ranked: {a} > {b}"
    if high < 0:
        return f"ranked: {a} < {b}"
    if -margin <= low and high <= margin:
        return f"equivalent within ±{margin:g} points"
    return "inconclusive"
