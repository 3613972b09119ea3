"""Timing that survives a noisy neighbour: every cell is timed in short visits spread over rounds, and visits
that other work on the machine slowed down are recognised and measured again.

A disturbance that lasts longer than a cell would land entirely on the cells timed while it lasts if each cell
were timed in one block. Spread over rounds (in a new order each round), it lands on a few visits of many
cells instead, and two checks find those visits:

* a visit whose median is more than `SLOW_VISIT_RATIO` above the cell's quickest visit so far (step-time noise
  on a quiet machine stays well inside it), and
* a round in which a fixed reference workload (timed before and after it) ran more than `SLOW_ROUND_RATIO`
  slower than its quickest round.

Flagged visits are left out of the cell's figures; the cell is visited again while time allows. A cell left
with fewer clean visits than the minimum, or with more than two thirds of its visits slowed, is marked
`disturbed`, with the reason.

Everything here is arithmetic on timings: no torch.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from layerprof.stats import median_confidence_interval

SLOW_VISIT_RATIO = 0.25  # a visit 25% slower than the cell's quickest was slowed by something else
SLOW_ROUND_RATIO = 0.20  # the reference workload 20% slower than in its quickest round


@dataclass
class Visit:
    """One visit of a cell: the round it ran in and its timed steps."""

    round_index: int  # 0: the cell's first visit, in the first round
    step_ms: list[float]
    slow_round: bool = False  # the reference workload says the whole round was slowed
    host_ms: list[float] = field(default_factory=list)  # CUDA: launching a step onto an idle queue

    @property
    def median_ms(self) -> float:
        """The median of the visit's timed steps, ms."""
        return statistics.median(self.step_ms)


@dataclass
class CellTiming:
    """The visits of one cell and which of them count."""

    visits: list[Visit] = field(default_factory=list)

    def flagged(self) -> list[bool]:
        """Per visit: slowed down by something else, against the cell's quiet speed (its quickest visit, which
        holds while a single visit ran quietly), or in a slow round."""
        if not self.visits:
            return []
        quiet = min(visit.median_ms for visit in self.visits)
        return [visit.slow_round or visit.median_ms > quiet * (1 + SLOW_VISIT_RATIO) for visit in self.visits]

    def clean(self) -> list[Visit]:
        """The visits that count: in no slowed round, and within SLOW_VISIT_RATIO of the quickest."""
        return [visit for visit, flag in zip(self.visits, self.flagged(), strict=True) if not flag]

    def clean_medians(self) -> list[float]:
        """The clean visits' medians, ms, in the order they ran."""
        return [visit.median_ms for visit in self.clean()]

    def settled(self, min_visits: int, tolerance: float) -> bool:
        """Enough clean visits, with the 95% interval of their median within +-tolerance."""
        medians = sorted(self.clean_medians())
        if len(medians) < min_visits:
            return False
        median = statistics.median(medians)
        low, high = median_confidence_interval(medians)
        return low >= median * (1 - tolerance) and high <= median * (1 + tolerance)

    def disturbance(self, min_visits: int) -> str | None:
        """Why the cell's figures cannot be trusted, or None: fewer clean visits than `min_visits`, or more than
        two thirds of its visits slowed."""
        flags = self.flagged()
        clean = self.clean_medians()
        slowed = sum(flags)
        if not slowed or (len(clean) >= min_visits and slowed <= 2 * len(clean)):
            return None
        reference = statistics.median(clean) if clean else min(v.median_ms for v in self.visits)
        slowest = max(v.median_ms for v, f in zip(self.visits, flags, strict=True) if f)
        in_slow_rounds = sum(1 for visit in self.visits if visit.slow_round)
        text = f"{slowed} of {len(flags)} visits were slowed by other work (up to {slowest / reference:.1f}x"
        text += f", {in_slow_rounds} in rounds the reference workload ran slow)" if in_slow_rounds else ")"
        return text + f"; {len(clean)} clean visit(s) remain"


def slow_rounds(reference_ms: list[float]) -> list[bool]:
    """Per round: whether the reference workload ran more than SLOW_ROUND_RATIO slower than in its best round."""
    if not reference_ms:
        return []
    quickest = min(reference_ms)
    return [value > quickest * (1 + SLOW_ROUND_RATIO) for value in reference_ms]
