"""fidelity/judging.py part by part (issue 40's mutation survivors): the folds of a study, its judge mode, the
statistics over folds, the per-configuration means, rho and regret, and the noise floor, with pinned values."""

from __future__ import annotations

import math

import pytest

from layerprof.fidelity.judging import (
    Fold,
    NoiseFloor,
    OverFolds,
    fold_statistic,
    judge_folds,
    judge_mode,
    mean_over,
    rank_and_regret,
)


def test_the_folds_of_judge_only_seeds_of_several_seeds_and_of_one() -> None:
    assert judge_folds([3, 1], judge_only=[9, 8]) == [Fold((1, 3), (8,)), Fold((1, 3), (9,))]
    assert judge_folds([2, 0, 1]) == [Fold((1, 2), (0,)), Fold((0, 2), (1,)), Fold((0, 1), (2,))]
    assert judge_folds([2, 0]) == [Fold((2,), (0,)), Fold((0,), (2,))]  # two seeds: each judges the other
    assert judge_folds([5]) == [Fold((5,), (5,))]


def test_a_study_is_held_out_only_where_every_fold_keeps_its_judge_apart() -> None:
    apart, same = Fold((1, 2), (0,)), Fold((0, 1), (1,))
    assert (apart.held_out, same.held_out) == (True, False)
    assert [judge_mode(folds) for folds in ([apart], [apart, same], [same], [])] == [
        "held-out",
        "same-seed",
        "same-seed",
        "same-seed",
    ]


def test_a_verdict_over_folds_leaves_out_what_is_undefined() -> None:
    assert OverFolds.of([0.5, None, float("nan"), 0.25, 1.0]) == OverFolds(1.75 / 3, 0.25, 1.0, 3)
    assert OverFolds.of([None, float("nan")]) == OverFolds(None, None, None, 0)
    assert mean_over([[1.0, None, 3.0], [math.inf, 2.0], [None, -math.inf], []]) == [2.0, 2.0, None, None]


def test_rho_and_the_judges_regret_of_the_rungs_best() -> None:
    low = [1.0, 2.0, None, 3.0, 4.0]
    judge = [2.0, 1.0, 0.0, 3.0, 4.0]  # the rung's best (1.0) is second best for the judge: regret 2 - 1
    rho, regret = rank_and_regret(low, judge)
    assert (rho, regret) == (pytest.approx(0.8), 1.0)
    assert rank_and_regret([1.0, 2.0, None], [1.0, 2.0, 3.0]) == (None, None)  # two pairs: too few
    assert rank_and_regret([1.0, 1.0, 1.0], [3.0, 1.0, 2.0]) == (None, 2.0)  # a flat rung ranks nothing


def test_statistics_over_folds_and_the_noise_floor() -> None:
    losses = {0: [1.0, 2.0, 3.0, 4.0], 1: [3.0, 1.0, 2.0, 4.0]}
    # seed 1 replays, seed 0 judges: rho of [3, 1, 2, 4] against [1, 2, 3, 4]; the replay's best is the judge's 2nd
    rho, regret = fold_statistic([Fold((1,), (0,))], lambda f: losses[f.replay[0]], lambda f: losses[f.judge[0]])
    assert (rho.mean, rho.low, rho.high, rho.folds) == (pytest.approx(0.4),) * 3 + (1,)
    assert regret == OverFolds(1.0, 1.0, 1.0, 1)
    floor = NoiseFloor.of(OverFolds(0.5, 0.25, 0.75, 3), OverFolds(0.1, 0.0, 0.2, 2))
    assert floor == NoiseFloor(0.5, 0.25, 0.75, 0.1, 0.0, 0.2, 3)  # the folds of whichever gave more
