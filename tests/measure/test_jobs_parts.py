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


def test_one_step_per_visit_is_the_least_a_sweep_takes() -> None:
    from layerprof.errors import LayerprofError
    from layerprof.measure.jobs import validate_settings

    settings = SweepSettings(batch_sizes=(8,), trainable_layer_counts=(1,))
    validate_settings(replace(settings, steps_per_visit=1))
    with pytest.raises(LayerprofError, match="^--steps-per-visit must be at least 1, got 0$"):
        validate_settings(replace(settings, steps_per_visit=0))


def test_max_time_runs_out_counted_from_the_sweeps_start() -> None:
    assert not _rounds({}, max_time_s=1000.0, ago=5.0).out_of_time()
    assert _rounds({}, max_time_s=4.0, ago=5.0).out_of_time()
    assert not _rounds({}, max_time_s=None, ago=1e9).out_of_time()


def test_busy_reason_names_the_slowest_round_against_the_quickest() -> None:
    rounds = _rounds({})
    rounds.reference_ms = [10.0, 11.0]  # 10% slower: not slow
    assert rounds.busy_reason() is None
    rounds.reference_ms = [10.0, 30.0, 12.0]
    reason = rounds.busy_reason()
    assert reason is not None and reason.startswith(
        "other work is slowing this machine: the reference workload ran 3.0x"
    )


def test_adapters_in_every_layer_are_one_cell_per_batch_size_at_full_training() -> None:
    from layerprof.measure.jobs import resolve_settings
    from layerprof.parsing import LayerSelection

    settings = SweepSettings(batch_sizes=(8,), trainable_layer_counts=())
    workload = SimpleNamespace(default_batch_sizes=(4, 16))
    selection = LayerSelection("1,2")
    lora_all = replace(settings, adapter="lora", adapter_layers="all")
    assert resolve_settings(lora_all, workload, 4, selection).trainable_layer_counts == (4,)  # type: ignore[arg-type]
    lora_last = replace(settings, adapter="lora")
    assert resolve_settings(lora_last, workload, 4, selection).trainable_layer_counts == (1, 2)  # type: ignore[arg-type]
    plain = replace(settings, adapter_layers="all")  # no adapters: --adapter-layers says nothing
    resolved = resolve_settings(replace(plain, batch_sizes=()), workload, 4, selection)  # type: ignore[arg-type]
    assert (resolved.batch_sizes, resolved.trainable_layer_counts) == ((4, 16), (1, 2))


def test_an_interrupted_profile_of_another_workload_names_it() -> None:
    ours = bare_profile([], 2)
    wider = replace(ours, workload=replace(ours.workload, input_shape=(8,)))
    difference = sweep_difference(ours, wider)
    assert difference is not None and difference.startswith("workload input_shape: ")
    assert difference.endswith("[4] there, [8] now")


def test_cells_are_numbered_from_1_of_those_left_to_measure() -> None:
    profile = bare_profile([Row(8, 1, "ok")], 3)  # z=1 finished before: kept, not counted
    profile.settings = SweepSettings(batch_sizes=(8,), trainable_layer_counts=(1, 2, 3))
    started: list[tuple[int, int, int, int]] = []
    observer = SimpleNamespace(cell_started=lambda *args: started.append(args), cell_finished=lambda row: None)
    _cells_in_order(
        profile, profile.model.layers, profile.settings, lambda b, z: Row(b, z, "ok"), observer, lambda: None
    )  # type: ignore[arg-type]
    assert started == [(8, 2, 1, 2), (8, 3, 2, 2)]


def test_timed_rounds_give_each_row_its_batch_sizes_throughput() -> None:
    # a 10 ms step at batch 8 of a workload with 3 items per sample: 2,400 items a second
    profile = bare_profile([Row(8, 2, "ok")], 2)
    workload = SimpleNamespace(items_per_batch=lambda batch_size: 3 * batch_size)
    settings = SweepSettings(batch_sizes=(8,), trainable_layer_counts=(2,), steps_per_visit=5)
    context = SimpleNamespace(settings=settings, device=torch.device("cpu"), loaded=SimpleNamespace(workload=workload))
    timings = {(8, 2): CellTiming([Visit(0, [10.0] * 5)])}
    rounds = TimedRounds(context, profile, timings, [], time.perf_counter())  # type: ignore[arg-type]
    rounds._update_rows()
    assert profile.rows[0].throughput_per_s == pytest.approx(2400.0)


def test_a_first_visits_throughput_is_its_batch_sizes_items_and_its_seconds_add_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from layerprof.measure.jobs import profile_model
    from layerprof.sources.models import LoadedModel
    from layerprof.sources.workloads import Workload
    from tests.conftest import linear_stack

    loaded = LoadedModel("stack", "user", "stack", linear_stack(8, 3), Workload("tensor-input", (8,)), (), {})
    settings = SweepSettings(batch_sizes=(4,), trainable_layer_counts=(1,), warmup_steps=1, min_steps=1, max_steps=1)
    saved: list[int] = []
    environment = bare_profile([], 1).environment  # not described here: that measures this machine
    monkeypatch.setattr(jobs, "reference_workload_ms", lambda device: 1.0)  # nor its busy-ness
    profile = profile_model(
        loaded, loaded.split(), settings, torch.device("cpu"), save=lambda p: saved.append(1), environment=environment
    )
    (row,) = profile.rows
    assert row.ok and row.step_time_ms and row.throughput_per_s
    assert row.throughput_per_s * row.step_time_ms / 1000 == pytest.approx(4.0)  # 4 samples a step, not 1 (z)
    assert 0 < profile.timing.in_steps_s <= profile.timing.sweep_wall_s
    assert saved  # saved at the end at least


def test_the_models_own_frozen_parameters_are_named_three_then_counted() -> None:
    from layerprof.errors import FreezingWarning
    from layerprof.measure.jobs import warn_freezing
    from layerprof.profile import Layer

    def layer(index: int, frozen: tuple[str, ...]) -> Layer:
        return Layer(index, f"l{index}", "Linear", 10, (f"l{index}.w",), 10, frozen_names=frozen, frozen_params=5)

    settings = SweepSettings(batch_sizes=(8,), trainable_layer_counts=(), eval_frozen=True)
    three = [layer(0, ("a", "b")), layer(1, ("c",))]
    with pytest.warns(FreezingWarning) as said:
        warn_freezing(torch.nn.Linear(1, 1), three, settings)
    assert str(said[0].message).startswith("the model's own code froze 10 of 20 parameters (a, b, c): they stay")
    with pytest.warns(FreezingWarning) as said:
        warn_freezing(torch.nn.Linear(1, 1), [*three, layer(2, ("d", "e"))], settings)
    assert "froze 15 of 30 parameters (a, b, c and 2 more)" in str(said[0].message)


@pytest.mark.parametrize("per_layer", [False, True])
def test_a_measured_job_saves_its_layer_times_once_they_are_measured(
    monkeypatch: pytest.MonkeyPatch, per_layer: bool
) -> None:
    """`measure_job`: the sweep saves after each cell (its own `save`); --per-layer's times come after it, and the
    profile holding them is saved once more (else an interrupt-free run would leave them only in memory)."""
    profile = bare_profile([Row(8, 2, "ok")], 2)
    monkeypatch.setattr(jobs, "profile_model", lambda *args, **kwargs: profile)
    monkeypatch.setattr(jobs, "CellContext", lambda *args: "context")
    monkeypatch.setattr(jobs, "layer_times", lambda context, measured: [SimpleNamespace(to_dict=lambda: {"z": 2})])
    saved: list[object] = []
    job = SimpleNamespace(
        loaded=object(), layers=profile.model.layers, settings=profile.settings, device=torch.device("cpu"),
        environment=None, resume=None, per_layer=per_layer,
    )  # fmt: skip
    assert jobs.measure_job(job, None, lambda p: saved.append(p.layer_times)) is profile  # type: ignore[arg-type]
    assert saved == ([[{"z": 2}]] if per_layer else [])
    assert profile.layer_times == ([{"z": 2}] if per_layer else None)
