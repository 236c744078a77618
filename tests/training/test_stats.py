import numpy as np
import pytest

from training.stats import (
    BOOTSTRAP_RESAMPLES,
    EQUIVALENCE_MARGIN,
    MIN_SEEDS,
    bootstrap_differences,
    discordant,
    paired_interval,
    reading,
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


def _naive_bootstrap(pairs, resamples, rng):
    """The hierarchical bootstrap written out with image indices: seeds, then images within each."""
    out = np.empty(resamples)
    for r in range(resamples):
        seeds = rng.integers(0, len(pairs), len(pairs))
        diffs = []
        for s in seeds:
            a, b = pairs[s]
            idx = rng.integers(0, len(a), len(a))
            diffs.append(a[idx].mean() - b[idx].mean())
        out[r] = 100 * np.mean(diffs)
    return out


def test_a_clear_gap_is_ranked_with_the_leader_named():
    rng = np.random.default_rng(1)
    pairs = [_records(rng, 10_000, 0.95, 300, 60) for _ in range(3)]
    low, high = paired_interval(pairs)
    assert 2.0 < low < high < 3.0  # 240 net images of 10,000 in every seed: +2.4 points
    assert reading("conv", "linear", (low, high), 3) == "ranked: conv > linear"
    assert reading("linear", "conv", (-high, -low), 3) == "ranked: linear < conv"


def test_identical_records_are_equivalent():
    rng = np.random.default_rng(2)
    pairs = [(c, c.copy()) for c in (rng.random(10_000) < 0.98 for _ in range(3))]
    assert paired_interval(pairs) == (0.0, 0.0)
    assert reading("A", "B", paired_interval(pairs), 3) == f"equivalent within ±{EQUIVALENCE_MARGIN:g} points"


def test_a_noisy_small_sample_pair_is_inconclusive():
    rng = np.random.default_rng(3)
    # 200 images a seed, a few discordant ones, the seeds disagreeing on the direction
    pairs = [_records(rng, 200, 0.9, a_only, b_only) for a_only, b_only in ((6, 2), (1, 5), (4, 3))]
    low, high = paired_interval(pairs)
    assert low < -EQUIVALENCE_MARGIN and high > EQUIVALENCE_MARGIN and low < 0 < high
    assert reading("A", "B", (low, high), 3) == "inconclusive"


def test_seeds_that_disagree_widen_the_interval_beyond_what_the_images_alone_give():
    rng = np.random.default_rng(4)
    # each seed's gap is sure on its 10,000 images, but the seeds scatter from +0.1 to +2.4 points
    pairs = [_records(rng, 10_000, 0.95, 100 + gap, 100) for gap in (10, 120, 240)]
    low, high = paired_interval(pairs)
    assert low < 0.3 and high > 2.1
    for pair in pairs:  # one seed alone: only its images vary
        one = paired_interval([pair])
        assert one[1] - one[0] < (high - low) / 2


def test_the_multinomial_draw_matches_resampling_image_indices():
    rng = np.random.default_rng(5)
    pairs = [_records(rng, 300, 0.8, a_only, b_only) for a_only, b_only in ((20, 8), (12, 15), (30, 4))]
    fast = bootstrap_differences(pairs, resamples=20_000)
    slow = _naive_bootstrap(pairs, 4_000, np.random.default_rng(6))
    assert fast.mean() == pytest.approx(slow.mean(), abs=0.1)
    assert fast.std() == pytest.approx(slow.std(), rel=0.06)
    assert np.quantile(fast, 0.025) == pytest.approx(np.quantile(slow, 0.025), abs=0.3)
    assert np.quantile(fast, 0.975) == pytest.approx(np.quantile(slow, 0.975), abs=0.3)


def test_the_bootstrap_is_seeded_and_counts_its_resamples():
    rng = np.random.default_rng(7)
    pairs = [_records(rng, 1_000, 0.9, 30, 20) for _ in range(3)]
    first = bootstrap_differences(pairs)
    assert len(first) == BOOTSTRAP_RESAMPLES
    assert np.array_equal(first, bootstrap_differences(pairs))
    assert not np.array_equal(first, bootstrap_differences(pairs, seed=1))
    assert paired_interval(pairs) == paired_interval(pairs)


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
        bootstrap_differences([])
