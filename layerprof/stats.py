"""Statistics of step times: the median, its distribution-free confidence interval, and the spread. No torch."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class TimingStats:
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


def median_is_stable(samples_ms: list[float], tolerance: float) -> bool:
    """True when the 95% interval of the median lies within +-tolerance of the median."""
    ordered = sorted(samples_ms)
    median = statistics.median(ordered)
    low, high = median_confidence_interval(ordered)
    return low >= median * (1 - tolerance) and high <= median * (1 + tolerance)
