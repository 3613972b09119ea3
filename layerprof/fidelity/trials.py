"""The (z, budget) grid a study trains on, and the contract between a study and its tasks.

Cells and chains of cells; the named fidelity paths over a study's grid (`layers`, `budget`, `diagonal`, the
ladder's); the segments a continued run passes through, as a task's `resume` receives them; and the phases a
task marks (`trial_phase`). `correlate` runs trials on it, `tasks` trains them, `simulate` replays paths over
it: all three import this module, none of them another for it. No torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args

from layerprof.errors import LayerprofError

GridCell = tuple[int, float]  # (trainable layers z, budget fraction)
Chain = tuple[GridCell, ...]  # the rungs one continued run goes through, in order
TaskState = Any  # what a task's `resume` hands itself from rung to rung: the task's own (a run, a checkpoint path)
# where a study's or a sweep's work runs: worker processes here, or Ray tasks (`correlate --executor`,
# `profile --executor`); here, not in correlate.py, so that `--help` need not import the study code
ExecutorName = Literal["local", "ray"]
EXECUTORS: tuple[ExecutorName, ...] = get_args(ExecutorName)
Phase = Literal["training", "evaluation", "checkpoint"]  # checkpoint: a continued run saving or restoring its state
PHASES: tuple[Phase, ...] = get_args(Phase)
FRACTION_TOLERANCE = 1e-6  # a typed budget fraction names a study fraction within this relative distance


# ---------------------------------------------------------------- rungs of a run


def step_at(fraction: float, full_steps: int) -> int:
    """Steps trained by `fraction` of a budget of `full_steps` (at least one for any positive fraction), as the
    built-in tasks and `simulate`'s prices count them."""
    return 0 if fraction <= 0 else max(1, round(full_steps * fraction))


@dataclass(frozen=True)
class Segment:
    """One rung of a continued run, as a task's `resume` receives it: train at `trainable_layers` from
    `start_fraction` to `end_fraction` of the full budget (training done in all, not in this rung), then
    evaluate. The learning-rate schedule spans the whole run, `total_fraction`, and resumes at the step reached,
    so that a rung neither restarts the warm-up nor cools down early. A from-scratch trial is the one segment of
    a run through one rung."""

    index: int
    trainable_layers: int
    budget_fraction: float  # the rung's cell
    start_fraction: float
    end_fraction: float
    total_fraction: float

    def steps(self, full_steps: int) -> tuple[int, int, int]:
        """(first step, the step after the last, steps of the whole run) for `full_steps` at budget 1."""
        start = step_at(self.start_fraction, full_steps)
        end = max(start + 1, step_at(self.end_fraction, full_steps))
        return start, end, max(end, step_at(self.total_fraction, full_steps))


def segments(chain: Sequence[GridCell]) -> list[Segment]:
    """The segments of one run through `chain`. A rung whose budget fraction rises trains on to it (a budget rung
    continued from its checkpoint); a rung that keeps the previous fraction (more layers thawed on the same
    budget, the layers path) trains that fraction again, since thawing alone would leave the loss where it was."""
    spans, done, previous = [], 0.0, 0.0
    for z, fraction in chain:
        length = fraction - previous if fraction > previous else fraction
        spans.append((z, fraction, done, done + length))
        done, previous = done + length, fraction
    return [Segment(i, z, f, start, end, done) for i, (z, f, start, end) in enumerate(spans)]


# ---------------------------------------------------------------- phases of a trial


class PhaseClock:
    """The seconds a trial spent in each phase its task marked, on the study's clock; the rest is set-up."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.marked = False


_clock: PhaseClock | None = None  # the running trial's, in the process that runs it


@contextmanager
def trial_phase(name: Phase) -> Iterator[None]:
    """Mark a stretch of a task as training, evaluation or checkpoint (a continued run saving its state at the end
    of a rung, or restoring it to go on: `with layerprof.trial_phase("training"): ...`), so that `correlate`
    records it apart from set-up (imports, loading data, building the model) and `simulate` prices training,
    evaluation and checkpoints without set-up. Outside a trial it only runs the block."""
    if name not in PHASES:
        raise LayerprofError(f"trial_phase({name!r}): choose one of {', '.join(PHASES)}")
    clock = _clock
    began = clock.now() if clock is not None else 0.0
    try:
        yield
    finally:
        if clock is not None:
            clock.seconds[name] += clock.now() - began
            clock.marked = True


@contextmanager
def timed_trial(now: Callable[[], float]) -> Iterator[PhaseClock]:
    """The phases of the trial run inside the block, timed by `now` (the study's clock)."""
    global _clock
    previous, _clock = _clock, PhaseClock(now)
    try:
        yield _clock
    finally:
        _clock = previous


# ---------------------------------------------------------------- named paths over the grid


@dataclass
class FidelityPath:
    """A named path of (z, budget) rungs that halving climbs, and what it is."""

    name: str
    cells: list[GridCell]
    about: str


Value = TypeVar("Value")


def spread(values: Sequence[Value], count: int) -> list[Value]:
    """`count` of the sorted `values`, evenly by position, always the first and the last."""
    if count >= len(values):
        return list(values)
    if count == 1:
        return [values[-1]]
    return [values[round(i * (len(values) - 1) / (count - 1))] for i in range(count)]


@dataclass(frozen=True)
class PathGrid:
    """What a named path is built over: the chosen study z values and budget fractions (sorted), and the z rungs
    `layerprof ladder` recommends (None: no profile)."""

    layer_counts: list[int]
    fractions: list[float]
    ladder_layers: Sequence[int] | None = None


Built = list[GridCell] | str  # the path's cells, or why it is left out


def _layers(grid: PathGrid) -> Built:
    return [(z, grid.fractions[-1]) for z in grid.layer_counts]


def _budget(grid: PathGrid) -> Built:
    return [(grid.layer_counts[-1], f) for f in grid.fractions]


def _diagonal(grid: PathGrid) -> Built:
    count = min(len(grid.layer_counts), len(grid.fractions))
    return list(zip(spread(grid.layer_counts, count), spread(grid.fractions, count), strict=True))


def _ladder(grid: PathGrid) -> Built:
    assert grid.ladder_layers is not None
    return [(z, grid.fractions[-1]) for z in grid.ladder_layers]


def _ladder_joint(grid: PathGrid) -> Built:
    rungs, budgets = grid.ladder_layers, grid.fractions
    assert rungs is not None
    if len(rungs) < 2 or len(rungs) > len(budgets):
        return (
            f"ladder-joint left out: the ladder has {len(rungs)} rung(s) and the study {len(budgets)} budget "
            f"fraction(s); it pairs 2 or more rungs with as many of the largest fractions"
        )
    return list(zip(rungs, budgets[-len(rungs) :], strict=True))


@dataclass(frozen=True)
class PathKind:
    """One named fidelity path: everything `simulate --paths` and `correlate --continue` know of it."""

    name: str
    help: str  # one line: what its rungs are (a simulated path's `about`)
    needs_profile: bool  # its rungs are the ladder's, which a profile recommends (`simulate --profile`)
    continuable: bool  # `correlate --continue NAME` records continued runs along it (no profile needed)
    build: Callable[[PathGrid], Built]  # its cells over a study's chosen z values and budget fractions


# The named paths, in the order `simulate` replays them: adding a path is one entry here.
PATH_KINDS: dict[str, PathKind] = {
    kind.name: kind
    for kind in (
        PathKind("layers", "every z, each on the full budget", False, True, _layers),
        PathKind("budget", "every budget fraction at the largest z", False, True, _budget),
        PathKind("diagonal", "z and budget rising together (the paper's Table 3)", False, True, _diagonal),
        PathKind("ladder", "the z rungs `layerprof ladder` recommends, each on the full budget", True, False, _ladder),
        PathKind(
            "ladder-joint", "the recommended z rungs with the largest budget fractions", True, False, _ladder_joint
        ),
    )
}
PATHS = tuple(PATH_KINDS)  # the named paths `simulate --paths` takes
PROFILE_PATHS = tuple(name for name, kind in PATH_KINDS.items() if kind.needs_profile)
# the named paths `correlate --continue` takes: the budget path first, the halving on steps every library continues
CONTINUED_PATHS = tuple(sorted((n for n, k in PATH_KINDS.items() if k.continuable), key=lambda n: n != "budget"))


def path_kind(name: str, option: str = "--paths") -> PathKind:
    """The registry's entry for a path name; an unknown name is refused with the list."""
    if name not in PATH_KINDS:
        raise LayerprofError(f"{option}: unknown path {name!r}; choose from {', '.join(PATHS)}")
    return PATH_KINDS[name]


def study_paths(
    names: Sequence[str], layer_counts: Sequence[int], fractions: Sequence[float], ladder_layers: Sequence[int] | None
) -> tuple[list[FidelityPath], list[str]]:
    """The named paths over the chosen study z values and budget fractions; notes for paths left out."""
    grid = PathGrid(sorted(layer_counts), sorted(fractions), ladder_layers)
    paths, notes = [], []
    for name in names:
        kind = path_kind(name)
        built = kind.build(grid)
        if isinstance(built, str):
            notes.append(built)
        else:
            paths.append(FidelityPath(name, built, kind.help))
    return paths, notes


def match_fraction(value: float, fractions: Sequence[float]) -> float:
    """The study fraction a typed one names (0.1111 for 0.1111), or the typed value if the study lacks it."""
    return next((f for f in fractions if abs(f - value) <= FRACTION_TOLERANCE * max(f, value)), value)
