"""The cell scaffold's context: one `CellContext` per sweep, and every cell runner called with it and each cell."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

import layerprof.measure.cells as cells
import layerprof.measure.jobs as jobs
from layerprof.errors import LayerprofError
from layerprof.measure.cells import CellContext, new_row, prepared_cell
from layerprof.measure.jobs import profile_model
from layerprof.profile import Row, SweepSettings
from layerprof.sources.models import LoadedModel
from layerprof.sources.workloads import Workload
from tests.conftest import linear_stack

EXAMPLE = str(Path(__file__).parents[2] / "examples" / "custom_model.py")
WIDTH, DEPTH = 8, 4  # four 8x8 layers without bias: 64 parameters each


def stack() -> LoadedModel:
    workload = Workload(family="tensor-input", input_shape=(WIDTH,))
    return LoadedModel("stack", "user", "stack", linear_stack(WIDTH, DEPTH), workload, (), {})


def settings(precision: str = "32-true") -> SweepSettings:
    return SweepSettings(batch_sizes=(2, 8), trainable_layer_counts=(1, 3), warmup_steps=1, min_steps=1,
                         max_steps=1, precision=precision)  # fmt: skip


@pytest.mark.parametrize(
    ("precision", "compute", "held"),
    [
        ("32-true", "float32", torch.float32),
        ("bf16-mixed", "bfloat16", torch.float32),  # mixed: parameters and inputs stay float32
        ("bf16-true", "bfloat16", torch.bfloat16),
        ("16-mixed", "float16", torch.float32),
    ],
)
def test_the_context_resolves_the_precision_once(precision: str, compute: str, held: torch.dtype) -> None:
    loaded = stack()
    context = CellContext(loaded, loaded.split(), settings(precision), torch.device("cpu"))
    assert context.precision.name == precision
    assert context.precision.dtype == compute
    assert context.parameter_dtype == held
    with prepared_cell(context, 2, 1) as cell:
        assert cell.batch[0].dtype == held  # the batch is made in the context's resolved dtype


def test_a_context_is_a_value_that_cannot_be_changed() -> None:
    loaded = stack()
    context = CellContext(loaded, loaded.split(), settings(), torch.device("cpu"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        context.device = torch.device("meta")  # type: ignore[misc]


def test_a_context_with_an_unknown_precision_is_refused_before_any_cell() -> None:
    loaded = stack()
    with pytest.raises(LayerprofError, match="--precision '8-true': choose one of 32-true"):
        CellContext(loaded, loaded.split(), settings("8-true"), torch.device("cpu"))


def test_a_cell_runner_is_called_with_the_sweeps_one_context_and_each_cell() -> None:
    loaded = stack()
    layers = loaded.split()
    calls: list[tuple[CellContext, int, int]] = []

    def runner(context: CellContext, batch_size: int, trainable_layers: int) -> tuple[Row, float]:
        calls.append((context, batch_size, trainable_layers))
        return new_row(context.layers, batch_size, trainable_layers), 0.0

    profile = profile_model(loaded, layers, settings(), torch.device("cpu"), cell_runner=runner)
    assert [(batch, z) for _, batch, z in calls] == [(2, 1), (2, 3), (8, 1), (8, 3)]
    contexts = {id(context) for context, _, _ in calls}
    assert len(contexts) == 1  # built once per sweep, not per cell
    context = calls[0][0]
    assert isinstance(context, CellContext)
    assert context.loaded is loaded
    assert list(context.layers) == layers
    assert context.settings.batch_sizes == (2, 8)
    assert context.device == torch.device("cpu")
    assert [(row.batch_size, row.trainable_layers, row.trainable_params) for row in profile.rows] == [
        (2, 1, 64), (2, 3, 192), (8, 1, 64), (8, 3, 192),
    ]  # fmt: skip


def test_the_measured_sweep_visits_each_cell_first_with_its_context(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = stack()
    layers = loaded.split()
    first: list[tuple[type, int, int]] = []
    later: list[tuple[type, int, int]] = []
    real_first, real_next = jobs.first_visit, jobs.next_visit

    def recorded_first(context, batch_size, trainable_layers):  # noqa: ANN001, ANN202
        first.append((type(context), batch_size, trainable_layers))
        return real_first(context, batch_size, trainable_layers)

    def recorded_next(context, batch_size, trainable_layers, round_index):  # noqa: ANN001, ANN202
        later.append((type(context), batch_size, trainable_layers))
        return real_next(context, batch_size, trainable_layers, round_index)

    monkeypatch.setattr(jobs, "first_visit", recorded_first)
    monkeypatch.setattr(jobs, "next_visit", recorded_next)
    profile = profile_model(loaded, layers, settings(), torch.device("cpu"))
    assert first == [(CellContext, 2, 1), (CellContext, 2, 3), (CellContext, 8, 1), (CellContext, 8, 3)]
    # --steps 1: one visit of one step is all a cell may take, so no timed round runs
    assert later == []
    assert [(row.key, row.status, row.trainable_params) for row in profile.rows] == [
        ((2, 1), "ok", 64), ((2, 3), "ok", 192), ((8, 1), "ok", 64), ((8, 3), "ok", 192),
    ]  # fmt: skip


# ---------------------------------------------------------------- process settings


def test_threads_cpus_and_tf32_hold_while_a_job_plans_and_runs_and_are_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library call leaves the caller's process as it found it (before, `plan_profile(threads=1)` kept one thread
    for the rest of the process, and a test suite predicted differently in another order)."""
    from layerprof.measure.jobs import plan_profile
    from layerprof.parsing import parse_layer_selection
    from layerprof.sources.models import ModelOptions

    torch.set_num_threads(2)
    before = (torch.get_num_threads(), torch.get_float32_matmul_precision(), os.sched_getaffinity(0))
    seen: list[tuple] = []

    def spy(job, observer, save):  # noqa: ANN001, ARG001 - the job's runner, as the planner hands it over
        seen.append((torch.get_num_threads(), torch.get_float32_matmul_precision(), os.sched_getaffinity(0)))
        return None

    job = plan_profile(
        f"{EXAMPLE}:mlp", ModelOptions(input_shape=(64,), num_classes=10), SweepSettings((2,), ()),
        parse_layer_selection("1"), device_name="cpu", out=tmp_path / "p.json", tf32=True, threads=1, cpus=(0,),
    )  # fmt: skip
    assert job.environment.torch_threads == 1  # recorded as it ran
    assert job.per_layer is False  # a builder argument (--per-layer), never set on the job after it is built
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.per_layer = True
    assert (torch.get_num_threads(), torch.get_float32_matmul_precision(), os.sched_getaffinity(0)) == before
    dataclasses.replace(job, runner=spy).run()
    assert seen == [(1, "high", {0})]
    assert (torch.get_num_threads(), torch.get_float32_matmul_precision(), os.sched_getaffinity(0)) == before


def test_process_settings_are_put_back_when_the_run_fails_and_a_bad_value_is_refused() -> None:
    from layerprof.measure.environment import ProcessSettings

    torch.set_num_threads(2)
    with pytest.raises(RuntimeError, match="cell"), ProcessSettings(threads=1).applied():
        assert torch.get_num_threads() == 1
        raise RuntimeError("a cell failed")
    assert torch.get_num_threads() == 2
    with pytest.raises(LayerprofError, match="--threads must be at least 1, got 0"), ProcessSettings(0).applied():
        pass
    assert torch.get_num_threads() == 2
    with ProcessSettings().applied():  # nothing given: nothing changes
        assert torch.get_num_threads() == 2


class Recorder:
    """An observer that keeps every event of a sweep as a plain tuple (required and optional events)."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def cell_started(self, batch_size: int, z: int, position: int, total: int) -> None:
        self.events.append(("cell_started", batch_size, z, position, total))

    def cell_finished(self, row: Row) -> None:
        self.events.append(("cell_finished", row.batch_size, row.trainable_layers))

    def round_started(self, round_index: int, cells: int, seconds_left: float | None) -> None:
        self.events.append(("round_started", round_index, cells, seconds_left))

    def visit_finished(self, round_index: int, done: int, cells: int) -> None:
        self.events.append(("visit_finished", round_index, done, cells))

    def round_finished(self, round_index: int, unsettled: int) -> None:
        self.events.append(("round_finished", round_index, unsettled))

    def machine_busy(self, reason: str) -> None:
        self.events.append(("machine_busy", reason))


def timed_settings(**changes: object) -> SweepSettings:
    """Two cells, visits of one step, three visits at least and at most: two timed rounds always run."""
    base = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(1, 3), warmup_steps=1, min_steps=3, max_steps=3,
                         steps_per_visit=1)  # fmt: skip
    return dataclasses.replace(base, **changes)


def test_timed_rounds_report_each_visit_and_the_time_their_visits_take(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bar moves within a round (a visit at a time) and every round starts with the time left, from the steps
    measured so far: each cell's median step x the steps its remaining visits take."""
    monkeypatch.setattr(jobs, "reference_workload_ms", lambda device: 1.0)  # a quiet machine, injected
    monkeypatch.setattr(jobs, "next_visit", lambda context, b, z, r: cells.Visit(r, [2.0]))  # 2 ms steps
    monkeypatch.setattr(jobs.TimedRounds, "unsettled", lambda self: [k for k, t in self.timings.items()
                                                                      if len(t.visits) < 3])  # fmt: skip
    loaded = stack()
    recorder = Recorder()
    profile_model(loaded, loaded.split(), timed_settings(), torch.device("cpu"), observer=recorder)
    timed = [event for event in recorder.events if event[0] in ("round_started", "visit_finished", "round_finished")]
    assert [event[:3] for event in timed] == [
        ("round_started", 1, 2), ("visit_finished", 1, 1), ("visit_finished", 1, 2), ("round_finished", 1, 2),
        ("round_started", 2, 2), ("visit_finished", 2, 1), ("visit_finished", 2, 2), ("round_finished", 2, 0),
    ]  # fmt: skip
    assert not any(event[0] == "machine_busy" for event in recorder.events)


def test_seconds_left_counts_the_remaining_visits_at_the_measured_step_time() -> None:
    loaded = stack()
    context = cells.CellContext(loaded, loaded.split(), timed_settings(), torch.device("cpu"))
    timings = {(2, 1): cells.CellTiming([cells.Visit(0, [2.0])]), (2, 3): cells.CellTiming([cells.Visit(0, [6.0])])}
    rounds = jobs.TimedRounds(context, jobs.new_profile(loaded, loaded.split(), context.settings,
                                                          jobs.describe_environment(context.device)),
                               timings, [1.0], began=0.0)  # fmt: skip
    # 2 visits left each, of 1 re-warm-up step + 1 timed step: (2 x 2 x 2 ms) + (2 x 2 x 6 ms) = 32 ms
    assert rounds.seconds_left() == pytest.approx(0.032)
    assert rounds.seconds_left(overhead=1.5) == pytest.approx(0.048)


def test_a_slow_round_says_the_machine_is_busy_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference workload, injected: quiet before the first timed round, three times slower after it. The
    event comes right after that round, before the next one starts: not at the end of the sweep."""
    readings = iter([1.0, 3.0, 3.0, 3.0, 3.0])
    monkeypatch.setattr(jobs, "reference_workload_ms", lambda device: next(readings))
    monkeypatch.setattr(jobs, "next_visit", lambda context, b, z, r: cells.Visit(r, [2.0]))
    monkeypatch.setattr(jobs.TimedRounds, "unsettled", lambda self: [k for k, t in self.timings.items()
                                                                      if len(t.visits) < 3])  # fmt: skip
    loaded = stack()
    recorder = Recorder()
    profile_model(loaded, loaded.split(), timed_settings(), torch.device("cpu"), observer=recorder)
    names = [event[0] for event in recorder.events]
    busy = names.index("machine_busy")
    assert names[busy - 1 : busy + 3] == ["visit_finished", "machine_busy", "round_finished", "round_started"]
    assert recorder.events[busy + 1] == ("round_finished", 1, 2)  # after the first timed round, of two
    assert names.count("machine_busy") == 1  # said once
    assert recorder.events[busy][1].startswith("other work is slowing this machine: the reference workload ran 3.0x")


@pytest.mark.parametrize("machine_cpus", [2, 64])
def test_cpus_are_checked_at_their_edge_against_the_cpu_count_given(monkeypatch, machine_cpus: int) -> None:
    """--cpus N on an N-CPU machine does not exist (the last good one is N - 1), whatever this machine has: the
    count is injected and no affinity is really set (issue 40: a raw OSError)."""
    import os

    from layerprof.errors import LayerprofError
    from layerprof.measure.environment import apply_threads

    set_to: list[tuple[int, ...]] = []
    monkeypatch.setattr(os, "cpu_count", lambda: machine_cpus)
    monkeypatch.setattr(os, "sched_setaffinity", lambda _pid, cpus: set_to.append(tuple(cpus)))
    apply_threads(None, (machine_cpus - 1,))
    assert set_to == [(machine_cpus - 1,)]
    with pytest.raises(LayerprofError, match=rf"--cpus {machine_cpus} does not exist; this machine has CPUs 0\.\."):
        apply_threads(None, (0, machine_cpus))
    assert set_to == [(machine_cpus - 1,)]


def test_cpus_this_process_may_not_use_are_one_line(monkeypatch) -> None:
    """CPUs that exist but are outside the process's allowed set (taskset, a container): the system refuses."""
    import os

    from layerprof.errors import LayerprofError
    from layerprof.measure.environment import apply_threads

    def refuse(_pid: int, _cpus: object) -> None:
        raise OSError(22, "Invalid argument")

    with monkeypatch.context() as patch:  # undone before the suite's own restoring of the affinity
        patch.setattr(os, "cpu_count", lambda: 4)
        patch.setattr(os, "sched_setaffinity", refuse)
        patch.setattr(os, "sched_getaffinity", lambda _pid: {1, 3})
        with pytest.raises(LayerprofError, match="^--cpus 0,2: Invalid argument; this process may run on CPUs 1,3$"):
            apply_threads(None, (0, 2))
