"""cells.py part by part (issue 40's mutation survivors): which module a cell's step runs (the compiled one unless
told to run eager), what an update leaves behind (no gradients; a gradient scaler that has seen an overflow backs
off), and a row's parameter counts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from layerprof.errors import DeviceFailure
from layerprof.measure import cells
from layerprof.measure.cells import (
    Cell,
    CellContext,
    VisitPlan,
    first_visit,
    instrumented_step,
    new_row,
    prepared_cell,
    record_timing,
    run_cell,
)
from layerprof.measure.instruments import StepTimes
from layerprof.measure.rounds import CellTiming, Visit
from layerprof.profile import Layer, Row, SweepSettings
from layerprof.sources.builders import LoadedModel
from layerprof.sources.models import build_model
from layerprof.sources.names import ModelOptions
from layerprof.sources.workloads import Workload

WORKLOAD = Workload("tensor-input", input_shape=(2,))


class Counted(nn.Module):
    """Stands in for torch.compile's wrapper: the model, counting its calls."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x)


def a_cell(scaler: torch.amp.GradScaler | None = None) -> Cell:
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    params = list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=0.1)
    batch = WORKLOAD.make_batch(3, torch.device("cpu"))
    return Cell(model, WORKLOAD, params, optimizer, batch, Row(3, 1, "ok"), scaler=scaler)


def two_linears(tmp_path: Path, width: int) -> LoadedModel:
    """A factory's model of two Linear(width, width), built as `profile` builds it."""
    factory = tmp_path / "tiny.py"
    linear = f"nn.Linear({width}, {width})"
    factory.write_text(f"from torch import nn\n\n\ndef make():\n    return nn.Sequential({linear}, {linear})\n")
    return build_model(f"{factory}:make", ModelOptions(input_shape=(width,)))


def test_a_step_runs_the_compiled_module_unless_the_cell_runs_eager() -> None:
    cell = a_cell()
    cell.compiled = counted = Counted(cell.model)
    cell.step()
    assert counted.calls == 1
    cell.eager = True  # the instrumented step
    cell.step()
    assert counted.calls == 1


def test_an_update_steps_and_leaves_no_gradient() -> None:
    cell = a_cell()
    before = cell.model.weight.detach().clone()
    cell.step()
    assert not torch.equal(cell.model.weight, before)
    assert all(param.grad is None for param in cell.params)
    cell.optimizer_steps = False  # an estimate's untraceable step: the gradients go all the same
    after = cell.model.weight.detach().clone()
    cell.step()
    assert torch.equal(cell.model.weight, after) and all(param.grad is None for param in cell.params)


def test_a_scaler_that_meets_an_overflow_skips_the_step_and_backs_off() -> None:
    cell = a_cell(torch.amp.GradScaler("cpu", init_scale=2.0**16))
    with torch.no_grad():
        cell.model.weight.fill_(float("inf"))  # every gradient overflows
    cell.step()
    assert cell.scaler is not None and cell.scaler.get_scale() == 2.0**15  # halved by update()
    assert all(param.grad is None for param in cell.params)


def test_a_rows_trainable_share_is_of_every_layers_parameters() -> None:
    layers = [Layer(0, "a", "Linear", 30, ("a.weight",), 30), Layer(1, "b", "Linear", 10, ("b.weight",), 10)]
    row = new_row(layers, 4, 1)
    assert (row.batch_size, row.trainable_layers, row.trainable_params, row.trainable_fraction) == (4, 1, 10, 0.25)
    assert new_row([Layer(0, "a", "Identity", 0, (), 0)], 2, 1).trainable_fraction == 0.0  # no parameters: no /0
    assert new_row([Layer(0, "a", "Linear", 1, ("a.weight",), 1)], 2, 1).trainable_fraction == 1.0


def test_a_measured_cpu_cell_runs_cpus_autocast_and_16_mixeds_scaler(tmp_path: Path) -> None:
    loaded = two_linears(tmp_path, 2)
    settings = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(1,), precision="16-mixed")
    context = CellContext(loaded, loaded.split(), settings, torch.device("cpu"))
    with prepared_cell(context, 2, 1) as cell:
        assert isinstance(cell.scaler, torch.amp.GradScaler)
        region = cell.autocast()
        assert isinstance(region, torch.autocast) and (region.device, region.fast_dtype) == ("cpu", torch.float16)
        assert cell.row.trainable_params == 6  # the last Linear(2, 2)
        cell.backward(cell.forward())  # gradients left behind, as a failed update leaves them
    assert (cell.optimizer, cell.batch, cell.scaler, cell.compiled) == (None, None, None, None)  # dropped on leaving
    assert [p.grad for p in loaded.model.parameters()] == [None] * 4
    assert all(p.requires_grad for p in loaded.model.parameters())  # unfrozen again


class StandInAdapters:
    """Stands in for PEFT's LoRA (apply_recipe): freezes the model and adds 8 trainable parameters of its own."""

    def __init__(self, loaded, *_: object) -> None:  # noqa: ANN001 - apply_recipe's signature
        self.model = loaded.model
        self.flags = [(param, param.requires_grad) for param in self.model.parameters()]
        for param, _ in self.flags:
            param.requires_grad_(False)
        self.model.adapter = nn.Linear(4, 2, bias=False)

    def remove(self) -> None:
        del self.model.adapter
        for param, flag in self.flags:
            param.requires_grad_(flag)


def test_an_adapter_cell_counts_its_adapters_and_a_checkpointed_cell_recomputes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = two_linears(tmp_path, 4)
    layers = loaded.split()
    monkeypatch.setattr(cells, "apply_recipe", StandInAdapters)
    lora = SweepSettings((2,), (1,), adapter="lora")
    with prepared_cell(CellContext(loaded, layers, lora, torch.device("cpu")), 2, 1) as cell:
        # the adapters' 8 parameters train, of the model's 40
        assert (cell.row.trainable_params, cell.row.trainable_fraction, cell.recomputes) == (8, 0.2, False)
    monkeypatch.undo()
    checkpointed = SweepSettings((2,), (1,), checkpointing="trainable")
    with prepared_cell(CellContext(loaded, layers, checkpointed, torch.device("cpu")), 2, 1) as cell:
        assert (cell.row.trainable_params, cell.row.trainable_fraction, cell.recomputes) == (20, 0.5, True)


@pytest.mark.parametrize(
    ("steps", "plan"),
    [
        ({}, (5, 3, 6, 1)),  # the defaults: 5 steps a visit, 3 to 6 clean visits (15 to 30 steps), 1 re-warm step
        ({"steps_per_visit": 8, "max_steps": 6, "min_steps": 5, "rewarm_steps": 4, "warmup_steps": 2}, (6, 1, 1, 2)),
        ({"steps_per_visit": 4, "min_steps": 22}, (4, 6, 8, 1)),  # ceil(22 / 4) visits at least, ceil(30 / 4) at most
        ({"steps_per_visit": 0}, (1, 15, 30, 1)),
    ],
)
def test_a_cells_visits_come_from_the_step_counts(steps: dict, plan: tuple) -> None:
    got = VisitPlan.of(SweepSettings((2,), (1,), **steps))
    assert (got.steps_per_visit, got.min_visits, got.max_visits, got.rewarm_steps) == plan


def test_a_rows_time_figures_come_from_its_clean_visits() -> None:
    visits = [Visit(0, [10.0, 10.0, 10.0], host_ms=[9.0]), Visit(1, [12.0, 12.0, 12.0], host_ms=[9.9])]
    visits.append(Visit(2, [11.0, 11.0, 11.0], host_ms=[9.9]))
    visits.append(Visit(3, [30.0, 30.0, 30.0], slow_round=True, host_ms=[1.0]))  # a slowed round: left out
    row = Row(4, 1, "ok", flops=2 * 10**9)
    record_timing(row, CellTiming(visits), SweepSettings((4,), (1,)), torch.device("cpu"), 32)
    assert (row.step_time_ms, row.step_time_mean_ms, row.measured_steps, row.visits) == (11.0, 11.0, 9, 3)
    assert (row.visit_medians_ms, row.slow_visits, row.time_source) == ([10.0, 12.0, 11.0, 30.0], [3], "perf-counter")
    assert (row.host_time_ms, row.host_bound) == (9.9, True)  # 9.9 >= 0.9 x 11
    assert row.throughput_per_s == pytest.approx(32 / 0.011)
    assert row.achieved_tflops == pytest.approx(2e9 / 0.011 / 1e12)


@pytest.mark.parametrize(("warmup", "forwards"), [(3, 3 + 2 + 1), (0, 0 + 2 + 1)])
def test_a_first_visit_warms_up_times_then_instruments_one_eager_step(
    tmp_path: Path, warmup: int, forwards: int
) -> None:
    loaded = two_linears(tmp_path, 2)
    settings = SweepSettings((2,), (1,), warmup_steps=warmup, steps_per_visit=2, min_steps=2, max_steps=2)
    context = CellContext(loaded, loaded.split(), settings, torch.device("cpu"))
    calls = []
    loaded.model.register_forward_hook(lambda *_: calls.append(1))
    row, visit, seconds = first_visit(context, 2, 1)
    assert visit is not None and len(visit.step_ms) == 2 and row.status == "ok" and 0.0 < seconds < 60.0
    assert len(calls) == forwards  # warm-up steps, timed steps, the instrumented step
    assert (row.memory_source, row.peak_memory_bytes) == ("cpu-tensor-tracker", row.tracked_peak_bytes)


def test_the_instrumented_step_runs_the_plain_model_and_leaves_the_compiled_one_for_timing() -> None:
    cell = a_cell()
    cell.compiled = counted = Counted(cell.model)
    instrumented_step(cell, torch.device("cpu"))
    assert (counted.calls, cell.eager, cell.row.memory_workspace_bytes) == (0, False, 0)
    assert cell.row.flops == cell.row.forward_flops + cell.row.backward_flops > 0


BROKEN = """from torch import nn


class Broken(nn.Sequential):
    def forward(self, x):
        if getattr(self, "armed", False):  # set once the model is split
            raise RuntimeError("boom\\nsecond line")
        return super().forward(x)


def make():
    return Broken(nn.Linear(2, 3), nn.Linear(3, 2))
"""


def test_a_cell_that_fails_is_a_row_of_its_counts_and_the_errors_first_line(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text(BROKEN)
    loaded = build_model(f"{tmp_path / 'broken.py'}:make", ModelOptions(input_shape=(2,)))
    context = CellContext(loaded, loaded.split(), SweepSettings((3,), (1,), warmup_steps=1), torch.device("cpu"))
    loaded.model.armed = True
    row, visit, seconds = first_visit(context, 3, 1)
    assert (row.batch_size, row.trainable_layers, row.status, row.message) == (3, 1, "error", "RuntimeError: boom")
    assert (row.trainable_params, row.trainable_fraction, row.step_time_ms, visit) == (8, 8 / 17, None, None)
    assert 0.0 < seconds < 60.0
    row, seconds = run_cell(context, 3, 1)
    assert (row.status, row.message, row.trainable_params) == ("error", "RuntimeError: boom", 8)
    assert 0.0 < seconds < 60.0


class Clock:
    """Stands in for `time_window`: runs the visit's steps and reports the times it is given, visit by visit."""

    def __init__(self, visit_ms: list[float]) -> None:
        self.visit_ms = visit_ms
        self.visits = 0

    def __call__(self, step, _device: torch.device, steps: int, **_: object) -> StepTimes:  # noqa: ANN001
        for _ in range(steps):
            step()
        ms = self.visit_ms[self.visits % len(self.visit_ms)]
        self.visits += 1
        return StepTimes([ms] * steps)


@pytest.mark.parametrize(
    ("visit_ms", "visits"),
    # settled at its least visits; a visit at twice the time, each second one, flagged: settled at three clean visits
    [([10.0], 3), ([10.0, 20.0], 5)],
)
def test_a_cell_measured_alone_is_visited_until_its_clean_visits_settle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, visit_ms: list[float], visits: int
) -> None:
    loaded = two_linears(tmp_path, 2)
    settings = SweepSettings((2,), (1,), warmup_steps=1, steps_per_visit=2, min_steps=6, max_steps=6)
    context = CellContext(loaded, loaded.split(), settings, torch.device("cpu"))
    monkeypatch.setattr(cells, "time_window", Clock(visit_ms))
    batches = []
    loaded.model.register_forward_hook(lambda _m, inputs, _o: batches.append(inputs[0].shape[0]))
    row, seconds = run_cell(context, 2, 1)
    assert (row.status, row.visits, row.measured_steps, len(row.visit_medians_ms)) == ("ok", 3, 6, visits)
    # each visit: 2 timed steps, after 1 warm-up step and 1 instrumented one (the first) or 1 re-warm step (the rest)
    assert batches == [2] * (4 + 3 * (visits - 1))
    assert row.throughput_per_s == pytest.approx(2 / (row.step_time_ms / 1000))
    assert 0.0 < seconds < 60.0


def test_a_visits_median_is_kept_to_the_nanosecond() -> None:
    row = Row(2, 1, "ok")
    record_timing(row, CellTiming([Visit(0, [1.23456789] * 3)]), SweepSettings((2,), (1,)), torch.device("cpu"), 2)
    assert (row.visit_medians_ms, row.host_time_ms, row.host_bound) == ([1.234568], None, None)  # no host figures


FROZEN_HEAD = """from torch import nn


def make():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 2))
    model[1].requires_grad_(False)  # the model's own code freezes its last layer
    return model
"""


def test_a_cell_that_fails_before_its_first_step_spent_no_time_in_steps(tmp_path: Path) -> None:
    (tmp_path / "frozen.py").write_text(FROZEN_HEAD)
    loaded = build_model(f"{tmp_path / 'frozen.py'}:make", ModelOptions(input_shape=(2,)))
    context = CellContext(loaded, loaded.split(), SweepSettings((3,), (1,)), torch.device("cpu"))
    row, visit, seconds = first_visit(context, 3, 1)  # z=1 trains nothing: refused while the cell is set up
    assert (row.status, visit, seconds) == ("error", None, 0.0)
    assert row.message is not None and "trains nothing" in row.message
    assert run_cell(context, 3, 1)[1] == 0.0


def test_a_row_below_the_host_bound_share_and_without_flops() -> None:
    row = Row(2, 1, "ok")  # no FLOPs counted (an estimate's untraceable step): no TFLOP/s either
    record_timing(
        row, CellTiming([Visit(0, [10.0] * 3, host_ms=[8.0])]), SweepSettings((2,), (1,)), torch.device("cpu"), 2
    )
    assert (row.host_time_ms, row.host_bound, row.achieved_tflops) == (8.0, False, 0.0)  # 8 < 0.9 x 10


def run_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, visit_ms: list[float], **steps: int) -> tuple:
    """`run_cell` of a cell of two Linear(2, 2) at z=1, batch 2, 2 steps a visit under a stand-in clock: the row, the
    visits it recorded (round, clean or not) and, per step, (batch size, whether the first layer trained)."""
    loaded = two_linears(tmp_path, 2)
    settings = SweepSettings((2,), (1,), steps_per_visit=2, median_tolerance=0.02, **steps)
    context = CellContext(loaded, loaded.split(), settings, torch.device("cpu"))
    monkeypatch.setattr(cells, "time_window", Clock(visit_ms))
    recorded = []
    monkeypatch.setattr(
        cells, "record_timing", lambda row, timing, *rest: recorded.append(timing) or record_timing(row, timing, *rest)
    )
    first = loaded.model[0].weight
    steps_seen = []
    loaded.model.register_forward_hook(
        lambda _m, inputs, _o: steps_seen.append((inputs[0].shape[0], first.requires_grad))
    )
    row, _ = run_cell(context, 2, 1)
    (timing,) = recorded
    return (
        row,
        [(visit.round_index, not flag) for visit, flag in zip(timing.visits, timing.flagged(), strict=True)],
        steps_seen,
    )


def test_a_settled_cell_stops_at_its_least_visits_below_its_most(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 3 to 5 visits (6 to 10 steps); --rewarm 0 still re-warms each later visit by one step
    row, visits, steps = run_alone(
        tmp_path, monkeypatch, [10.0], warmup_steps=1, rewarm_steps=0, min_steps=6, max_steps=10
    )
    assert (row.visits, visits) == (3, [(0, True)] * 3)
    assert steps == [(2, False)] * (1 + 2 + 1 + 2 * (1 + 2))  # warm-up, timed, instrumented; then re-warm, timed


def test_clean_visits_that_never_settle_stop_at_the_most(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 10 and 12 ms: both clean (within 25% of the quickest), their median's interval never within +-2%
    row, visits, steps = run_alone(
        tmp_path, monkeypatch, [10.0, 12.0], warmup_steps=2, rewarm_steps=2, min_steps=6, max_steps=10
    )
    assert (row.visits, row.visit_medians_ms, row.disturbed) == (5, [10.0, 12.0, 10.0, 12.0, 10.0], False)
    assert visits == [(0, True)] * 5  # a cell measured alone: every visit in round 0
    assert steps == [(2, False)] * (2 + 2 + 1 + 4 * (2 + 2))  # each later visit: 2 re-warm steps, 2 timed


def test_visits_slowed_one_after_another_stop_at_twice_the_most(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the first visit quick, every later one twice as slow: one clean visit ever, never settled; 3 visits at most
    row, visits, _ = run_alone(tmp_path, monkeypatch, [10.0] + [20.0] * 9, warmup_steps=1, min_steps=6, max_steps=6)
    assert visits == [(0, True)] + [(0, False)] * 5  # stopped at 2 x 3 visits
    assert (row.visits, row.disturbed, row.step_time_ms) == (1, True, 10.0)


class Seconds:
    """Stands in for the `time` module cells.py reads: perf_counter advances by `step` seconds at each call."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 100.0, step

    def perf_counter(self) -> float:
        self.now += self.step
        return self.now


@pytest.mark.parametrize(("step_s", "compile_ms"), [(1.0, 1000.0 - 10.0), (0.005, 0.0)])
def test_a_compiled_cells_first_step_is_its_compile_time_less_a_timed_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step_s: float, compile_ms: float
) -> None:
    # torch.compile stood in for by a counting wrapper, the clocks by given times: the first step took `step_s`,
    # the timed ones 10 ms each; a first step quicker than a timed one compiled nothing (never below 0)
    from layerprof.measure.environment import dynamo_cache_limits

    loaded = two_linears(tmp_path, 2)
    settings = SweepSettings((2,), (1,), warmup_steps=0, steps_per_visit=2, min_steps=2, max_steps=2)
    context = CellContext(loaded, loaded.split(), replace(settings, compile_mode="default"), torch.device("cpu"))
    compiled, limits = [], []

    def stand_in(model: nn.Module, mode: str) -> nn.Module:
        compiled.append((Counted(model), mode))
        limits.append(set(dynamo_cache_limits().values()))  # while the compiled cell is prepared
        return compiled[-1][0]

    monkeypatch.setattr(cells, "compiled_model", stand_in)
    monkeypatch.setattr(cells, "time_window", Clock([10.0]))
    monkeypatch.setattr(cells, "time", Seconds(step_s))
    before = dynamo_cache_limits()
    assert set(before.values()) != {256}
    row, visit, _ = first_visit(context, 2, 1)
    assert visit is not None and row.compile_time_ms == pytest.approx(compile_ms)
    ((counted, mode),) = compiled
    assert (mode, counted.calls) == ("default", 1 + 2)  # --warmup 0: one untimed (compiling) step, 2 timed
    assert limits == [{256}]  # every dynamo cache limit raised to 256 entries while the cell is prepared
    assert dynamo_cache_limits() == before  # restored once the cell is left


def test_a_sticky_cuda_error_stops_the_sweep_naming_the_cell(tmp_path: Path) -> None:
    (tmp_path / "sticky.py").write_text(BROKEN.replace("boom", "CUDA error: an illegal memory access"))
    loaded = build_model(f"{tmp_path / 'sticky.py'}:make", ModelOptions(input_shape=(2,)))
    context = CellContext(loaded, loaded.split(), SweepSettings((3,), (1,), warmup_steps=1), torch.device("cpu"))
    loaded.model.armed = True
    with pytest.raises(DeviceFailure, match=r"illegal memory access\) at batch 3, z=1;"):
        first_visit(context, 3, 1)


def test_the_cpu_has_no_cache_to_empty_and_no_collection_is_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    collections = []
    monkeypatch.setattr(cells, "gc", SimpleNamespace(collect=lambda: collections.append(1)))
    cells.release_cached_memory(torch.device("cpu"))
    assert collections == []
