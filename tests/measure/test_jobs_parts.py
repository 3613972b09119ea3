"""Parts of a measured sweep pinned with hand-worked values: a checkpoint after every cell, the time the timed
rounds still need (and --max-time's cap on it), what makes an interrupted profile another sweep's, and which batch
sizes `--per-layer` times (the cell and the layer timer stood in for: only the choice is under test)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from layerprof.measure import jobs
from layerprof.measure.jobs import TimedRounds, _cells_in_order, layer_times, sweep_difference
from layerprof.measure.rounds import CellTiming, Visit
from layerprof.profile import Row, SweepSettings
from tests.conftest import bare_profile


def test_every_cell_is_saved_as_soon_as_it_ran() -> None:
    profile = bare_profile([], 2)
    profile.settings = SweepSettings(batch_sizes=(8,), trainable_layer_counts=(1, 2))
    saved: list[int] = []
    _cells_in_order(
        profile,
        profile.model.layers,
        profile.settings,
        lambda batch_size, z: Row(batch_size, z, "ok"),
        None,
        lambda: saved.append(len(profile.rows)),
    )
    assert saved == [1, 2]


def _rounds(
    timings: dict[tuple[int, int], CellTiming], max_time_s: float | None = None, ago: float = 0.0
) -> TimedRounds:
    settings = SweepSettings(batch_sizes=(8,), trainable_layer_counts=(1, 2), max_time_s=max_time_s)
    context = SimpleNamespace(settings=settings)
    return TimedRounds(context, bare_profile([], 2), timings, [], time.perf_counter() - ago)  # type: ignore[arg-type]


def test_the_seconds_left_come_from_the_visits_still_allowed() -> None:
    # defaults: visits of 5 steps, 3 to 6 clean ones, 1 re-warm-up step: one visit of a 10 ms cell is 6 x 10 ms, and
    # a cell with one clean visit has 5 more: 0.3 s (the cell never visited adds nothing)
    timings = {(8, 1): CellTiming([Visit(0, [10.0])]), (8, 2): CellTiming()}
    assert _rounds(timings).seconds_left() == pytest.approx(0.3)
    assert _rounds(timings, max_time_s=1000.0).seconds_left() == pytest.approx(0.3)
    assert _rounds(timings, max_time_s=1.0, ago=100.0).seconds_left() == 0.0  # --max-time ran out


def test_no_seconds_left_before_any_cell_was_measured() -> None:
    assert _rounds({(8, 1): CellTiming()}).seconds_left() is None


def test_an_interrupted_profile_of_another_sweep_names_the_first_difference() -> None:
    ours = bare_profile([], 2, device_name="A100")
    unwrapped = replace(ours, model=replace(ours.model, unwrap=("encoder",)))
    assert sweep_difference(unwrapped, ours) == "--unwrap: ['encoder'] there, [] now"
    assert sweep_difference(ours, bare_profile([], 2, device_name="H100")) == "device: 'A100' there, 'H100' now"
    tf32 = replace(ours, environment=replace(ours.environment, numerics={"tf32": True}))
    assert sweep_difference(ours, tf32) == "numeric settings: {} there, {'tf32': True} now"
    assert sweep_difference(ours, ours) is None


def test_per_layer_times_run_only_where_full_training_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    steps: list[int] = []

    @contextmanager
    def prepared_cell(context: object, batch_size: int, trainable_layers: int) -> Iterator[SimpleNamespace]:
        yield SimpleNamespace(batch_size=batch_size, step=lambda: steps.append(batch_size))

    monkeypatch.setattr(jobs, "prepared_cell", prepared_cell)
    monkeypatch.setattr(
        "layerprof.measure.layertimes.measure_layer_times", lambda cell, layers, device: f"B={cell.batch_size}"
    )
    rows = [Row(4, 1, "ok"), Row(8, 2, "ok"), Row(16, 2, "oom"), Row(32, 2, "ok")]
    profile = bare_profile(rows, 2)
    context = SimpleNamespace(
        layers=profile.model.layers, device=torch.device("cpu"), settings=replace(profile.settings, warmup_steps=2)
    )
    assert layer_times(context, profile) == ["B=8", "B=32"]  # type: ignore[arg-type]
    assert steps == [8, 8, 32, 32]  # the warm-up steps first
