"""Who judges a study's verdicts: full-fidelity losses from seeds the replay does not draw from.

A low rung's rho and a search's regret are measured against full training. Judged by the same seed's full
training that the replay ranks on, the full rung of every from-scratch path scores rho = 1 and regret 0 by
construction. A study with k >= 2 seeds is judged held out instead: the replay draws from some seeds and the
full-fidelity losses of another judge it, rotated over the seeds (one fold per judging seed), and the verdicts are
the mean over folds with their range. Seeds recorded at full fidelity only (`correlate --judge-seeds N`) judge
every fold and the replay draws from all the others. A study with one seed has no spare seed: its verdicts are
marked "same-seed judge".

The noise floor is full training judged the same way: how well full training on the replay seeds ranks (rho)
and picks (regret) by the judging seed. Differences between paths below it are noise. No torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from layerprof.stats import spearman

JudgeMode = Literal["held-out", "same-seed"]
JUDGE_MODES: tuple[JudgeMode, ...] = get_args(JudgeMode)
SAME_SEED_WARNING = (
    "single-seed study: every verdict is judged by the full training of the seed it replays (same-seed judge), so "
    "the full rung of a from-scratch path scores rho 1 and regret 0 by construction and no noise floor is known; "
    "record held-out judges (it resumes): {command}"
)


@dataclass(frozen=True)
class Fold:
    """One rotation: the seeds the replay draws losses from, and the seeds whose full training judges it."""

    replay: tuple[int, ...]
    judge: tuple[int, ...]

    @property
    def held_out(self) -> bool:
        """Whether no seed both replays and judges."""
        return not set(self.replay) & set(self.judge)


def judge_folds(seeds: Sequence[int], judge_only: Sequence[int] = ()) -> list[Fold]:
    """The folds of a study: each judge-only seed judges all the other seeds; else, with two or more seeds, each
    seed judges the rest (leave one out); else the one seed judges itself."""
    replayed = tuple(sorted(seeds))
    if judge_only:
        return [Fold(replayed, (seed,)) for seed in sorted(judge_only)]
    if len(replayed) >= 2:
        return [Fold(tuple(s for s in replayed if s != seed), (seed,)) for seed in replayed]
    return [Fold(replayed, replayed)]


def judge_mode(folds: Sequence[Fold]) -> JudgeMode:
    """held-out where every fold keeps its judge apart, else same-seed."""
    return "held-out" if folds and all(fold.held_out for fold in folds) else "same-seed"


@dataclass
class OverFolds:
    """A verdict over the folds: its mean, and the lowest and highest fold's value."""

    mean: float | None
    low: float | None
    high: float | None
    folds: int = 0  # folds that gave a value

    @classmethod
    def of(cls, values: Sequence[float | None]) -> OverFolds:
        """The mean and range of the values that are defined (None and NaN are left out)."""
        known = [v for v in values if v is not None and not math.isnan(v)]
        if not known:
            return cls(None, None, None, 0)
        return cls(sum(known) / len(known), min(known), max(known), len(known))


def mean_over(rows: Sequence[Sequence[float | None]]) -> list[float | None]:
    """Per configuration, the mean of its finite values (None where it has none)."""
    means: list[float | None] = []
    for row in rows:
        finite = [v for v in row if v is not None and math.isfinite(v)]
        means.append(sum(finite) / len(finite) if finite else None)
    return means


def rank_and_regret(low: Sequence[float | None], judge: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Spearman's rho of a rung's losses against the judge's and the judge's regret of the rung's best (the
    judge's loss of it minus its best), over the configurations both have; None where fewer than three."""
    pairs = [(a, b) for a, b in zip(low, judge, strict=True) if a is not None and b is not None]
    if len(pairs) < 3:
        return None, None
    x, y = [a for a, _ in pairs], [b for _, b in pairs]
    rho = spearman(x, y)
    regret = y[min(range(len(x)), key=lambda i: x[i])] - min(y)
    return (None if math.isnan(rho) else rho), regret


def fold_statistic(
    folds: Sequence[Fold],
    low: Callable[[Fold], Sequence[float | None]],
    judge: Callable[[Fold], Sequence[float | None]],
) -> tuple[OverFolds, OverFolds]:
    """Rho and regret of `low(fold)` against `judge(fold)`, over the folds."""
    rhos, regrets = [], []
    for fold in folds:
        rho, regret = rank_and_regret(low(fold), judge(fold))
        rhos.append(rho)
        regrets.append(regret)
    return OverFolds.of(rhos), OverFolds.of(regrets)


@dataclass
class NoiseFloor:
    """Full training judged like every rung: rho and regret of full training on the replay seeds against the
    judging seed, mean and range over folds. What seed-to-seed noise alone costs."""

    spearman: float | None
    spearman_low: float | None
    spearman_high: float | None
    regret: float | None
    regret_low: float | None
    regret_high: float | None
    folds: int = 0

    @classmethod
    def of(cls, rho: OverFolds, regret: OverFolds) -> NoiseFloor:
        """From the full cell's rho and regret over folds."""
        return cls(rho.mean, rho.low, rho.high, regret.mean, regret.low, regret.high, max(rho.folds, regret.folds))
