"""Timing in interleaved rounds: slowed visits recognised and measured again, disturbed cells marked. (A sweep
beside a real competing process depends on the machine's load: `benchmarks/bench_noisy_neighbour.py --quick`.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import layerprof.measure.cells as cells
import layerprof.measure.instruments
import layerprof.measure.jobs as jobs
from layerprof.fidelity.ladder import build_ladder
from layerprof.measure.cells import VisitPlan
from layerprof.measure.jobs import profile_model
from layerprof.measure.rounds import CellTiming, Visit, slow_rounds
from layerprof.outputs.tables import ladder_summary_lines
from layerprof.profile import SweepSettings
from layerprof.sources.models import LoadedModel
from layerprof.sources.workloads import Workload


def visits(*medians: float, slow: tuple[int, ...] = ()) -> CellTiming:
    return CellTiming([Visit(index, [value] * 3, slow_round=index in slow) for index, value in enumerate(medians)])


def test_a_visit_well_above_the_cells_median_is_left_out() -> None:
    timing = visits(10.0, 10.2, 9.9, 14.0, 10.1)
    assert timing.flagged() == [False, False, False, True, False]
    assert timing.clean_medians() == [10.0, 10.2, 9.9, 10.1]
    assert timing.settled(min_visits=3, tolerance=0.05) and not timing.settled(min_visits=3, tolerance=0.001)
    assert timing.disturbance(min_visits=3) is None  # four clean visits outweigh one slowed visit


def test_a_cell_settles_when_the_interval_of_its_median_lies_within_the_tolerance_on_both_sides() -> None:
    """Four clean visits: the 95% interval of their median spans the first to the last (10 to 12 ms here), so
    12 ms is 20% above the 10 ms median: settled within 25%, not within 10%. Equal visits settle at 0%."""
    timing = visits(10.0, 10.0, 10.0, 12.0)
    assert timing.flagged() == [False, False, False, False]
    assert not timing.settled(min_visits=3, tolerance=0.1)
    assert timing.settled(min_visits=3, tolerance=0.25)
    assert not visits(8.5, 10.0, 10.0, 10.0).settled(min_visits=3, tolerance=0.1)  # 15% below
    assert visits(10.0, 10.0, 10.0).settled(min_visits=3, tolerance=0.0)  # the interval's ends on the limits
    assert not visits(10.0, 10.0, 10.0).settled(min_visits=4, tolerance=0.5)


def test_visits_in_slow_rounds_are_left_out_whatever_their_time() -> None:
    timing = visits(10.0, 10.1, 10.0, 10.0, slow=(1,))
    assert timing.flagged() == [False, True, False, False]
    assert slow_rounds([5.0, 5.2, 7.0, 5.1]) == [False, False, True, False]  # 40% above the quickest round
    assert slow_rounds([]) == []


def test_slow_rounds_are_judged_against_the_quickest_round_not_the_median() -> None:
    """The quickest round took 5.0 ms: 6.0 ms is the limit (20% above it), so 6.5-6.7 ms are slow, although they
    are within 20% of the median round (6.6 ms; limit 7.92 ms)."""
    assert slow_rounds([5.0, 6.5, 6.6, 6.7, 8.0]) == [False, True, True, True, True]
    assert slow_rounds([5.0, 6.0, 6.01]) == [False, False, True]  # exactly 20% above is not slow


def test_a_slow_visit_is_judged_against_the_cells_quickest_visit() -> None:
    """Quickest 8.0 ms: visits above 10.0 ms (25% more) are slowed, although 10.5 is within 25% of the median."""
    timing = visits(8.0, 10.0, 10.5, 10.4, 10.6)
    assert timing.flagged() == [False, False, True, True, True]
    assert timing.clean_medians() == [8.0, 10.0]


@pytest.mark.parametrize(
    ("medians", "slow", "disturbed"),
    [
        ((10.0,) * 6, (2, 3, 4, 5), False),  # 4 of 6 slowed: exactly two thirds, 2 clean visits remain
        ((10.0,) * 7, (2, 3, 4, 5, 6), True),  # 5 of 7: more than two thirds
        ((10.0,) * 3, (2,), False),  # 1 of 3
        ((10.0,) * 3, (1, 2), True),  # 2 of 3 slowed, but 1 clean visit is fewer than the minimum of 2
    ],
)
def test_a_cell_is_disturbed_beyond_two_thirds_of_its_visits_slowed(medians, slow, disturbed: bool) -> None:
    timing = visits(*medians, slow=slow)
    reason = timing.disturbance(min_visits=2)
    assert (reason is not None) == disturbed, reason
    if disturbed:
        assert reason.startswith(f"{len(slow)} of {len(medians)} visits were slowed by other work (up to 1.0x")


def test_a_cell_with_too_few_clean_visits_is_disturbed_and_says_why() -> None:
    timing = visits(10.0, 25.0, 10.3, 26.0, 24.0, slow=(1, 3))
    reason = timing.disturbance(min_visits=3)
    # the clean visits' median is 10.15 ms; the slowest slowed visit 26 ms: 2.6x
    assert reason == (
        "3 of 5 visits were slowed by other work (up to 2.6x, 2 in rounds the reference workload ran slow); "
        "2 clean visit(s) remain"
    )
    every = visits(20.0, 30.0, slow=(0, 1)).disturbance(min_visits=1)  # no clean visit: against the quickest
    assert every == (
        "2 of 2 visits were slowed by other work (up to 1.5x, 2 in rounds the reference workload ran slow); "
        "0 clean visit(s) remain"
    )
    assert not visits(10.0, 10.1).settled(min_visits=3, tolerance=0.5)  # too few visits to settle at all


@pytest.mark.parametrize(
    ("steps", "plan"),
    [
        ({"min_steps": 3, "max_steps": 3}, VisitPlan(3, 1, 1, 1)),  # one visit: exactly 3 timed steps
        ({"min_steps": 15, "max_steps": 30, "warmup_steps": 10}, VisitPlan(5, 3, 6, 1)),  # the defaults
        ({"min_steps": 100, "max_steps": 100, "warmup_steps": 100}, VisitPlan(5, 20, 20, 1)),  # the paper's
        ({"min_steps": 10, "max_steps": 50, "steps_per_visit": 10, "rewarm_steps": 2}, VisitPlan(10, 3, 5, 1)),
    ],
)
def test_visit_plans(steps: dict, plan: VisitPlan) -> None:
    defaults = {"warmup_steps": 1}
    settings = SweepSettings(batch_sizes=(1,), trainable_layer_counts=(1,), **{**defaults, **steps})
    assert VisitPlan.of(settings) == plan


# ---------------------------------------------------------------- a sweep on a scripted clock


class Staircase(nn.Module):
    """Four layers; the step's cost is scripted per trainable-layer count, not measured."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


COST_MS = {1: 10.0, 2: 20.0, 3: 40.0, 4: 80.0}


def scripted_sweep(monkeypatch: pytest.MonkeyPatch, slow_rounds_at: set[int], slow_cells: set[int], factor: float):
    """Every visit of z lasts COST_MS[z]; in `slow_rounds_at` the cells `slow_cells` run `factor` slower, and the
    reference workload after those rounds too."""
    model = Staircase()
    loaded = LoadedModel("staircase", "user", "staircase", model, Workload("tensor-input", input_shape=(4,)), (), {})
    layers = loaded.split()
    state = {"round": 0}
    visited: list[tuple[int, int]] = []

    def trainable_layers() -> int:
        return sum(1 for layer in model.layers if layer.weight.requires_grad)

    def fake_window(step, device, count):  # noqa: ANN001
        z = trainable_layers()
        visited.append((state["round"], z))
        slow = state["round"] in slow_rounds_at and z in slow_cells
        return layerprof.measure.instruments.StepTimes([COST_MS[z] * (factor if slow else 1.0)] * count)

    original_next = jobs.next_visit

    def tracked_next(*args, **kwargs):  # noqa: ANN002, ANN003
        state["round"] = args[-1]
        return original_next(*args, **kwargs)

    references = iter(range(1000))

    def fake_reference(device) -> float:  # noqa: ANN001
        index = next(references)  # called once after each round, the first included
        return 2.0 * (factor if index in slow_rounds_at and slow_cells == set(COST_MS) else 1.0)

    monkeypatch.setattr(cells, "time_window", fake_window)
    monkeypatch.setattr(jobs, "next_visit", tracked_next)
    monkeypatch.setattr(jobs, "reference_workload_ms", fake_reference)
    settings = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(1, 2, 3, 4), warmup_steps=1, min_steps=10,
                             max_steps=30, median_tolerance=0.02)  # fmt: skip
    return profile_model(loaded, layers, settings, torch.device("cpu")), visited


def test_quiet_cells_settle_after_the_minimum_visits_interleaved(monkeypatch: pytest.MonkeyPatch) -> None:
    profile, visited = scripted_sweep(monkeypatch, set(), set(), 1.0)
    for z, cost in COST_MS.items():
        row = profile.row(2, z)
        assert row.step_time_ms == cost and row.visits == 3 and row.measured_steps == 15
        assert row.slow_visits == [] and row.disturbed is False
    # the first round in order (z rising, for out-of-memory skips), then every round visits every cell once, in
    # a new order: two timed rounds, neither in the first round's order nor in each other's
    orders = [[z for r, z in visited if r == number] for number in range(3)]
    assert orders[0] == [1, 2, 3, 4] and max(r for r, _ in visited) == 2
    assert sorted(orders[1]) == sorted(orders[2]) == [1, 2, 3, 4]
    assert orders[1] != orders[0] and orders[2] != orders[0] and orders[1] != orders[2], orders


def test_a_disturbed_round_is_left_out_and_measured_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # round 1 runs every cell three times slower and slows the reference workload too
    profile, visited = scripted_sweep(monkeypatch, {1}, set(COST_MS), 3.0)
    for z, cost in COST_MS.items():
        row = profile.row(2, z)
        assert row.step_time_ms == cost, row  # the slowed round does not count
        # the round that ran slow, and the next (the reference workload before it ran slow): both made again
        assert row.slow_visits == [1, 2] and row.visits == 3 and row.disturbed is False
        assert len(row.visit_medians_ms) == 5 and row.visit_medians_ms[1] == 3 * cost
    assert max(r for r, _ in visited) == 4  # two rounds more than a quiet sweep


def test_cells_that_never_get_enough_quiet_visits_are_marked(monkeypatch: pytest.MonkeyPatch) -> None:
    # the machine turns busy after the first round and stays busy: only the first visits are clean
    profile, visited = scripted_sweep(monkeypatch, set(range(1, 100)), set(COST_MS), 2.5)
    for z, cost in COST_MS.items():
        row = profile.row(2, z)
        assert row.disturbed is True and "1 clean visit(s) remain" in row.disturbed_reason, row.disturbed_reason
        assert row.step_time_ms == cost  # the figure rests on the one quiet visit
        assert len(row.visit_medians_ms) == 12  # twice the most clean visits --steps allows, then it gives up
    ladder = build_ladder(profile, eta=2)
    assert all(rung.disturbed for rung in ladder.rungs)
    assert any("rest on cells other work disturbed" in line for line in ladder_summary_lines(ladder))


def test_max_time_stops_the_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(0, 10_000, 7))
    monkeypatch.setattr(jobs.time, "perf_counter", lambda: float(next(clock)))
    model = Staircase()
    loaded = LoadedModel("staircase", "user", "staircase", model, Workload("tensor-input", input_shape=(4,)), (), {})
    settings = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(1, 4), warmup_steps=1, min_steps=50,
                             max_steps=50, max_time_s=30.0)  # fmt: skip
    profile = profile_model(loaded, loaded.split(), settings, torch.device("cpu"))
    assert profile.complete and all(row.ok and row.visits < 10 for row in profile.rows)


def test_a_cell_failing_in_a_later_round_keeps_its_figures_and_the_sweep_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = Staircase()
    loaded = LoadedModel("staircase", "user", "staircase", model, Workload("tensor-input", input_shape=(4,)), (), {})
    layers = loaded.split()
    visits_of: dict[int, int] = {}

    def fake_window(step, device, count):  # noqa: ANN001
        z = sum(1 for layer in model.layers if layer.weight.requires_grad)
        visits_of[z] = visits_of.get(z, 0) + 1
        if z == 3 and visits_of[z] == 2:  # its first timed round
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return layerprof.measure.instruments.StepTimes([COST_MS[z]] * count)

    monkeypatch.setattr(cells, "time_window", fake_window)
    monkeypatch.setattr(jobs, "reference_workload_ms", lambda device: 2.0)
    settings = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(1, 2, 3, 4), warmup_steps=1, min_steps=10,
                             max_steps=30, median_tolerance=0.02)  # fmt: skip
    profile = profile_model(loaded, layers, settings, torch.device("cpu"))
    assert profile.complete
    failed = profile.row(2, 3)
    assert failed.status == "oom" and "failed in timed round 1" in failed.message
    assert "CUDA out of memory" in failed.message and failed.step_time_ms == 40.0  # its first visit's figure
    assert visits_of[3] == 2  # never visited again
    for z in (1, 2, 4):
        assert profile.row(2, z).ok and profile.row(2, z).visits == 3 and visits_of[z] == 3
