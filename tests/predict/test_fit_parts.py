"""Parts of predict/fit.py that the end-to-end tests leave unpinned (issue 40: mutants that survived)."""

from __future__ import annotations

from layerprof.predict.fit import FitSearch


def test_a_search_limited_to_the_smallest_batch_probes_nothing_more() -> None:
    search = FitSearch.__new__(FitSearch)  # the search alone: no model to trace, the needs given
    search.smallest_batch = 1
    probed: list[int] = []

    def need(batch_size: int) -> int:
        probed.append(batch_size)
        return 10 * batch_size

    assert search._from_smallest(need, {1: need(1)}, 100, limit=1) == 1
    assert probed == [1]  # the smallest batch is the limit: known already, not traced again
    probed.clear()
    assert search._from_smallest(need, {1: need(1)}, 100, limit=3) == 3
    assert probed == [1, 3]  # one probe at the limit, which fits
