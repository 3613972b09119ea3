"""The cell scaffold: one (batch size, trainable layers) cell frozen, warmed up, timed and instrumented.

Each cell reuses the one model but starts clean: its own freezing, a new optimizer over the trainable
parameters only, no gradients, the allocator cache emptied. So a cell's memory figures do not depend on the
cells that ran before it. Measured cells (`run_cell`, `first_visit`, `next_visit`) and estimated ones
(`layerprof.predict.estimate.estimate_cell`) share the scaffold: a `CellContext` (what every cell of a sweep
shares), `prepared_cell` and the instrumented step; every cell function and every `CellRunner` takes
`(context, batch_size, trainable_layers)`. The sweep that runs them is `layerprof.measure.jobs`.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import cast

import torch

from layerprof.devices import AllocatorConfig, MatmulThreads
from layerprof.errors import DeviceFailure, LayerprofError
from layerprof.measure.amp import autocast_for, gradient_scaler
from layerprof.measure.environment import ProcessSettings, gpu_uuid
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
    reset_cuda_peaks,
    tensors_in,
    time_window,
)
from layerprof.measure.nvml import measure_process_memory
from layerprof.measure.optimizers import make_optimizer
from layerprof.measure.rounds import CellTiming, Visit
from layerprof.precision import Precision, get_precision
from layerprof.profile import (
    CellStatus,
    MemoryCategory,
    Row,
    SweepSettings,
)
from layerprof.sources.layers import Layer, freeze_layers, total_params, trainable_params
from layerprof.sources.models import LoadedModel
from layerprof.sources.recipes import apply_recipe
from layerprof.sources.workloads import Workload


def torch_dtype(precision: str) -> torch.dtype:
    """The dtype parameters are held in under a precision."""
    dtype: torch.dtype = getattr(torch, get_precision(precision).parameter_dtype)
    return dtype


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
    batch: object  # what the workload's make_batch returns, handed to its loss as it is
    row: Row
    autocast: Callable[[], AbstractContextManager[object]] = nullcontext
    scaler: torch.amp.GradScaler | None = None
    optimizer_steps: bool = True  # False: update() only zeroes the gradients (an estimate of an untraceable step)
    recomputes: bool = False  # --checkpointing: backward runs the trainable layers' forwards again
    compiled: torch.nn.Module | None = None  # --compile: torch.compile of the model, which timed steps run
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
        """The optimizer step (unscaled and checked by the scaler where there is one), then zero_grad; without
        `optimizer_steps` (an estimate whose optimizer step cannot be traced) only the zero_grad."""
        assert self.optimizer is not None, "update() of a cell that has left prepared_cell"
        if self.optimizer_steps:
            if self.scaler is not None:
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

    def launch_ms(self, synchronize: Callable[[], object]) -> float:
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
    loaded, layers, settings, device = context.loaded, context.layers, context.settings, context.device
    precision = context.precision
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
        if settings.compile_mode == "eager":
            yield cell
        else:
            with ProcessSettings(compile_cache_entries=COMPILE_CACHE_ENTRIES).applied():
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
# that none falls back to eager, which torch does silently once its limit is reached. Raised only while a compiled
# cell is prepared (`ProcessSettings.compile_cache_entries`), and restored after it.
COMPILE_CACHE_ENTRIES = 256


def compiled_model(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """torch.compile of the model in `mode` (the cell that runs it holds room in dynamo's cache): a module that
    wraps it (torch's OptimizedModule), which torch's stubs type as any callable."""
    return cast(torch.nn.Module, torch.compile(model, mode=mode))


def failed_row(row: Row, status: CellStatus, message: str) -> Row:
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
    recorder: OpRecorder | None = None,
) -> tuple[MatmulThreads, StepTrace]:
    """One steady-state step under the live-tensor tracker, with every operation recorded (FLOPs, bytes, kernels).

    On a real CUDA device the allocator's bytes that no tensor of the step holds (cuBLAS/cuDNN workspaces)
    are recorded as the workspace category. Returns which of the step's threads ran matrix products (the
    forward on the caller's, the backward on autograd's), which decides the workspaces CUDA holds, and the
    step's operations, which the time model reads. `tracker` replaces the live-tensor tracker (one that also
    records the step's timeline, `layerprof.predict.compose.RecordingTracker`), `recorder` the operation recorder
    (one that replays a frozen layer's recorded operations, `layerprof.predict.reuse`).
    """
    assert cell.optimizer is not None, "the instrumented step of a cell that has left prepared_cell"
    optimizer = cell.optimizer
    tracker = tracker or LiveTensorTracker(allocation_size)
    tracker.register(list(cell.model.parameters()) + list(cell.model.buffers()), MemoryCategory.PARAMETERS)
    tracker.register(optimizer_state_tensors(optimizer), MemoryCategory.OPTIMIZER_STATE)
    tracker.register(tensors_in(cell.batch), MemoryCategory.INPUTS)
    tracker.watch_gradients(cell.params)
    row = cell.row
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        row.memory_workspace_bytes = max(0, torch.cuda.memory_allocated(device) - tracker.current)
    else:
        row.memory_workspace_bytes = 0
    recorder = recorder or OpRecorder()
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
    row.optimizer_state_bytes = optimizer_state_bytes(optimizer)
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
            # A compiled cell's first step compiles: it is never timed, whatever --warmup (the CLI refuses 0)
            for _ in range(max(settings.warmup_steps, 1 if cell.compiled is not None else 0)):
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

    def __init__(self, status: CellStatus, message: str) -> None:
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


def _failure_status(error: BaseException) -> CellStatus:
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
