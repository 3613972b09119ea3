"""Statistics of step times and rankings, against values worked out by hand or found in textbook tables."""

from __future__ import annotations

import math
import random

import pytest

from layerprof.stats import (
    TimingStats,
    average_ranks,
    bootstrap_interval,
    kendall_tau_b,
    mean_confidence_interval,
    median_confidence_interval,
    quantile,
    quantile_confidence_interval,
    rank_sum_p_value,
    share_confidence_interval,
    spearman,
)

HUNDRED = [float(v) for v in range(1, 101)]


def test_timing_stats_of_five_samples() -> None:
    """1..5: median and mean 3, stdev sqrt(10 / 4), p10 at position 0.4 (1.4), p90 at 3.6 (4.6); the median's
    interval, ranks 2.5 -+ 2.19 -> 1 and 6 (clipped to 5), is the whole sample."""
    stats = TimingStats.from_samples([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (stats.median_ms, stats.mean_ms, stats.count) == (3.0, 3.0, 5)
    assert stats.std_ms == pytest.approx(math.sqrt(2.5))
    assert (stats.p10_ms, stats.p90_ms) == (pytest.approx(1.4), pytest.approx(4.6))
    assert (stats.ci_low_ms, stats.ci_high_ms) == (1.0, 5.0)
    assert TimingStats.from_samples([1.0, 3.0]).std_ms == pytest.approx(math.sqrt(2))  # two samples have a spread
    single = TimingStats.from_samples([7.0])
    assert (single.median_ms, single.std_ms, single.p10_ms, single.ci_low_ms, single.ci_high_ms) == (7, 0, 7, 7, 7)


def test_quantile_interpolates_between_closest_ranks() -> None:
    ordered = [10.0, 20.0, 30.0, 40.0]
    assert quantile(ordered, 0.0) == 10.0 and quantile(ordered, 1.0) == 40.0
    assert quantile(ordered, 0.5) == 25.0  # position 1.5
    assert quantile(ordered, 0.25) == pytest.approx(17.5)  # position 0.75


def test_median_interval_of_a_hundred_is_the_40th_to_61st() -> None:
    """The textbook ranks for n = 100 at 95%: 50 -+ 1.96 x 10 / 2 = 40.2 and 60.8 -> the 40th and 61st values."""
    assert median_confidence_interval(HUNDRED) == (40.0, 61.0)
    assert all(math.isnan(v) for v in median_confidence_interval([]))


@pytest.mark.parametrize(
    ("larger", "smaller", "p_value"),
    [
        ([4.0, 5.0, 6.0], [1.0, 2.0, 3.0], 1 / 20),  # complete separation of 3 and 3: 1 of C(6, 3) orderings
        ([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], 1.0),  # the other way round: every ordering wins at least 0 pairs
        ([5.0, 6.0], [1.0, 2.0, 3.0], 1 / 10),  # 1 of C(5, 2)
        ([4.0, 5.0, 6.0], [1.0, 2.0], 1 / 10),
        # U = 3 of 6 pairs; U for 2 against 3 counts 1, 1, 2, 2, 2, 1, 1 orderings at 0..6: P(U >= 3) = 6 / 10
        ([2.0, 4.0], [1.0, 3.0, 5.0], 0.6),
        ([3.0, 1.0], [2.0, 4.0], 5 / 6),  # U = 1; for 2 against 2: 1, 1, 2, 1, 1 at 0..4
        ([1.0, 1.0], [1.0, 1.0], 4 / 6),  # four ties count 2 wins
        ([2.0, 1.0], [1.0, 0.0], 2 / 6),  # 3 wins and a tie: 3.5 rounds down to 3, P(U >= 3) = 2 / 6
        ([], [1.0], 1.0),
        ([1.0], [], 1.0),
    ],
)
def test_rank_sum_p_value_is_exact(larger: list[float], smaller: list[float], p_value: float) -> None:
    assert rank_sum_p_value(larger, smaller) == pytest.approx(p_value)


def test_quantile_interval_around_the_quantile_position() -> None:
    """1..100: q = 0.5 at position 49.5 -+ 1.96 x 5 -> indices 39 and 60; q = 0.9 at 89.1 -+ 1.96 x 3 -> 83 and 95."""
    assert quantile_confidence_interval(HUNDRED, 0.5) == (40.0, 61.0)
    assert quantile_confidence_interval(HUNDRED, 0.9) == (84.0, 96.0)
    assert quantile_confidence_interval([1.0, 2.0, 3.0], 0.5) == (1.0, 3.0)  # clipped to the sample
    assert all(math.isnan(v) for v in quantile_confidence_interval([], 0.5))


def test_wilson_interval_matches_the_tables() -> None:
    low, high = share_confidence_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.2775, abs=1e-4)
    assert share_confidence_interval(5, 10) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    low, high = share_confidence_interval(10, 10)
    assert low == pytest.approx(0.7225, abs=1e-4) and high == 1.0
    assert share_confidence_interval(0, 0) == (0.0, 1.0)  # no trial: anything is possible


def test_mean_interval_is_mean_plus_minus_z_standard_errors() -> None:
    """1..5: stdev sqrt(2.5), standard error sqrt(2.5 / 5) = 0.7071, 1.96 x 0.7071 = 1.3859."""
    low, high = mean_confidence_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (low, high) == (pytest.approx(3 - 1.38593, abs=1e-5), pytest.approx(3 + 1.38593, abs=1e-5))
    assert mean_confidence_interval([4.0]) == (4.0, 4.0)
    # two values: stdev sqrt(2), standard error 1
    assert mean_confidence_interval([1.0, 3.0]) == (pytest.approx(2 - 1.96), pytest.approx(2 + 1.96))


def test_the_float_stdev_equals_the_exact_one_to_rounding() -> None:
    """`sample_stdev` (floats, fast) against `statistics.stdev` (exact fractions): 1,000 regrets, costs far from
    zero (a large mean, a small spread) and two values."""
    import statistics

    from layerprof.stats import sample_stdev

    draw = random.Random(3)
    for values in (
        [draw.random() for _ in range(1000)],
        [1e6 + draw.gauss(0, 1e-3) for _ in range(1000)],
        [1.0, 3.0],
        [0.0] * 5,
    ):
        assert sample_stdev(values, statistics.fmean(values)) == pytest.approx(statistics.stdev(values), rel=1e-9)
    assert sample_stdev([1.0, 3.0], 2.0) == math.sqrt(2)


def test_average_ranks_share_ties() -> None:
    assert average_ranks([10.0, 20.0, 20.0, 30.0]) == [1.0, 2.5, 2.5, 4.0]
    assert average_ranks([3.0, 1.0, 2.0]) == [3.0, 1.0, 2.0]
    assert average_ranks([5.0, 5.0, 5.0]) == [2.0, 2.0, 2.0]
    assert average_ranks([2.0, 1.0, 2.0, 1.0, 9.0]) == [3.5, 1.5, 3.5, 1.5, 5.0]


def test_spearman_by_hand() -> None:
    """y ranks 1, 2, 3.5, 5, 3.5 against 1..5: covariance 8 over sqrt(10 x 9.5)."""
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95))
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2, 3], [4, 4, 4])) and math.isnan(spearman([4, 4, 4], [1, 2, 3]))


def test_kendall_tau_b_by_hand() -> None:
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)  # 5 concordant, 1 discordant
    assert kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # 4 concordant, one pair tied in x only, one in y only: 4 / sqrt((4 + 1) (4 + 1))
    assert kendall_tau_b([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    # a pair tied on both sides counts for neither: 2 / sqrt(2 x 2)
    assert kendall_tau_b([1, 1, 2], [1, 1, 3]) == pytest.approx(1.0)
    assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))
    # a pair tied on both sides does not end the pairs of its first member: 2 concordant, 3 discordant
    assert kendall_tau_b([1, 1, 2, 3], [1, 1, 3, 0]) == pytest.approx(-0.2)
    # differences under one unit (step times 0.5 ms apart) are orderings like any other
    assert kendall_tau_b([0.0, 0.5, 0.75], [0.0, 0.5, 0.75]) == 1.0
    assert kendall_tau_b([0.0, 0.5], [0.5, 0.0]) == -1.0
    assert kendall_tau_b([0.5, 0.0], [0.5, 0.0]) == 1.0 and kendall_tau_b([0.5, 0.0], [0.0, 0.5]) == -1.0


def test_bootstrap_takes_the_2_5th_and_97_5th_percentiles_of_the_valid_resamples() -> None:
    calls = iter(range(10_000))

    def counter(x: list[float], y: list[float]) -> float:
        assert len(x) == len(y) == 3 and all(b == 10 * a for a, b in zip(x, y, strict=True))  # pairs stay pairs
        return float(next(calls))

    # 1000 resamples giving 0..999: indices int(0.025 x 999) = 24 and ceil(0.975 x 999) = 975
    assert bootstrap_interval([1.0, 2.0, 3.0], [10.0, 20.0, 30.0], counter) == (24.0, 975.0)
    calls = iter(range(10_000))
    # 41 resamples 0..40: int(0.025 x 40) = 1 and ceil(0.975 x 40) = 39
    assert bootstrap_interval([1.0, 2.0, 3.0], [10.0, 20.0, 30.0], counter, repeats=41) == (1.0, 39.0)
    calls = iter(range(10_000))

    def odd_only(x: list[float], y: list[float]) -> float:
        value = next(calls)
        return float(value) if value % 2 else math.nan

    # NaNs are left out: 500 valid resamples 1, 3, ..., 999, indices int(0.025 x 499) = 12 and
    # ceil(0.975 x 499) = 487, the values 25 and 975
    assert bootstrap_interval([1.0, 2.0], [1.0, 2.0], odd_only, repeats=1000) == (25.0, 975.0)
    assert all(math.isnan(v) for v in bootstrap_interval([1.0, 2.0], [1.0, 2.0], lambda x, y: math.nan))


def test_bootstrap_is_reproducible_by_seed() -> None:
    x = [float(v) for v in range(12)]
    y = [1.0, 3.0, 2.0, 5.0, 4.0, 7.0, 6.0, 9.0, 8.0, 11.0, 10.0, 12.0]
    first = bootstrap_interval(x, y, spearman, repeats=200, seed=3)
    assert bootstrap_interval(x, y, spearman, repeats=200, seed=3) == first
    assert first[0] < first[1] <= 1.0
    monotone = bootstrap_interval(x, [2 * v for v in x], spearman, repeats=200)
    assert monotone == (pytest.approx(1.0), pytest.approx(1.0))  # every resample with two values ranks alike
