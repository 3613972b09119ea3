"""Parts of fidelity/correlate.py that the end-to-end tests leave unpinned (issue 40: mutants that survived)."""

from __future__ import annotations

from layerprof.fidelity.correlate import _mean, _per_config_mean


def test_a_configurations_loss_is_the_mean_of_the_seeds_that_succeeded() -> None:
    assert _mean([1.0, None, 4.0]) == 2.5  # the failed seed left out, not counted as 0
    assert _mean([3.0]) == 3.0
    assert _mean([None, None]) is None
    assert _per_config_mean([[2.0, 6.0], [None], [5.0, None]]) == [4.0, None, 5.0]
