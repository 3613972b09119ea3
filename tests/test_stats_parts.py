"""The edges of layerprof/stats.py that `make mutate` found untested: an interval of no samples is still a pair
(callers unpack it: `low, high = median_confidence_interval(medians)`)."""

from __future__ import annotations

import math

from layerprof.stats import median_confidence_interval, quantile_confidence_interval


def test_the_intervals_of_no_samples_are_a_pair_of_nans() -> None:
    for interval in (median_confidence_interval([]), quantile_confidence_interval([], 0.5)):
        low, high = interval
        assert len(interval) == 2 and math.isnan(low) and math.isnan(high)
