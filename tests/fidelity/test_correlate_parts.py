"""Parts of fidelity/correlate.py that the end-to-end tests leave unpinned (issue 40: mutants that survived)."""

from __future__ import annotations

import math

from layerprof.fidelity.correlate import _mean, _over_folds, _per_config_mean
from layerprof.fidelity.judging import Fold


def test_a_configurations_loss_is_the_mean_of_the_seeds_that_succeeded() -> None:
    assert _mean([1.0, None, 4.0]) == 2.5  # the failed seed left out, not counted as 0
    assert _mean([3.0]) == 3.0
    assert _mean([None, None]) is None
    assert _per_config_mean([[2.0, 6.0], [None], [5.0, None]]) == [4.0, None, 5.0]


def test_a_statistic_over_folds_leaves_out_a_fold_with_fewer_than_two_known_pairs() -> None:
    whole, thin = Fold((1,), (0,)), Fold((0,), (1,))
    lows = {whole: [1.0, 2.0, 3.0], thin: [1.0, None, 3.0]}
    judges = {whole: [1.0, 2.0, 3.0], thin: [None, 2.0, 3.0]}  # thin: only configuration 2 is known on both sides
    pairs = _over_folds(lambda low, _judge: float(len(low)), lows, judges)  # the statistic: how many pairs it saw
    assert pairs([0.0, 1.0, 2.0], []) == 3.0  # the thin fold's one pair is no statistic
    assert pairs([0.0, 2.0], []) == 2.0
    assert math.isnan(pairs([1.0], []))
