"""trials.py part by part (issue 40's mutation survivors): a rung shorter than one step still trains one, a trial's
phase clock starts unmarked and is put back after the trial, and a typed fraction's tolerance is relative to the
larger of the two."""

from __future__ import annotations

from layerprof.fidelity import trials
from layerprof.fidelity.trials import Segment, match_fraction, timed_trial, trial_phase


def test_a_rung_shorter_than_a_step_trains_one_step() -> None:
    # 50.1 steps end where 50 began: the rung still trains step 50
    assert Segment(1, 2, 0.501, 0.5, 0.501, 0.501).steps(100) == (50, 51, 51)
    assert Segment(1, 2, 0.6, 0.5, 0.6, 1.0).steps(100) == (50, 60, 100)


class Clock:
    """A study clock that moves only when told."""

    def __init__(self) -> None:
        self.seconds = 100.0

    def __call__(self) -> float:
        return self.seconds


def test_a_trials_phases_are_unmarked_until_a_phase_runs_and_the_clock_is_put_back_after() -> None:
    clock = Clock()
    with timed_trial(clock) as unmarked:
        clock.seconds += 5.0  # set-up only
    assert (unmarked.marked, unmarked.seconds) == (False, {"training": 0.0, "evaluation": 0.0, "checkpoint": 0.0})
    with timed_trial(clock) as outer:
        with timed_trial(clock) as inner, trial_phase("training"):
            clock.seconds += 2.0
        with trial_phase("evaluation"):  # the outer trial's again
            clock.seconds += 3.0
    assert (inner.marked, inner.seconds["training"], inner.seconds["evaluation"]) == (True, 2.0, 0.0)
    assert (outer.marked, outer.seconds["training"], outer.seconds["evaluation"]) == (True, 0.0, 3.0)
    assert trials._clock is None
    with trial_phase("training"):  # outside any trial: only runs the block
        clock.seconds += 7.0
    assert outer.seconds["training"] == 0.0


def test_a_typed_fraction_names_a_study_fraction_within_a_millionth_of_the_larger() -> None:
    assert match_fraction(1.0000010000005, [0.5, 1.0]) == 1.0  # 1.0000005e-6 off: within 1e-6 of the larger
    assert match_fraction(1.0000011, [0.5, 1.0]) == 1.0000011
    assert match_fraction(0.1111, [0.1111111, 1.0]) == 0.1111  # 1e-4 off: the typed value
