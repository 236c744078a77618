"""The statistics of the training reports.

- Comparing trained variants (the experiments): seed mean and spread, McNemar's paired test, and
  the interval and three-class reading of a paired difference (a t-interval over seeds that also
  counts the sampling noise of the shared test set).
- Calibration and detection (the trust report): the temperature that fits a set's labels, the
  expected calibration error with its reliability curve, AUROC, the threshold that flags a given
  share, and the Mahalanobis distance to the nearest class mean in feature space.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ALPHA = 0.05
MIN_SEEDS = 3  # fewer seeds make no ranking: a paired test sees two networks, not two designs
CONFIDENCE = 0.95  # of the interval of a paired difference
EQUIVALENCE_MARGIN = 0.2  # accuracy points: an interval inside [-margin, +margin] reads "equivalent"
ECE_BINS = 15  # equal-width confidence bins of the expected calibration error


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


def t_quantile(probability: float, df: int) -> float:
    """The ``probability`` quantile (> 0.5) of Student's t with ``df`` (a positive integer) degrees
    of freedom: the closed-form distribution function of an integer df (Abramowitz and Stegun
    26.7.3-4), inverted by bisection to well below the printed precision."""
    if df < 1 or not 0.5 < probability < 1:
        raise ValueError(f"need df >= 1 and 0.5 < probability < 1; got df={df}, probability={probability}")
    central = 2 * probability - 1  # P(|T| <= t)

    def inside(t: float) -> float:
        theta = math.atan(t / math.sqrt(df))
        c2 = math.cos(theta) ** 2
        if df % 2:  # odd: (2/pi) * (theta + sin cos (1 + 2/3 cos^2 + (2*4)/(3*5) cos^4 + ...))
            term, total = 1.0, 1.0 if df > 1 else 0.0
            for k in range(1, (df - 1) // 2):
                term *= c2 * (2 * k) / (2 * k + 1)
                total += term
            return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
        term, total = 1.0, 1.0  # even: sin (1 + 1/2 cos^2 + (1*3)/(2*4) cos^4 + ...)
        for k in range(1, df // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        return math.sin(theta) * total

    low, high = 0.0, 1.0
    while inside(high) < central:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if inside(mid) < central else (low, mid)
        if high - low < 1e-12:
            break
    return (low + high) / 2


def difference_parts(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float, float]:
    """The mean accuracy difference A - B over seeds in points, and the two parts of its variance
    (points squared): between seeds, and from the sampling of the test images.

    ``pairs`` holds one (A, B) pair of per-image correctness records per seed, every seed on the
    same test images in the same order (the test set is one fixed set, shared by all seeds). With
    d_s = 100 * (accuracy of A - accuracy of B) at seed s and n seeds:

    - the mean is d̄ = (1/n) Σ_s d_s;
    - the seeds' part is s² / n, s² the sample variance of the d_s (0 for one seed: not measured);
    - the test images' part is v_test, the variance of d̄ were the N test images drawn again from
      the same population of digits, the same images for A and B and for every seed. d̄ is the
      mean over images of x_i = (100/n) Σ_s (a_si - b_si), so v_test = var(x) / N, var the sample
      variance over the N images (divisor N - 1). This is, computed exactly and times N / (N - 1),
      the variance of a bootstrap over test images alone.
    """
    if not pairs:
        raise ValueError("a paired difference needs at least one seed")
    for a, b in pairs:
        discordant(a, b)  # the same images for A and B
    if len({len(a) for a, _ in pairs}) != 1 or len(pairs[0][0]) < 2:
        raise ValueError("every seed must be scored on the same test images, at least two of them")
    per_image = 100 * np.mean([a.astype(float) - b.astype(float) for a, b in pairs], axis=0)
    per_seed = 100 * np.array([a.mean() - b.mean() for a, b in pairs], dtype=float)
    seed_part = float(per_seed.var(ddof=1)) / len(pairs) if len(pairs) > 1 else 0.0
    test_part = float(per_image.var(ddof=1)) / len(per_image)
    return float(per_seed.mean()), seed_part, test_part


def paired_interval(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]], confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """The interval of the mean accuracy difference A - B over seeds, in points, at ``confidence``:

        d̄ ± t_{(1+confidence)/2, n-1} * sqrt(s² / n + v_test)

    with d̄, s² / n and v_test from :func:`difference_parts`. Both sources of noise count: which
    seeds were run (the sample variance of the n per-seed differences, with Student's t on n - 1
    degrees of freedom, wide for 3 seeds: 4.30) and which test images the one shared test set
    happens to hold (v_test, the same for every seed, so it is not averaged away by more seeds).
    The two parts overlap (the images that one seed gets right and another wrong add to both), so
    their sum errs wide: the interval is conservative. One seed measures no spread between seeds:
    its interval is d̄ ± z * sqrt(v_test), the test images' noise alone, and the tables mark it
    "one seed".

    Not a bootstrap over seeds: resampling 3 seeds only reproduces the spread among those 3, so its
    intervals end near the smallest and largest seed differences and can rank a pair with one seed
    the other way. The t quantile is what pays for estimating the seeds' spread from so few.
    """
    mean, seed_part, test_part = difference_parts(pairs)
    n = len(pairs)
    tail = (1 + confidence) / 2
    quantile = t_quantile(tail, n - 1) if n > 1 else statistics.NormalDist().inv_cdf(tail)
    half = quantile * math.sqrt(seed_part + test_part)
    return mean - half, mean + half


def reading(a: str, b: str, interval: tuple[float, float], seeds: int, margin: float = EQUIVALENCE_MARGIN) -> str:
    """The claim an interval of A - B (points) supports, in one of three classes.

    "ranked" when it excludes 0 (saying which of the two is ahead), "equivalent" when it lies
    inside [-``margin``, +``margin``], and "inconclusive" when neither. An interval that excludes 0
    and also lies inside the margin is ranked: the difference is real, if small. Fewer than
    :data:`MIN_SEEDS` seeds give no reading: one seed measures no spread between seeds, and two
    measure it too poorly to rank two designs.
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


# --- calibration and detection (the trust report) ------------------------------------------------


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature minimising the NLL of ``labels`` (fitted as log T, so T stays positive)."""
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def reliability(probs: torch.Tensor | np.ndarray, labels: torch.Tensor, bins: int = ECE_BINS) -> dict[str, Any]:
    """Expected calibration error over ``bins`` equal-width bins of the top probability, and the
    per-bin mean confidence, accuracy and count (for the reliability diagram)."""
    confidence, predicted = torch.as_tensor(probs).max(dim=1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    index = torch.bucketize(confidence, edges[1:-1], right=True)  # bin i holds (edge i, edge i+1]
    ece = 0.0
    curve: dict[str, list[float]] = {"confidence": [], "accuracy": [], "count": []}
    for b in range(bins):
        members = index == b
        n = int(members.sum())
        if n:
            conf, acc = float(confidence[members].mean()), float(correct[members].mean())
            ece += n / len(labels) * abs(acc - conf)
            curve["confidence"].append(round(conf, 5))
            curve["accuracy"].append(round(acc, 5))
            curve["count"].append(n)
    return {"ece": round(ece, 5), "curve": curve}


def auroc(positives: torch.Tensor | np.ndarray, negatives: torch.Tensor | np.ndarray) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random negative
    (ties count half), by the Mann-Whitney rank sum."""
    scores = torch.cat([torch.as_tensor(positives), torch.as_tensor(negatives)]).double()
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.double)
    for value in scores.unique()[torch.unique(scores, return_counts=True)[1] > 1]:  # average tied ranks
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    n_pos, n_neg = len(positives), len(negatives)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclasses.dataclass(frozen=True)
class FeatureDistance:
    """The alternative in feature space: the Mahalanobis distance from the head's input (the pooled
    class token) to the nearest class mean, with one covariance shared by the classes (Lee et al.
    2018), fitted on training digits. Its digit score is minus the squared distance."""

    means: torch.Tensor  # (classes, dim)
    precision: torch.Tensor  # (dim, dim)

    @classmethod
    def fit(cls, features: torch.Tensor, labels: torch.Tensor) -> FeatureDistance:
        x = features.double()
        classes = labels.unique()  # those present: a class without images has no mean
        means = torch.stack([x[labels == c].mean(0) for c in classes])
        centred = x - means[torch.searchsorted(classes, labels)]
        covariance = centred.T @ centred / len(x)
        return cls(means, torch.linalg.pinv(covariance, hermitian=True))

    def scores(self, features: torch.Tensor) -> np.ndarray:
        d = features.double()[:, None, :] - self.means[None]  # (N, classes, dim)
        squared = torch.einsum("ncd,de,nce->nc", d, self.precision, d)
        return (-squared.min(dim=1).values).float().numpy()


def choose_threshold(scores: torch.Tensor | np.ndarray, rate: float) -> float:
    """The score below which a share ``rate`` of ``scores`` falls (their ``rate`` quantile)."""
    return float(torch.quantile(torch.as_tensor(scores).double(), rate))
