import math
import statistics
from fractions import Fraction

import numpy as np
import pytest
import torch

from training.stats import (
    EQUIVALENCE_MARGIN,
    MIN_SEEDS,
    FeatureDistance,
    auroc,
    choose_threshold,
    difference_parts,
    discordant,
    fit_temperature,
    paired_interval,
    reading,
    reliability,
    t_quantile,
)


def _records(rng, n, accuracy_b, a_only, b_only):
    """A pair of correctness records on ``n`` images: B right on a share ``accuracy_b`` of them,
    A right on the same images but for ``b_only`` it misses and ``a_only`` it gets where B does not."""
    b = rng.random(n) < accuracy_b
    a = b.copy()
    right, wrong = np.flatnonzero(b), np.flatnonzero(~b)
    a[rng.choice(right, b_only, replace=False)] = False
    a[rng.choice(wrong, a_only, replace=False)] = True
    return a, b


def test_the_interval_matches_a_hand_computation():
    # 3 seeds of the same 4 test images; A - B per seed: 25, 25 and 0 points
    pairs = [
        (np.array([1, 1, 0, 1], bool), np.array([1, 0, 0, 1], bool)),
        (np.array([1, 0, 1, 1], bool), np.array([0, 0, 1, 1], bool)),
        (np.array([0, 1, 1, 1], bool), np.array([1, 1, 1, 0], bool)),
    ]
    mean = Fraction(50, 3)
    # seeds: sample variance of (25, 25, 0) is 625/3, over n = 3
    seed_part = sum((d - mean) ** 2 for d in (25, 25, 0)) / 2 / 3
    assert seed_part == Fraction(625, 9)
    # images: the seed mean of each image's difference is 100/3 * (0, 1, 0, 1); its sample
    # variance (divisor 3) over N = 4 images
    per_image = [Fraction(100, 3) * k for k in (0, 1, 0, 1)]
    test_part = sum((x - mean) ** 2 for x in per_image) / 3 / 4
    assert test_part == Fraction(2500, 27)
    got = difference_parts(pairs)
    assert got == pytest.approx((float(mean), float(seed_part), float(test_part)), rel=1e-12)
    half = 4.302652729749 * math.sqrt(seed_part + test_part)  # t at 0.975 with 2 degrees of freedom
    assert paired_interval(pairs) == pytest.approx((float(mean) - half, float(mean) + half), rel=1e-9)
    # one seed: no spread between seeds is measured, so z and the test images alone
    # (25 points; the image differences 0, 100, 0, 0 have sample variance 2500, over 4 images)
    z = statistics.NormalDist().inv_cdf(0.975)
    assert difference_parts(pairs[:1]) == pytest.approx((25.0, 0.0, 625.0))
    assert paired_interval(pairs[:1]) == pytest.approx((25 - z * 25, 25 + z * 25))


def test_t_quantiles_match_the_tables():
    for df, table in ((1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (10, 2.2281), (30, 2.0423)):
        assert t_quantile(0.975, df) == pytest.approx(table, abs=1e-4)
    assert t_quantile(0.95, 2) == pytest.approx(2.9200, abs=1e-4)
    with pytest.raises(ValueError):
        t_quantile(0.975, 0)


def test_the_test_image_part_is_the_variance_of_a_bootstrap_over_images():
    rng = np.random.default_rng(5)
    pairs = [_records(rng, 300, 0.8, a_only, b_only) for a_only, b_only in ((20, 8), (12, 15), (30, 4))]
    _, _, test_part = difference_parts(pairs)
    draws = rng.integers(0, 300, size=(20_000, 300))  # the same images for A, B and every seed
    means = np.mean([100 * (a[draws].mean(axis=1) - b[draws].mean(axis=1)) for a, b in pairs], axis=0)
    assert test_part * 299 / 300 == pytest.approx(means.var(), rel=0.05)


def test_a_clear_gap_is_ranked_with_the_leader_named():
    rng = np.random.default_rng(1)
    pairs = [_records(rng, 10_000, 0.95, 300, 60) for _ in range(3)]
    low, high = paired_interval(pairs)
    assert 1.5 < low < 2.4 < high < 3.3  # 240 net images of 10,000 in every seed: +2.4 points
    assert reading("conv", "linear", (low, high), 3) == "ranked: conv > linear"
    assert reading("linear", "conv", (-high, -low), 3) == "ranked: linear < conv"


def test_identical_records_are_equivalent():
    rng = np.random.default_rng(2)
    pairs = [(c, c.copy()) for c in (rng.random(10_000) < 0.98 for _ in range(3))]
    assert paired_interval(pairs) == (0.0, 0.0)
    assert reading("A", "B", paired_interval(pairs), 3) == f"equivalent within ±{EQUIVALENCE_MARGIN:g} points"


def test_a_noisy_small_sample_pair_is_inconclusive():
    rng = np.random.default_rng(3)
    # 200 images, a few discordant ones a seed, the seeds disagreeing on the direction
    pairs = [_records(rng, 200, 0.9, a_only, b_only) for a_only, b_only in ((6, 2), (1, 5), (4, 3))]
    low, high = paired_interval(pairs)
    assert low < -EQUIVALENCE_MARGIN and high > EQUIVALENCE_MARGIN and low < 0 < high
    assert reading("A", "B", (low, high), 3) == "inconclusive"


def test_one_seed_behind_with_a_large_spread_is_inconclusive():
    rng = np.random.default_rng(4)
    # 10,000 images: A ahead by 3.0 and 3.5 points in two seeds and behind by 0.5 in the third,
    # every gap beyond its images' noise, but the seeds scatter widely
    pairs = [_records(rng, 10_000, 0.9, 400 + gap, 400) for gap in (300, 350, -50)]
    mean, seed_part, test_part = difference_parts(pairs)
    assert mean == pytest.approx(2.0)
    assert mean - 1.96 * math.sqrt(test_part) > 0  # the test images alone would rank A ahead
    low, high = paired_interval(pairs)
    assert low < 0 < high and reading("A", "B", (low, high), 3) == "inconclusive"
    assert seed_part > 10 * test_part  # it is the seeds that leave the question open


def test_reading_classes_and_their_edges():
    assert reading("A", "B", (-0.2, 0.2), 3) == "equivalent within ±0.2 points"  # the margin is inclusive
    assert reading("A", "B", (-0.21, 0.1), 3) == "inconclusive"
    assert reading("A", "B", (0.0, 0.5), 3) == "inconclusive"  # touching 0 does not exclude it
    assert reading("A", "B", (0.05, 0.15), 3) == "ranked: A > B"  # a real difference, if a small one
    assert reading("A", "B", (-0.5, -0.01), 3) == "ranked: A < B"
    assert reading("A", "B", (0.5, 1.0), MIN_SEEDS - 1) == f"{MIN_SEEDS - 1} of {MIN_SEEDS} seeds run: no reading yet"
    assert reading("A", "B", (-0.3, 0.3), 3, margin=0.5) == "equivalent within ±0.5 points"


def test_paired_records_must_cover_the_same_images():
    a = np.array([True, False, True, True])
    b = np.array([True, True, False, True])
    assert discordant(a, b) == (1, 1, 4)
    with pytest.raises(ValueError, match="same images"):
        discordant(a, b[:3])
    with pytest.raises(ValueError, match="at least one seed"):
        paired_interval([])
    with pytest.raises(ValueError, match="same test images"):
        paired_interval([(a, b), (a[:3], b[:3])])


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(20_000, 10, generator=gen) * 3
    labels = torch.multinomial((logits / 2.0).softmax(-1), 1, generator=gen).squeeze(1)
    assert fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.05)


def test_reliability_ece_of_known_cases():
    # every answer 90% sure and right 9 times in 10: calibrated
    probs = torch.tensor([[0.9, 0.1]] * 10)
    labels = torch.tensor([0] * 9 + [1])
    assert reliability(probs, labels)["ece"] == pytest.approx(0.0, abs=1e-6)
    # every answer ~100% sure and right half the time: off by one half
    probs = torch.tensor([[0.999, 0.001]] * 10)
    labels = torch.tensor([0, 1] * 5)
    result = reliability(probs, labels)
    assert result["ece"] == pytest.approx(0.499, abs=1e-3)
    assert result["curve"]["count"] == [10]


def test_auroc_separated_identical_and_tied():
    assert auroc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert auroc(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])) == 0.0
    assert auroc(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0])) == 0.5
    assert auroc(torch.tensor([2.0, 3.0]), torch.tensor([1.0, 2.0])) == pytest.approx(7 / 8)  # one tie: a half


def test_choose_threshold_flags_the_asked_share():
    scores = torch.arange(1000, dtype=torch.float32)
    threshold = choose_threshold(scores, 0.01)
    assert (scores < threshold).float().mean().item() == pytest.approx(0.01, abs=0.002)


def test_feature_distance_measures_in_the_shared_covariance_to_the_nearest_class_mean():
    rng = np.random.default_rng(0)
    labels = torch.tensor([3, 7]).repeat(2000)  # classes need not be 0..n-1
    centres = {3: (0.0, 0.0), 7: (10.0, 0.0)}
    spread = torch.tensor([1.0, 3.0])  # three times as wide along the second axis
    features = torch.tensor([centres[int(c)] for c in labels]) + torch.from_numpy(rng.normal(size=(4000, 2))) * spread
    distance = FeatureDistance.fit(features.float(), labels)
    near_7, wide, narrow, between = distance.scores(torch.tensor([[10.0, 0.0], [0.0, 3.0], [1.0, 0.0], [5.0, 0.0]]))
    assert near_7 > -0.05  # at a class mean: distance 0
    assert wide == pytest.approx(narrow, abs=0.15) and narrow == pytest.approx(-1.0, abs=0.1)  # one sd either way
    assert between == pytest.approx(-25.0, rel=0.05)
