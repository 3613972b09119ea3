"""Running the (batch size, trainable layers) cells: freeze, warm up, time, instrument, save after each.

Each cell reuses the one model but starts clean: its own freezing, a new optimizer over the trainable
parameters only, no gradients, the allocator cache emptied. So a cell's memory figures do not depend on the
cells that ran before it. Within a batch size, z rises; once a z runs out of memory, larger z are skipped.
Measured cells (`run_cell`) and estimated ones (`layerprof.predict.estimate.estimate_cell`) share the scaffold:
a `CellContext` (what every cell of a sweep shares), `prepared_cell` and the instrumented step; every cell function
and every `CellRunner` takes `(context, batch_size, trainable_layers)`.
"""

from __future__ import annotations

import gc
import json
import math
import random
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import torch

from layerprof.devices import AllocatorConfig, MatmulThreads
from layerprof.errors import DeviceFailure, DeviceWarning, FreezingWarning, LayerprofError
from layerprof.measure.amp import autocast_for, gradient_scaler
from layerprof.measure.environment import (
    ProcessSettings,
    busy_machine_reason,
    describe_environment,
    device_slug,
    gpu_uuid,
    resolve_device,
)
from layerprof.measure.instruments import (
    HOST_BOUND_SHARE,
    AllocatorPeaks,
    LiveTensorTracker,
    OpRecorder,
    Phase,
    StepTimes,
    StepTrace,
    TimingStats,
    cuda_peaks,
    first_line,
    is_out_of_memory,
    is_sticky_cuda_error,
    matmul_threads,
    median_confidence_interval,
    optimizer_state_bytes,
    optimizer_state_tensors,
    phase_flops,
    reference_workload_ms,
    reset_cuda_peaks,
    tensors_in,
    time_window,
)
from layerprof.measure.nvml import measure_process_memory
from layerprof.measure.optimizers import make_optimizer
from layerprof.measure.rounds import CellTiming, Visit, slow_rounds
from layerprof.parsing import LayerSelection
from layerprof.precision import Precision, get_precision
from layerprof.profile import (
    EnvironmentInfo,
    MemoryCategory,
    OutputLock,
    Profile,
    Row,
    SweepSettings,
    SweepTiming,
    ensure_writable,
    load_profile,
    save_profile,
    user_frozen_params,
)
from layerprof.sources.layers import Layer, batchnorm_layers, freeze_layers, total_params, trainable_params
from layerprof.sources.models import LoadedModel, ModelOptions, build_model, model_slug
from layerprof.sources.recipes import apply_recipe
from layerprof.sources.workloads import Workload


class SweepObserver(Protocol):
    """What a progress display hears from a sweep: cells starting and finishing, rounds ending."""

    def cell_started(self, batch_size: int, trainable_layers: int, position: int, total: int) -> None:
        """A cell (the `position`-th of `total` still to run) starts."""

    def cell_finished(self, row: Row) -> None:
        """A cell's first visit (or its one call, for an estimate) ended with `row`."""

    def round_finished(self, round_index: int, unsettled: int) -> None:
        """A timed round ended with `unsettled` cells still to visit."""

    # Optional (an observer without them hears the three above): `round_started(round_index, cells,
    # seconds_left)` as a timed round begins, with the time the visits left are expected to take from the steps
    # measured so far (None before any); `visit_finished(round_index, done, cells)` after each visit in it;
    # `machine_busy(reason)` the first time a round runs slow against the reference workload.


def tell(observer: object | None, event: str, *args: Any) -> None:
    """Call an observer's `event` where it has one (the optional events of SweepObserver)."""
    handler = getattr(observer, event, None)
    if handler is not None:
        handler(*args)


def torch_dtype(precision: str) -> torch.dtype:
    """The dtype parameters are held in under a precision."""
    return getattr(torch, get_precision(precision).parameter_dtype)


# ---------------------------------------------------------------- the cell scaffold


@dataclass(frozen=True)
class CellContext:
    """What every cell of one sweep shares: the model, its split, the settings and the device, with the
    precision resolved once. Built once per sweep (measured or estimated), so that cell functions and runners all
    take `(context, batch_size, trainable_layers)` and nothing is looked up again per cell."""

    loaded: LoadedModel
    layers: Sequence[Layer]
    settings: SweepSettings
    device: torch.device
    precision: Precision = field(init=False)  # settings.precision, resolved
    parameter_dtype: torch.dtype = field(init=False)  # the dtype parameters and floating inputs are held in

    def __post_init__(self) -> None:
        precision = get_precision(self.settings.precision)
        object.__setattr__(self, "precision", precision)
        object.__setattr__(self, "parameter_dtype", getattr(torch, precision.parameter_dtype))


# A cell measured or estimated in one call: (context, batch size, z) -> its row and the seconds spent in training
# steps. The measured sweep's first visits, `layerprof.predict.estimate.estimate_cell` and
# `layerprof.predict.compose.ComposedCells` all have this shape.
CellRunner = Callable[[CellContext, int, int], tuple[Row, float]]


@dataclass
class Cell:
    """One cell ready to run: the model frozen to z, a new optimizer over the trainable parameters, a batch, and
    the precision's autocast region and gradient scaler."""

    model: torch.nn.Module
    workload: Workload
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer | None
    batch: Any
    row: Row
    autocast: Callable[[], AbstractContextManager] = nullcontext
    scaler: Any | None = None
    optimizer_steps: bool = True  # False: update() only zeroes the gradients (an estimate of an untraceable step)
    recomputes: bool = False  # --checkpointing: backward runs the trainable layers' forwards again
    compiled: Any = None  # --compile: torch.compile of the model, which timed steps run
    eager: bool = False  # run the plain model even where one is compiled (the instrumented step)

    def forward(self) -> torch.Tensor:
        """The forward pass and the loss, under the precision's autocast region."""
        model = self.compiled if self.compiled is not None and not self.eager else self.model
        with self.autocast():
            return self.workload.loss(model, self.batch)

    def backward(self, loss: torch.Tensor) -> None:
        """The backward pass, through the gradient scaler where the precision has one."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def update(self) -> None:
        """The optimizer step (unscaled and checked by the scaler where there is one), then zero_grad."""
        if not self.optimizer_steps:
            pass
        elif self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        """The step that is timed: forward and loss (under autocast for *-mixed), backward, optimizer step,
        zero_grad. Nothing else."""
        self.backward(self.forward())
        self.update()

    def launch_ms(self, synchronize: Callable[[], Any]) -> float:
        """One step's host time with the device's work left out: forward and backward are launched, the device
        is let finish, then the update is launched. A gradient scaler reads its scale back to the host inside
        the update (a synchronisation on every step); it finds the device idle here, so the figure is Python's
        launching alone, comparable with the step time whatever the precision."""
        began = time.perf_counter()
        self.backward(self.forward())
        launched = time.perf_counter() - began
        synchronize()
        began = time.perf_counter()
        self.update()
        return (launched + time.perf_counter() - began) * 1000.0


def new_row(layers: Sequence[Layer], batch_size: int, trainable_layers: int) -> Row:
    """A row with the cell's deterministic parameter counts; figures are filled in as they are measured."""
    count = trainable_params(layers, trainable_layers)
    return Row(
        batch_size=batch_size,
        trainable_layers=trainable_layers,
        status="ok",
        trainable_params=count,
        trainable_fraction=count / max(1, total_params(layers)),
    )


@contextmanager
def prepared_cell(
    context: CellContext,
    batch_size: int,
    trainable_layers: int,
    *,
    foreach: bool | None = None,
    cuda_autocast_on_cpu: bool = False,
    with_scaler: bool = True,
) -> Iterator[Cell]:
    """Freeze to z, build the optimizer, the batch and the precision's autocast and scaler; on leaving, undo the
    freezing, drop the optimizer, the batch and every gradient, and empty the CUDA cache, so that the next cell
    starts from the same memory.

    `cuda_autocast_on_cpu` (estimates for CUDA) applies CUDA's autocast rules to the CPU's fake tensors;
    estimates also leave out 16-mixed's gradient scaler (`with_scaler`), which reads its scale back to the host.
    """
    loaded, layers, settings, device, precision = (
        context.loaded, context.layers, context.settings, context.device, context.precision
    )  # fmt: skip
    frozen = freeze_layers(loaded.model, layers, trainable_layers, eval_frozen=settings.eval_frozen)
    try:
        recipe = apply_recipe(loaded, layers, trainable_layers, settings, loaded.workload.vocab_size)
    except BaseException:
        frozen.remove()
        raise
    params = [p for p in loaded.model.parameters() if p.requires_grad]
    cell = Cell(loaded.model, loaded.workload, params, None, None, new_row(layers, batch_size, trainable_layers))
    if settings.adapter != "none":  # the adapters train, not the layers: their own parameter count
        cell.row.trainable_params = sum(param.numel() for param in params)
        cell.row.trainable_fraction = cell.row.trainable_params / max(1, total_params(layers))
    cell.recomputes = settings.checkpointing != "none"
    try:
        if not params:
            names = [layer.name or "(the model itself)" for layer in layers[len(layers) - trainable_layers :]]
            raise LayerprofError(
                f"z={trainable_layers} trains nothing: the model's own code froze every parameter of "
                f"{', '.join(names)}; choose a larger z"
            )
        cell.optimizer = make_optimizer(settings.optimizer, params, settings.learning_rate, foreach=foreach)
        cell.batch = loaded.workload.make_batch(batch_size, device, context.parameter_dtype)
        cell.autocast = lambda: autocast_for(precision, device.type, cuda_autocast_on_cpu)
        cell.scaler = gradient_scaler(precision, device.type) if with_scaler else None
        if settings.compile_mode != "eager":
            cell.compiled = compiled_model(loaded.model, settings.compile_mode)
        yield cell
    finally:
        recipe.remove()
        frozen.remove()
        for param in params:
            param.grad = None
        cell.optimizer = cell.batch = cell.scaler = cell.compiled = None
        release_cached_memory(device)  # a failed step's tensors live on in its traceback: released again later


# Every cell of a sweep compiles the one model under other guards (its own frozen parameters): enough cache entries
# that none falls back to eager, which torch does silently once its limit is reached.
COMPILE_CACHE_ENTRIES = 256


def compiled_model(model: torch.nn.Module, mode: str) -> Any:
    """torch.compile of the model in `mode`, with room in dynamo's cache for every cell of a sweep."""
    import torch._dynamo

    for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), COMPILE_CACHE_ENTRIES))
    return torch.compile(model, mode=mode)


def failed_row(row: Row, status: str, message: str) -> Row:
    """A fresh row for a cell that failed: its deterministic parameter counts kept, no partial figures."""
    return Row(
        batch_size=row.batch_size,
        trainable_layers=row.trainable_layers,
        status=status,
        message=message,
        trainable_params=row.trainable_params,
        trainable_fraction=row.trainable_fraction,
    )


def instrumented_step(
    cell: Cell,
    device: torch.device,
    allocation_size: Callable[[int], int] = int,
    tracker: LiveTensorTracker | None = None,
) -> tuple[MatmulThreads, StepTrace]:
    """One steady-state step under the live-tensor tracker, with every operation recorded (FLOPs, bytes, kernels).

    On a real CUDA device the allocator's bytes that no tensor of the step holds (cuBLAS/cuDNN workspaces)
    are recorded as the workspace category. Returns which of the step's threads ran matrix products (the
    forward on the caller's, the backward on autograd's), which decides the workspaces CUDA holds, and the
    step's operations, which the time model reads. `tracker` replaces the live-tensor tracker (one that also
    records the step's timeline, `layerprof.predict.compose.RecordingTracker`).
    """
    tracker = tracker or LiveTensorTracker(allocation_size)
    tracker.register(list(cell.model.parameters()) + list(cell.model.buffers()), MemoryCategory.PARAMETERS)
    tracker.register(optimizer_state_tensors(cell.optimizer), MemoryCategory.OPTIMIZER_STATE)
    tracker.register(tensors_in(cell.batch), MemoryCategory.INPUTS)
    tracker.watch_gradients(cell.params)
    row = cell.row
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        row.memory_workspace_bytes = max(0, torch.cuda.memory_allocated(device) - tracker.current)
    else:
        row.memory_workspace_bytes = 0
    recorder = OpRecorder()
    cell.eager = True  # the tracker and the recorder see every operation of the eager step, never a compiled kernel
    with tracker, recorder:
        loss = cell.forward()
        recorder.phase = Phase.BACKWARD
        cell.backward(loss)
        del loss
        recorder.phase = Phase.OPTIMIZER
        tracker.new_allocations = MemoryCategory.OPTIMIZER_TEMPORARIES
        cell.update()
    cell.eager = False
    row.forward_flops = phase_flops(recorder.ops, Phase.FORWARD)
    row.backward_flops = phase_flops(recorder.ops, Phase.BACKWARD)
    row.flops = row.forward_flops + row.backward_flops
    if cell.recomputes:
        row.recompute_flops = phase_flops(recorder.ops, Phase.RECOMPUTE)
    row.optimizer_state_bytes = optimizer_state_bytes(cell.optimizer)
    row.tracked_peak_bytes = tracker.peak
    for category, size in tracker.at_peak.items():
        setattr(row, category.row_field, size)
    row.peak_activations_bytes = tracker.category_peaks[MemoryCategory.ACTIVATIONS]
    return matmul_threads(recorder.ops), recorder.trace


# ---------------------------------------------------------------- measured cells


@dataclass(frozen=True)
class VisitPlan:
    """How a measured cell is visited: the settings' step counts turned into visits of a few steps each."""

    steps_per_visit: int
    min_visits: int
    max_visits: int  # clean visits
    rewarm_steps: int

    @classmethod
    def of(cls, settings: SweepSettings) -> VisitPlan:
        """The visits the settings' --steps, --min-steps, --steps-per-visit and --rewarm ask for."""
        steps = max(1, min(settings.steps_per_visit, settings.max_steps))
        most = max(1, math.ceil(settings.max_steps / steps))
        least = min(most, max(MIN_VISITS, math.ceil(settings.min_steps / steps)))
        return cls(steps, least, most, min(settings.rewarm_steps, settings.warmup_steps))


# At least this many clean visits before a cell's median counts as settled (and disturbances can be seen).
MIN_VISITS = 3


def _sticky(error: BaseException, batch_size: int, trainable_layers: int) -> DeviceFailure | None:
    if not is_sticky_cuda_error(error):
        return None
    return DeviceFailure(
        f"the GPU cannot run anything more in this process ({first_line(error)}) at batch {batch_size}, "
        f"z={trainable_layers}; the cells before it are saved: rerun the same command (a new process) to resume"
    )


def release_cached_memory(device: torch.device) -> None:
    """Return the cached blocks of tensors nobody holds any more to the device, so that the next cell's reserved
    and NVML figures start from the same memory. Called once a failed step's exception, and with it the
    traceback that holds the step's tensors, is gone."""
    if device.type == "cuda":  # on the CPU tensors go with their last reference; no cache to empty
        gc.collect()
        torch.cuda.empty_cache()


def visit_timing(cell: Cell, device: torch.device, steps: int) -> StepTimes:
    """A visit's timed steps; on CUDA the host time comes from one extra step that leaves the GPU's waits out."""
    if device.type != "cuda":
        return time_window(cell.step, device, steps)
    stream = torch.cuda.current_stream(device)
    return time_window(cell.step, device, steps, launch_ms=lambda: cell.launch_ms(stream.synchronize))


def first_visit(context: CellContext, batch_size: int, trainable_layers: int) -> tuple[Row, Visit | None, float]:
    """A cell's first visit: warm-up, its first timed steps (with the allocator's peaks), then the instrumented
    step (memory by category, FLOPs). Returns the row, the visit (None where the cell failed) and the seconds
    spent inside training steps. A CUDA error that leaves the device unusable is raised as DeviceFailure."""
    settings, device = context.settings, context.device
    began: float | None = None
    plan = VisitPlan.of(settings)
    failed: Row | None = None
    try:
        with prepared_cell(context, batch_size, trainable_layers) as cell:
            began = time.perf_counter()
            first_step_ms = None
            for _ in range(settings.warmup_steps):
                cell.step()
                if first_step_ms is None:  # compiling, where --compile: its own figure
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    first_step_ms = (time.perf_counter() - began) * 1000.0
            retries = reset_cuda_peaks(device) if device.type == "cuda" else 0
            times = visit_timing(cell, device, plan.steps_per_visit)
            row = cell.row
            if cell.compiled is not None and first_step_ms is not None:
                row.compile_time_ms = max(0.0, first_step_ms - statistics.median(times.step_ms))
            if device.type == "cuda":
                _record_cuda_memory(row, cuda_peaks(device, retries), device)
                instrumented_step(cell, device, AllocatorConfig.from_environment().block_bytes)
            else:
                instrumented_step(cell, device)
                row.peak_memory_bytes = row.tracked_peak_bytes
                row.memory_source = "cpu-tensor-tracker"
            seconds = time.perf_counter() - began
        return row, Visit(0, times.step_ms, host_ms=times.host_ms), seconds
    except Exception as error:  # noqa: BLE001 - one failed cell never stops the sweep, unless the GPU is gone
        if failure := _sticky(error, batch_size, trainable_layers):
            raise failure from error
        row = new_row(context.layers, batch_size, trainable_layers)
        failed = failed_row(row, _failure_status(error), first_line(error))
    release_cached_memory(device)  # the exception, its traceback and the step's tensors are gone by now
    return failed, None, 0.0 if began is None else time.perf_counter() - began


def next_visit(context: CellContext, batch_size: int, trainable_layers: int, round_index: int) -> Visit:
    """A later visit: the cell set up again, a short re-warm-up, then its timed steps. A failure other than a
    sticky CUDA error is raised as CellFailure, once the failed step's memory is released."""
    device = context.device
    plan = VisitPlan.of(context.settings)
    failure: CellFailure | None = None
    try:
        with prepared_cell(context, batch_size, trainable_layers) as cell:
            for _ in range(max(1, plan.rewarm_steps)):  # the first step after set-up allocates optimizer state
                cell.step()
            times = visit_timing(cell, device, plan.steps_per_visit)
        return Visit(round_index, times.step_ms, host_ms=times.host_ms)
    except Exception as error:  # noqa: BLE001 - the sweep decides what a failed later visit means
        if sticky := _sticky(error, batch_size, trainable_layers):
            raise sticky from error
        failure = CellFailure(_failure_status(error), first_line(error))
    release_cached_memory(device)
    raise failure


class CellFailure(Exception):
    """A later visit of a cell failed (out of memory, an error of the model): the cell stops being visited."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def run_cell(context: CellContext, batch_size: int, trainable_layers: int) -> tuple[Row, float]:
    """One cell measured on its own, its visits back to back until they settle (a sweep interleaves them)."""
    settings = context.settings
    row, visit, seconds = first_visit(context, batch_size, trainable_layers)
    if visit is None:
        return row, seconds
    plan = VisitPlan.of(settings)
    timing = CellTiming([visit])
    began = time.perf_counter()
    while not timing.settled(plan.min_visits, settings.median_tolerance) and len(timing.clean()) < plan.max_visits:
        if len(timing.visits) >= 2 * plan.max_visits:
            break
        timing.visits.append(next_visit(context, batch_size, trainable_layers, 0))
    record_timing(row, timing, settings, context.device, context.loaded.workload.items_per_batch(batch_size))
    return row, seconds + time.perf_counter() - began


def _record_cuda_memory(row: Row, peaks: AllocatorPeaks, device: torch.device) -> None:
    row.peak_memory_bytes = peaks.allocated_bytes
    row.peak_reserved_bytes = peaks.reserved_bytes
    row.peak_requested_bytes = peaks.requested_bytes
    row.alloc_retries = peaks.alloc_retries
    row.memory_source = "cuda-allocator"
    process = measure_process_memory(gpu_uuid(device), mig=str(gpu_uuid(device) or "").startswith("MIG-"))
    row.nvml_process_bytes = process.process_bytes
    row.nvml_note = process.note
    row.device_used_bytes = process.device_used_bytes
    row.device_used_source = process.device_used_source


def _failure_status(error: BaseException) -> str:
    return "oom" if is_out_of_memory(error) else "error"


def record_timing(
    row: Row, timing: CellTiming, settings: SweepSettings, device: torch.device, items_per_batch: int
) -> None:
    """The row's time figures from its clean visits: the median over visits, their interval, the spread of the
    steps, and every visit's median with the ones other work slowed down."""
    plan = VisitPlan.of(settings)
    clean = timing.clean() or timing.visits
    medians = sorted(visit.median_ms for visit in clean)
    steps = TimingStats.from_samples([ms for visit in clean for ms in visit.step_ms])
    low, high = median_confidence_interval(medians)
    row.step_time_ms = statistics.median(medians)
    row.step_time_mean_ms = steps.mean_ms
    row.step_time_std_ms = steps.std_ms
    row.step_time_p10_ms = steps.p10_ms
    row.step_time_p90_ms = steps.p90_ms
    row.step_time_ci_low_ms, row.step_time_ci_high_ms = low, high
    row.measured_steps = steps.count
    row.visits = len(clean)
    row.visit_medians_ms = [round(visit.median_ms, 6) for visit in timing.visits]
    row.slow_visits = [index for index, flag in enumerate(timing.flagged()) if flag]
    reason = timing.disturbance(plan.min_visits)
    row.disturbed = reason is not None
    row.disturbed_reason = reason
    row.time_source = "cuda-events-pipelined" if device.type == "cuda" else "perf-counter"
    host = [ms for visit in clean for ms in visit.host_ms]
    if host:
        row.host_time_ms = statistics.median(host)
        row.host_bound = row.host_time_ms >= HOST_BOUND_SHARE * row.step_time_ms
    step_seconds = row.step_time_ms / 1000.0
    row.throughput_per_s = items_per_batch / step_seconds
    row.achieved_tflops = (row.flops or 0) / step_seconds / 1e12


# ---------------------------------------------------------------- the sweep


def new_profile(
    loaded: LoadedModel,
    layers: Sequence[Layer],
    settings: SweepSettings,
    environment: EnvironmentInfo,
) -> Profile:
    """An empty profile of this sweep: the model, workload, environment and settings, no rows yet."""
    return Profile(
        model=loaded.describe(layers),
        workload=loaded.workload.describe(),
        environment=environment,
        settings=settings,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def profile_model(
    loaded: LoadedModel,
    layers: Sequence[Layer],
    settings: SweepSettings,
    device: torch.device,
    *,
    observer: SweepObserver | None = None,
    save: Callable[[Profile], Any] | None = None,
    cell_runner: CellRunner | None = None,
    environment: EnvironmentInfo | None = None,
    resume: Profile | None = None,
) -> Profile:
    """Run every cell; `save(profile)` runs after each cell and round, and at the end (also on Ctrl-C).

    Measured: a first round visits the cells in order (z rising, so that out-of-memory skips larger z), then
    timed rounds visit the unsettled cells in a new order each, until all settle or --steps, --max-time run
    out. `cell_runner` (a `CellRunner`, called with this sweep's `CellContext`) replaces the measured cells by one
    call each (`layerprof estimate`, on fake tensors), and there are no timed rounds.
    `resume` (an interrupted profile of the same sweep) keeps its finished cells and runs the others. A sweep
    that does not end (Ctrl-C, a GPU that fails) marks every cell it leaves unfinished (`mark_unfinished`).
    """
    context = CellContext(loaded, layers, settings, device)
    profile = new_profile(loaded, layers, settings, environment or describe_environment(device))
    before = SweepTiming()
    if resume is not None:
        profile.rows = [row for row in resume.rows if row.finished]
        profile.created_at, before = resume.created_at, resume.timing
    began = time.perf_counter()
    in_steps = [0.0]
    timings: dict[tuple[int, int], CellTiming] = {}
    guard = torch.cuda.device(device) if device.type == "cuda" else nullcontext()

    def checkpoint() -> None:
        wall = before.sweep_wall_s + time.perf_counter() - began
        profile.timing = SweepTiming(wall, before.in_steps_s + in_steps[0])
        profile.rows.sort(key=lambda row: row.key)
        if save:
            save(profile)

    def first_visits(context: CellContext, batch_size: int, trainable_layers: int) -> tuple[Row, float]:
        """The measured sweep's cell runner: a cell's first visit, its timing kept for the timed rounds."""
        row, visit, seconds = first_visit(context, batch_size, trainable_layers)
        if visit is not None:
            timings[row.key] = CellTiming([visit])
            record_timing(row, timings[row.key], settings, device, loaded.workload.items_per_batch(batch_size))
        return row, seconds

    runner = cell_runner or first_visits

    def one_cell(batch_size: int, trainable_layers: int) -> Row:
        row, seconds = runner(context, batch_size, trainable_layers)
        in_steps[0] += seconds
        return row

    with guard:
        try:
            if device.type == "cuda":  # the first cell starts from an empty cache, as every later one does
                gc.collect()
                torch.cuda.empty_cache()
            _cells_in_order(profile, layers, settings, one_cell, observer, checkpoint)
            if cell_runner is None:
                reference = [reference_workload_ms(device)]
                rounds = TimedRounds(context, profile, timings, reference, began)
                in_steps[0] += rounds.run(observer, checkpoint)
            profile.complete = True
        finally:
            if not profile.complete:
                mark_unfinished(profile, layers, unsettled(timings, settings))
            checkpoint()
    return profile


def unsettled(timings: dict[tuple[int, int], CellTiming], settings: SweepSettings) -> list[tuple[int, int]]:
    """Cells whose visits have not settled and may still be visited (disturbed visits are measured again, up to a
    point): what a timed round visits, and what an interrupt leaves unfinished."""
    plan = VisitPlan.of(settings)
    return [
        key
        for key, timing in timings.items()
        if not timing.settled(plan.min_visits, settings.median_tolerance)
        and len(timing.clean()) < plan.max_visits
        and len(timing.visits) < 2 * plan.max_visits
    ]


def mark_unfinished(profile: Profile, layers: Sequence[Layer], settling: Sequence[tuple[int, int]]) -> None:
    """An interrupted sweep's profile: cells still settling become `unfinished` (their figures kept, from fewer
    visits than the protocol asks), and every planned cell the sweep never reached gets an `unfinished` row, so
    that the profile says which cells a rerun must measure (and `ladder`, `check`, `report` see it)."""
    for key in settling:
        row = profile.row(*key)
        if row is not None and row.status == "ok":
            row.status = "unfinished"
            row.message = (
                f"interrupted after {len(row.visit_medians_ms or ()) or 1} visit(s), before its step time settled; the "
                "figures are "
                "provisional: resume the sweep to measure it"
            )
    present = {row.key for row in profile.rows}
    for batch_size, trainable_layers in profile.planned_cells():
        if (batch_size, trainable_layers) not in present:
            profile.rows.append(
                failed_row(
                    new_row(layers, batch_size, trainable_layers),
                    "unfinished",
                    "not measured: the sweep was interrupted before this cell",
                )
            )


def _cells_in_order(
    profile: Profile,
    layers: Sequence[Layer],
    settings: SweepSettings,
    one_cell: Callable[[int, int], Row],
    observer: SweepObserver | None,
    checkpoint: Callable[[], None],
) -> None:
    """Batch size by batch size, z rising; once a z runs out of memory, larger z at that batch size are skipped.
    Cells the profile already holds finished (a resumed sweep) are kept as they are."""
    kept = {row.key: row for row in profile.rows}
    total = sum(key not in kept for key in profile.planned_cells())
    position = 0
    for batch_size in settings.batch_sizes:
        out_of_memory_at: int | None = None
        for trainable_layers in settings.trainable_layer_counts:
            done = kept.get((batch_size, trainable_layers))
            if done is not None:
                if done.status == "oom":
                    out_of_memory_at = trainable_layers
                continue
            position += 1
            if observer:
                observer.cell_started(batch_size, trainable_layers, position, total)
            if out_of_memory_at is not None:
                row = failed_row(
                    new_row(layers, batch_size, trainable_layers),
                    "skipped",
                    f"skipped: z={out_of_memory_at} already ran out of memory at this batch size",
                )
            else:
                row = one_cell(batch_size, trainable_layers)
                if row.status == "oom":
                    out_of_memory_at = trainable_layers
            profile.rows.append(row)
            checkpoint()
            if observer:
                observer.cell_finished(row)


@dataclass
class TimedRounds:
    """The timed rounds after the first: every unsettled cell once per round, in a new order each round."""

    context: CellContext
    profile: Profile
    timings: dict[tuple[int, int], CellTiming]
    reference_ms: list[float]  # the reference workload after every round, the first included
    began: float

    def unsettled(self) -> list[tuple[int, int]]:
        """The cells a next round visits (`unsettled`)."""
        return unsettled(self.timings, self.context.settings)

    def out_of_time(self) -> bool:
        """Whether --max-time has run out since the sweep began."""
        limit = self.context.settings.max_time_s
        return limit is not None and time.perf_counter() - self.began >= limit

    def run(self, observer: SweepObserver | None, checkpoint: Callable[[], None]) -> float:
        """Returns the seconds spent inside training steps."""
        shuffle = random.Random(0)
        seconds = 0.0
        round_index = 1
        overhead = 1.0  # wall time of a round over its visits' step time, once a round has measured it
        told_busy = False
        while (pending := self.unsettled()) and not self.out_of_time():
            shuffle.shuffle(pending)
            tell(observer, "round_started", round_index, len(pending), self.seconds_left(overhead))
            began = time.perf_counter()
            for done, (batch_size, trainable_layers) in enumerate(pending, 1):
                try:
                    visit = next_visit(self.context, batch_size, trainable_layers, round_index)
                except CellFailure as failure:
                    self._fail((batch_size, trainable_layers), failure, round_index)
                else:
                    self.timings[(batch_size, trainable_layers)].visits.append(visit)
                tell(observer, "visit_finished", round_index, done, len(pending))
            wall = time.perf_counter() - began
            seconds += wall
            stepped = self.visit_seconds([key for key in pending if key in self.timings])
            overhead = wall / stepped if stepped > 0 else overhead
            self.reference_ms.append(reference_workload_ms(self.context.device))
            self._mark_slow_rounds()
            self._update_rows()
            checkpoint()
            if not told_busy and (reason := self.busy_reason()) is not None:
                told_busy = True
                tell(observer, "machine_busy", reason)
            if observer:
                observer.round_finished(round_index, len(self.unsettled()))
            round_index += 1
        return seconds

    def visit_seconds(self, keys: Sequence[tuple[int, int]]) -> float:
        """What one more visit of each cell in `keys` takes in training steps (re-warm-up and timed steps), from
        the median step time each has measured so far."""
        plan = VisitPlan.of(self.context.settings)
        per_visit = max(1, plan.rewarm_steps) + plan.steps_per_visit
        return sum(
            per_visit * statistics.median(visit.median_ms for visit in self.timings[key].visits) / 1000
            for key in keys
            if self.timings[key].visits
        )

    def seconds_left(self, overhead: float = 1.0) -> float | None:
        """The time the visits still allowed to the unsettled cells take at most (each up to --steps), from the
        steps measured so far and the last round's wall time per step second (`overhead`); capped by what
        --max-time leaves. None before any cell has a measured step."""
        plan = VisitPlan.of(self.context.settings)
        total = 0.0
        measured = False
        for key in self.unsettled():
            timing = self.timings[key]
            left = min(plan.max_visits - len(timing.clean()), 2 * plan.max_visits - len(timing.visits))
            if timing.visits:
                measured = True
                total += max(0, left) * self.visit_seconds([key]) * overhead
        if not measured:
            return None
        limit = self.context.settings.max_time_s
        if limit is not None:
            total = min(total, max(0.0, limit - (time.perf_counter() - self.began)))
        return total

    def busy_reason(self) -> str | None:
        """Why other work is slowing the sweep, once a round's reference workload ran slow; None until then."""
        slow = slow_rounds(self.reference_ms)
        if not any(slow):
            return None
        worst = max(self.reference_ms) / min(self.reference_ms)
        return (
            f"other work is slowing this machine: the reference workload ran {worst:.1f}x slower in some rounds; "
            "their visits are measured again (the sweep takes longer), and cells that stay disturbed are marked"
        )

    def _fail(self, key: tuple[int, int], failure: CellFailure, round_index: int) -> None:
        """A cell whose later visit failed keeps the figures of its earlier visits, takes the failure's status
        (a cell that ran out of memory once is not a cell to plan on) and is visited no more."""
        self.timings.pop(key)
        row = self.profile.row(*key)
        row.status = failure.status
        row.message = (
            f"failed in timed round {round_index} ({failure.message}); the figures are those of its earlier visits"
        )

    def _mark_slow_rounds(self) -> None:
        """A timed round is slow when the reference workload ran slow just before it or just after it."""
        slow = slow_rounds(self.reference_ms)
        for timing in self.timings.values():
            for visit in timing.visits:
                index = visit.round_index
                visit.slow_round = index > 0 and (slow[index - 1] or slow[index])

    def _update_rows(self) -> None:
        settings, device = self.context.settings, self.context.device
        for key, timing in self.timings.items():
            row = self.profile.row(*key)
            items = self.context.loaded.workload.items_per_batch(key[0])
            record_timing(row, timing, settings, device, items)


# ---------------------------------------------------------------- a sweep ready to run


def resolve_settings(
    settings: SweepSettings, workload: Workload, layer_count: int, layer_selection: LayerSelection, **fixed: Any
) -> SweepSettings:
    """The sweep's settings with every default filled in once, by every planner (profile, estimate, cluster): the
    family's batch sizes where none are given, the z values the selection names for this split, and `fixed`
    (the mode, the target). Adapters in every layer (`--adapter-layers all`, plain LoRA) are one cell per batch
    size, z = n: no layer is frozen without them."""
    every_layer = settings.adapter != "none" and settings.adapter_layers == "all"
    return replace(
        settings,
        batch_sizes=tuple(settings.batch_sizes or workload.default_batch_sizes),
        trainable_layer_counts=(layer_count,) if every_layer else layer_selection.resolve(layer_count),
        **fixed,
    )


# How a job runs its cells, handed to it by its planner: measured here (`measure_job`), or on fake tensors
# (`layerprof.predict.jobs.run_estimate_job`); it saves the profile with `save` after each cell.
SweepRunner = Callable[["SweepJob", "SweepObserver | None", Callable[[Profile], None]], Profile]


def measure_job(job: SweepJob, observer: SweepObserver | None, save: Callable[[Profile], None]) -> Profile:
    """The measured sweep's runner: every cell timed on the device, then (--per-layer) each layer's times."""
    assert job.loaded is not None
    profile = profile_model(job.loaded, job.layers, job.settings, job.device, observer=observer, save=save,
                            environment=job.environment, resume=job.resume)  # fmt: skip
    if job.per_layer:
        context = CellContext(job.loaded, job.layers, profile.settings, job.device)
        profile.layer_times = [times.to_dict() for times in layer_times(context, profile)]
        save(profile)
    return profile


@dataclass
class SweepJob:
    """A sweep ready to run: the model built and split, every setting resolved, the output path checked."""

    spec: str
    options: ModelOptions
    layers: list[Layer]
    settings: SweepSettings
    device: torch.device
    environment: EnvironmentInfo
    path: Path
    loaded: LoadedModel | None = None  # measured sweeps; an estimate builds its own model on fake tensors
    order: tuple[str, str] = ("forward", "")  # the split's order and, for registration order, why
    resume: Profile | None = None  # an interrupted profile of this sweep at `path`: its finished cells are kept
    time_model: Any = None  # estimates: the layerprof.predict.timemodel.TimeModel that predicts their step times
    per_layer: bool = False  # measured sweeps: also time each layer's forward and backward in full training
    runner: SweepRunner = measure_job  # handed over by the planner: the job never asks which kind it is
    process: ProcessSettings = ProcessSettings()  # threads, CPUs and TF32, in force only while the job runs

    def run(self, observer: SweepObserver | None = None) -> Profile:
        """Run every cell with the planner's runner, saving the profile (JSON and CSV) after each, under the
        job's process settings (restored afterwards)."""
        with OutputLock(self.path) as lock, self.process.applied():
            lock.refuse_if_held()  # another run with this --out started since the job was planned
            return self.runner(self, observer, lambda profile: save_profile(profile, self.path))


def resumable_profile(path: Path, planned: Profile, restart: bool = False) -> Profile | None:
    """The interrupted profile at PATH that this sweep resumes (its finished cells kept, the others measured), or
    None to measure every cell: nothing there, a complete profile of the same model (measured anew), or `restart`
    (--restart, --force). Anything else at PATH (another model's finished profile, another sweep's interrupted
    one, a file that is no profile) is refused rather than replaced."""
    if restart or not path.exists():
        return None
    try:
        existing = load_profile(path)
    except LayerprofError as error:
        raise LayerprofError(
            f"--out {str(path)!r} holds a file this cannot resume ({error}); give another --out, or --restart to "
            "replace it"
        ) from None
    if existing.complete:
        if existing.model.spec != planned.model.spec:  # a typo in --out must not destroy another model's long run
            raise LayerprofError(
                f"--out {str(path)!r} holds a finished profile of another model ({existing.model.spec}); give "
                "another --out, or --force to replace it"
            )
        return None
    difference = sweep_difference(existing, planned)
    if difference:
        raise LayerprofError(
            f"--out {str(path)!r} holds an interrupted profile of another sweep ({difference}); run that sweep to "
            "resume it, give another --out, or --restart to replace it"
        )
    return existing


def sweep_difference(existing: Profile, planned: Profile) -> str | None:
    """The first thing that makes `existing` a profile of another sweep than `planned` (None: the same sweep)."""

    def plain(value: Any) -> Any:  # as a profile file holds it (tuples become lists)
        return json.loads(json.dumps(value, default=str))

    pairs = [
        ("model", existing.model.spec, planned.model.spec),
        ("--set", existing.model.overrides, planned.model.overrides),
        ("--unwrap", existing.model.unwrap, planned.model.unwrap),
        ("layers", [layer.name for layer in existing.model.layers], [layer.name for layer in planned.model.layers]),
        ("device", existing.environment.device_name, planned.environment.device_name),
        ("numeric settings", existing.environment.numerics, planned.environment.numerics),
    ]
    workload = planned.workload.to_dict()
    pairs += [(f"workload {key}", value, workload.get(key)) for key, value in existing.workload.to_dict().items()]
    settings = planned.settings.to_dict()
    pairs += [(key, value, settings.get(key)) for key, value in existing.settings.to_dict().items()]
    for name, before, after in pairs:
        if plain(before) != plain(after):
            return f"{name}: {plain(before)!r} there, {plain(after)!r} now"
    return None


def warn_freezing(model: torch.nn.Module, layers: Sequence[Layer], settings: SweepSettings) -> None:
    """Say which parameters the model's own code froze (they stay frozen at every z), and when layers the sweep
    freezes hold BatchNorm running statistics that train mode keeps updating."""
    frozen = user_frozen_params(layers)
    if frozen:
        names = list(dict.fromkeys(name for layer in layers for name in layer.frozen_names))
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        warnings.warn(
            f"the model's own code froze {frozen:,} of {total_params(layers):,} parameters ({shown}): they stay "
            "frozen at every z, and every row counts only what trains",
            FreezingWarning,
            stacklevel=3,
        )
    if settings.eval_frozen or not settings.trainable_layer_counts:
        return
    frozen = layers[: len(layers) - min(settings.trainable_layer_counts)]
    held = batchnorm_layers(model, frozen)
    if held:
        named = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        warnings.warn(
            f"frozen layers with BatchNorm ({named}) still update their running statistics in train mode; "
            "--eval-frozen runs frozen layers in eval mode (statistics kept, dropout off), which changes both "
            "results and cost",
            FreezingWarning,
            stacklevel=3,
        )


def layer_times(context: CellContext, profile: Profile) -> list[Any]:
    """`profile --per-layer`: each layer's forward and backward time in full training, at every batch size whose
    full-training cell ran."""
    from layerprof.measure.layertimes import measure_layer_times

    layers, device = context.layers, context.device
    measured = []
    guard = torch.cuda.device(device) if device.type == "cuda" else nullcontext()
    with guard:
        for batch_size in profile.batch_sizes():
            full = profile.row(batch_size, len(layers))
            if full is None or not full.ok:
                continue
            with prepared_cell(context, batch_size, len(layers)) as cell:
                for _ in range(context.settings.warmup_steps):
                    cell.step()
                measured.append(measure_layer_times(cell, layers, device))
    return measured


def validate_settings(settings: SweepSettings) -> None:
    """Refuse settings no sweep can run (no warm-up, --min-steps above --steps, a bad --max-time)."""
    if settings.warmup_steps < 1:
        raise LayerprofError(
            f"--warmup {settings.warmup_steps}: at least 1 warm-up step is needed (the first step allocates the "
            "optimizer state, which a measured step must not include)"
        )
    if settings.steps_per_visit < 1:
        raise LayerprofError(f"--steps-per-visit must be at least 1, got {settings.steps_per_visit}")
    if settings.max_time_s is not None and not (math.isfinite(settings.max_time_s) and settings.max_time_s > 0):
        raise LayerprofError(f"--max-time must be a positive number of seconds, got {settings.max_time_s:g}")
    if settings.min_steps > settings.max_steps:
        raise LayerprofError(
            f"--min-steps {settings.min_steps} exceeds --steps {settings.max_steps}; use --min-steps <= --steps"
        )


def plan_profile(
    spec: str,
    options: ModelOptions,
    settings: SweepSettings,
    layer_selection: LayerSelection,
    device_name: str = "auto",
    out: Path | None = None,
    tf32: bool | None = None,
    threads: int | None = None,
    cpus: tuple[int, ...] | None = None,
    restart: bool = False,
) -> SweepJob:
    """Build MODEL on the device and resolve the cells; `settings.batch_sizes` empty means the family's default.
    The default output is profiles/MODEL-DEVICE.json; `tf32` sets TensorFloat-32 (None: PyTorch's defaults);
    `threads` and `cpus` set torch's threads and the CPUs the process may use. Warns when other work keeps the
    machine visibly busy. An interrupted profile of the same sweep at the output is resumed (`resumable_profile`)
    unless `restart`."""
    validate_settings(settings)
    device = resolve_device(device_name)
    process = ProcessSettings(threads, cpus, tf32)
    with process.applied():  # the environment records them; the job sets them again while it runs
        busy = busy_machine_reason(device)
        if busy:
            warnings.warn(busy, DeviceWarning, stacklevel=2)
        environment = describe_environment(device)
        path = ensure_writable(out or Path("profiles") / f"{model_slug(spec)}-{device_slug(environment)}.json")
        loaded = build_model(spec, options, device=device, dtype=torch_dtype(settings.precision))
        layers = loaded.split()
    settings = resolve_settings(settings, loaded.workload, len(layers), layer_selection, mode="measure")
    warn_freezing(loaded.model, layers, settings)
    order = (loaded.order, loaded.order_reason)
    resume = resumable_profile(path, new_profile(loaded, layers, settings, environment), restart)
    return SweepJob(
        spec, options, layers, settings, device, environment, path, loaded, order, resume, runner=measure_job,
        process=process,
    )  # fmt: skip
