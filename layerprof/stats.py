"""Statistics, in one place: of step times (the median, its distribution-free confidence interval, the spread)
and of rankings (Spearman's rho, Kendall's tau-b, their bootstrap intervals) for `correlate` and `simulate`.
No torch.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TimingStats:
    """The median step time, its confidence interval and the spread of the timed steps."""

    median_ms: float
    mean_ms: float
    std_ms: float
    p10_ms: float
    p90_ms: float
    count: int
    ci_low_ms: float  # 95% confidence interval of the median (order statistics)
    ci_high_ms: float

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> TimingStats:
        """Statistics of the timed steps, ms; needs at least one (a single step has a spread of 0)."""
        ordered = sorted(samples_ms)
        low, high = median_confidence_interval(ordered)
        return cls(
            median_ms=statistics.median(ordered),
            mean_ms=statistics.fmean(ordered),
            std_ms=statistics.stdev(ordered) if len(ordered) > 1 else 0.0,
            p10_ms=quantile(ordered, 0.10),
            p90_ms=quantile(ordered, 0.90),
            count=len(ordered),
            ci_low_ms=low,
            ci_high_ms=high,
        )


def quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    position = (len(ordered) - 1) * q
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def median_confidence_interval(ordered: list[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free 95% interval of the median: order statistics at ranks n/2 -+ z*sqrt(n)/2 (1-based)."""
    n = len(ordered)
    if n == 0:
        return math.nan, math.nan
    half_width = z * math.sqrt(n) / 2
    low_rank = max(1, math.floor(n / 2 - half_width))
    high_rank = min(n, math.ceil(1 + n / 2 + half_width))
    return ordered[low_rank - 1], ordered[high_rank - 1]


def rank_sum_p_value(larger: list[float], smaller: list[float]) -> float:
    """One-sided exact Mann-Whitney test: the chance, were both samples drawn from one distribution, that `larger`
    would beat `smaller` in at least as many pairs as it does (a tie counts half, rounded down: conservative).

    Distribution-free and exact for the few samples a profile holds (visit medians: 3 to 20 per cell): with 3
    against 3, complete separation gives 1/20 = 0.05, the smallest p-value there is.
    """
    n, m = len(larger), len(smaller)
    if not n or not m:
        return 1.0
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in larger for b in smaller)
    # counts[u]: orderings of n + m distinct values in which `larger` wins u pairs (Mann and Whitney's recursion:
    # the largest value belongs to one sample or the other)
    table: dict[tuple[int, int], list[int]] = {}

    def counts(i: int, j: int) -> list[int]:
        if i == 0 or j == 0:
            return [1]
        if (i, j) not in table:
            result = [0] * (i * j + 1)
            for u, ways in enumerate(counts(i - 1, j)):  # the largest value is one of `larger`: it wins j pairs
                result[u + j] += ways
            for u, ways in enumerate(counts(i, j - 1)):
                result[u] += ways
            table[(i, j)] = result
        return table[(i, j)]

    distribution = counts(n, m)
    return sum(distribution[math.floor(wins) :]) / math.comb(n + m, n)


def quantile_confidence_interval(ordered: list[float], q: float, z: float = 1.96) -> tuple[float, float]:
    """Distribution-free 95% interval of the q-quantile of sorted samples: the order statistics `z` binomial
    standard deviations either side of the quantile's position (0-based q * (n - 1), as `quantile` takes it)."""
    n = len(ordered)
    if n == 0:
        return math.nan, math.nan
    position, half_width = q * (n - 1), z * math.sqrt(n * q * (1 - q))
    return ordered[max(0, math.floor(position - half_width))], ordered[min(n - 1, math.ceil(position + half_width))]


def share_confidence_interval(successes: int, count: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's 95% interval of a share (honest at 0 and 1, where the normal approximation collapses)."""
    if count == 0:
        return 0.0, 1.0
    share = successes / count
    centre = (share + z * z / (2 * count)) / (1 + z * z / count)
    half_width = z * math.sqrt(share * (1 - share) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


def mean_confidence_interval(values: list[float], z: float = 1.96) -> tuple[float, float]:
    """The normal 95% interval of a mean: mean -+ z standard errors."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean
    half_width = z * sample_stdev(values, mean) / math.sqrt(len(values))
    return mean - half_width, mean + half_width


def sample_stdev(values: Sequence[float], mean: float) -> float:
    """The sample standard deviation (n - 1) of at least two values around their `mean`, in floats: equal to
    `statistics.stdev` to rounding, which sums exact fractions (30 ms for 1,000 values, where `simulate` asks after
    every batch of repeats, over every repeat so far)."""
    return math.sqrt(math.fsum((value - mean) ** 2 for value in values) / (len(values) - 1))


# ---------------------------------------------------------------- rank statistics


def average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their average rank (as Spearman's rho needs them)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _pearson(x: Sequence[float], y: Sequence[float]) -> float:
    n = len(x)
    mean_x, mean_y = sum(x) / n, sum(y) / n
    covariance = sum((a - mean_x) * (b - mean_y) for a, b in zip(x, y, strict=True))
    spread_x = math.sqrt(sum((a - mean_x) ** 2 for a in x))
    spread_y = math.sqrt(sum((b - mean_y) ** 2 for b in y))
    return covariance / (spread_x * spread_y) if spread_x and spread_y else math.nan


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson's on average ranks); NaN where either side is constant."""
    return _pearson(average_ranks(x), average_ranks(y))


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b, which corrects for ties on either side; NaN where one side is all ties."""
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denominator if denominator else math.nan


def bootstrap_interval(
    x: Sequence[float], y: Sequence[float], statistic: Callable, repeats: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile 95% interval of `statistic` over configurations resampled with replacement."""
    generator = random.Random(seed)
    n = len(x)
    samples = []
    for _ in range(repeats):
        index = [generator.randrange(n) for _ in range(n)]
        value = statistic([x[i] for i in index], [y[i] for i in index])
        if not math.isnan(value):
            samples.append(value)
    if not samples:
        return math.nan, math.nan
    samples.sort()
    return samples[int(0.025 * (len(samples) - 1))], samples[int(math.ceil(0.975 * (len(samples) - 1)))]
