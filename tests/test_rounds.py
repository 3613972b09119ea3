"""Timing in interleaved rounds: slowed visits recognised and measured again, disturbed cells marked, and a
sweep whose staircase survives a competing process."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import layerprof.measure
import layerprof.sweep as sweep
from layerprof.cli import app
from layerprof.ladder import build_ladder
from layerprof.models import LoadedModel
from layerprof.profile import SweepSettings, load_profile
from layerprof.rounds import CellTiming, Visit, slow_rounds
from layerprof.sweep import VisitPlan, profile_model
from layerprof.tables import ladder_summary_lines
from layerprof.workloads import Workload


def visits(*medians: float, slow: tuple[int, ...] = ()) -> CellTiming:
    return CellTiming([Visit(index, [value] * 3, slow_round=index in slow) for index, value in enumerate(medians)])


def test_a_visit_well_above_the_cells_median_is_left_out() -> None:
    timing = visits(10.0, 10.2, 9.9, 14.0, 10.1)
    assert timing.flagged() == [False, False, False, True, False]
    assert timing.clean_medians() == [10.0, 10.2, 9.9, 10.1]
    assert timing.settled(min_visits=3, tolerance=0.05) and not timing.settled(min_visits=3, tolerance=0.001)
    assert timing.disturbance(min_visits=3) is None  # four clean visits outweigh one slowed visit


def test_visits_in_slow_rounds_are_left_out_whatever_their_time() -> None:
    timing = visits(10.0, 10.1, 10.0, 10.0, slow=(1,))
    assert timing.flagged() == [False, True, False, False]
    assert slow_rounds([5.0, 5.2, 7.0, 5.1]) == [False, False, True, False]  # 40% above the quickest round


def test_a_cell_with_too_few_clean_visits_is_disturbed_and_says_why() -> None:
    timing = visits(10.0, 25.0, 10.3, 26.0, 24.0, slow=(1, 3))
    reason = timing.disturbance(min_visits=3)
    assert reason is not None and "3 of 5 visits were slowed" in reason and "2 in rounds" in reason
    assert "2 clean visit(s)" in reason
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
        return layerprof.measure.StepTimes([COST_MS[z] * (factor if slow else 1.0)] * count)

    original_next = sweep.next_visit

    def tracked_next(*args, **kwargs):  # noqa: ANN002, ANN003
        state["round"] = args[-1]
        return original_next(*args, **kwargs)

    references = iter(range(1000))

    def fake_reference(device) -> float:  # noqa: ANN001
        index = next(references)  # called once after each round, the first included
        return 2.0 * (factor if index in slow_rounds_at and slow_cells == set(COST_MS) else 1.0)

    monkeypatch.setattr(sweep, "time_window", fake_window)
    monkeypatch.setattr(sweep, "next_visit", tracked_next)
    monkeypatch.setattr(sweep, "reference_workload_ms", fake_reference)
    settings = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(1, 2, 3, 4), warmup_steps=1, min_steps=10,
                             max_steps=30, median_tolerance=0.02)  # fmt: skip
    return profile_model(loaded, layers, settings, torch.device("cpu")), visited


def test_quiet_cells_settle_after_the_minimum_visits_interleaved(monkeypatch: pytest.MonkeyPatch) -> None:
    profile, visited = scripted_sweep(monkeypatch, set(), set(), 1.0)
    for z, cost in COST_MS.items():
        row = profile.row(2, z)
        assert row.step_time_ms == cost and row.visits == 3 and row.measured_steps == 15
        assert row.slow_visits == [] and row.disturbed is False
    # the first round in order (z rising, for out-of-memory skips), then every round visits every cell
    assert [z for r, z in visited if r == 0] == [1, 2, 3, 4]
    assert sorted(z for r, z in visited if r == 1) == [1, 2, 3, 4]


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
    monkeypatch.setattr(sweep.time, "perf_counter", lambda: float(next(clock)))
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
        return layerprof.measure.StepTimes([COST_MS[z]] * count)

    monkeypatch.setattr(sweep, "time_window", fake_window)
    monkeypatch.setattr(sweep, "reference_workload_ms", lambda device: 2.0)
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


# ---------------------------------------------------------------- a real competing process


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    value = 0
    while time.perf_counter() < end:
        value += 1


def sweep_ratios(tmp_path: Path, name: str) -> dict[int, float]:
    example = Path(__file__).parent.parent / "examples" / "custom_model.py"
    out = tmp_path / f"{name}.json"
    result = CliRunner().invoke(
        app, ["profile", f"{example}:mlp", "--input-shape", "64", "--set", "width=1024", "--set", "depth=3",
              "--batch-sizes", "128", "--layers", "1,3,5", "--warmup", "3", "--min-steps", "15", "--steps", "40",
              "--threads", "1", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    profile = load_profile(out)
    full = profile.row(128, 5).step_time_ms
    return {row.trainable_layers: row.step_time_ms / full for row in profile.rows}


def test_the_staircase_survives_a_competing_process(tmp_path: Path) -> None:
    """Two busy processes share this machine's cores for the first seconds of a sweep: the order of the cells
    and their ratios to full training stay close to a quiet run's."""
    quiet = sweep_ratios(tmp_path, "quiet")
    context = multiprocessing.get_context("spawn")
    rivals = [context.Process(target=busy, args=(4.0,)) for _ in range(2)]
    for rival in rivals:
        rival.start()
    try:
        noisy = sweep_ratios(tmp_path, "noisy")
    finally:
        for rival in rivals:
            rival.join()
    assert sorted(quiet, key=quiet.get) == sorted(noisy, key=noisy.get) == [1, 3, 5]
    for z in (1, 3):
        assert noisy[z] == pytest.approx(quiet[z], rel=0.3), (quiet, noisy)
