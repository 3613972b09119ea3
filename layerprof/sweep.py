"""Running the (batch size, trainable layers) cells: freeze, warm up, time, instrument, save after each.

Each cell reuses the one model but starts clean: its own freezing, a new optimizer over the trainable
parameters only, no gradients, the allocator cache emptied. So a cell's memory figures do not depend on the
cells that ran before it. Within a batch size, z rises; once a z runs out of memory, larger z are skipped.
Measured cells (`run_cell`) and estimated ones (`layerprof.estimate.estimate_cell`) share the scaffold
`prepared_cell` and the instrumented step.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import torch

from layerprof.amp import autocast_for, gradient_scaler
from layerprof.devices import cuda_block_bytes
from layerprof.environment import apply_tf32, describe_environment, device_slug, gpu_uuid, resolve_device
from layerprof.errors import DeviceFailure, LayerprofError
from layerprof.layers import Layer, freeze_layers, total_params, trainable_params
from layerprof.measure import (
    AllocatorPeaks,
    LiveTensorTracker,
    StepTimes,
    TimingStats,
    cuda_peaks,
    first_line,
    flop_counter,
    is_out_of_memory,
    is_sticky_cuda_error,
    optimizer_state_bytes,
    optimizer_state_tensors,
    reset_cuda_peaks,
    runs_matmuls,
    tensors_in,
    time_steps,
)
from layerprof.models import LoadedModel, ModelOptions, build_model, model_slug
from layerprof.nvml import measure_process_memory
from layerprof.optimizers import make_optimizer
from layerprof.parsing import LayerSelection
from layerprof.precision import get_precision
from layerprof.profile import (
    EnvironmentInfo,
    MemoryCategory,
    Profile,
    Row,
    SweepSettings,
    SweepTiming,
    ensure_writable,
    save_profile,
)
from layerprof.workloads import Workload


class SweepObserver(Protocol):
    def cell_started(self, batch_size: int, trainable_layers: int, position: int, total: int) -> None: ...

    def cell_finished(self, row: Row) -> None: ...


CellRunner = Callable[[LoadedModel, Sequence[Layer], int, int, SweepSettings, torch.device], tuple[Row, float]]


def torch_dtype(precision: str) -> torch.dtype:
    """The dtype parameters are held in under a precision."""
    return getattr(torch, get_precision(precision).parameter_dtype)


# ---------------------------------------------------------------- the cell scaffold


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

    def forward(self) -> torch.Tensor:
        with self.autocast():
            return self.workload.loss(self.model, self.batch)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def update(self) -> None:
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
    loaded: LoadedModel,
    layers: Sequence[Layer],
    batch_size: int,
    trainable_layers: int,
    settings: SweepSettings,
    device: torch.device,
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
    precision = get_precision(settings.precision)
    frozen = freeze_layers(loaded.model, layers, trainable_layers)
    params = [p for p in loaded.model.parameters() if p.requires_grad]
    cell = Cell(loaded.model, loaded.workload, params, None, None, new_row(layers, batch_size, trainable_layers))
    try:
        cell.optimizer = make_optimizer(settings.optimizer, params, settings.learning_rate, foreach=foreach)
        cell.batch = loaded.workload.make_batch(batch_size, device, torch_dtype(settings.precision))
        cell.autocast = lambda: autocast_for(precision, device.type, cuda_autocast_on_cpu)
        cell.scaler = gradient_scaler(precision, device.type) if with_scaler else None
        yield cell
    finally:
        frozen.remove()
        for param in params:
            param.grad = None
        cell.optimizer = cell.batch = cell.scaler = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


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


def instrumented_step(cell: Cell, device: torch.device, allocation_size: Callable[[int], int] = int) -> bool:
    """One steady-state step under the live-tensor tracker, with FLOPs counted for forward and backward.

    On a real CUDA device the allocator's bytes that no tensor of the step holds (cuBLAS/cuDNN workspaces)
    are recorded as the workspace category. Returns whether the step ran a matrix product.
    """
    tracker = LiveTensorTracker(allocation_size)
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
    with tracker:
        with flop_counter() as forward_counter:
            loss = cell.forward()
        with flop_counter() as backward_counter:
            cell.backward(loss)
        del loss
        tracker.new_allocations = MemoryCategory.OPTIMIZER_TEMPORARIES
        cell.update()
    row.forward_flops = int(forward_counter.get_total_flops())
    row.backward_flops = int(backward_counter.get_total_flops())
    row.flops = row.forward_flops + row.backward_flops
    row.optimizer_state_bytes = optimizer_state_bytes(cell.optimizer)
    row.tracked_peak_bytes = tracker.peak
    for category, size in tracker.at_peak.items():
        setattr(row, category.row_field, size)
    row.peak_activations_bytes = tracker.category_peaks[MemoryCategory.ACTIVATIONS]
    return runs_matmuls(forward_counter) or runs_matmuls(backward_counter)


# ---------------------------------------------------------------- measured cells


def run_cell(
    loaded: LoadedModel,
    layers: Sequence[Layer],
    batch_size: int,
    trainable_layers: int,
    settings: SweepSettings,
    device: torch.device,
) -> tuple[Row, float]:
    """One measured cell; returns its row and the seconds spent inside training steps.

    A CUDA error that leaves the device unusable is raised as DeviceFailure; any other failure is the row's.
    """
    began: float | None = None
    try:
        with prepared_cell(loaded, layers, batch_size, trainable_layers, settings, device) as cell:
            began = time.perf_counter()
            for _ in range(settings.warmup_steps):
                cell.step()
            retries = reset_cuda_peaks(device) if device.type == "cuda" else 0
            times = time_steps(cell.step, device, settings.min_steps, settings.max_steps, settings.median_tolerance)
            row = cell.row
            if device.type == "cuda":
                _record_cuda_memory(row, cuda_peaks(device, retries), device)
            instrumented_step(cell, device, cuda_block_bytes if device.type == "cuda" else int)
            if device.type != "cuda":
                row.peak_memory_bytes = row.tracked_peak_bytes
                row.memory_source = "cpu-tensor-tracker"
            seconds = time.perf_counter() - began
        _record_timing(row, times, device, loaded.workload.items_per_batch(batch_size))
        return row, seconds
    except Exception as error:  # noqa: BLE001 - one failed cell never stops the sweep, unless the GPU is gone
        if is_sticky_cuda_error(error):
            raise DeviceFailure(
                f"the GPU cannot run anything more in this process ({first_line(error)}) at batch {batch_size}, "
                f"z={trainable_layers}; the cells before it are saved, rerun the rest in a new process"
            ) from error
        row = failed_row(new_row(layers, batch_size, trainable_layers), _failure_status(error), first_line(error))
        return row, 0.0 if began is None else time.perf_counter() - began


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


def _record_timing(row: Row, times: StepTimes, device: torch.device, items_per_batch: int) -> None:
    stats = TimingStats.from_samples(times.step_ms)
    row.step_time_ms = stats.median_ms
    row.step_time_mean_ms = stats.mean_ms
    row.step_time_std_ms = stats.std_ms
    row.step_time_p10_ms = stats.p10_ms
    row.step_time_p90_ms = stats.p90_ms
    row.step_time_ci_low_ms = stats.ci_low_ms
    row.step_time_ci_high_ms = stats.ci_high_ms
    row.measured_steps = stats.count
    row.time_source = "cuda-events-pipelined" if device.type == "cuda" else "perf-counter"
    if times.host_ms:
        row.host_time_ms = statistics.median(times.host_ms)
        row.host_bound = times.host_bound
    step_seconds = stats.median_ms / 1000.0
    row.throughput_per_s = items_per_batch / step_seconds
    row.achieved_tflops = (row.flops or 0) / step_seconds / 1e12


# ---------------------------------------------------------------- the sweep


def new_profile(
    loaded: LoadedModel,
    layers: Sequence[Layer],
    settings: SweepSettings,
    environment: EnvironmentInfo,
) -> Profile:
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
    cell_runner: CellRunner = run_cell,
    environment: EnvironmentInfo | None = None,
) -> Profile:
    """Run every cell; `save(profile)` runs after each cell and at the end (also on Ctrl-C).

    `cell_runner` replaces the measured cell (`layerprof estimate` runs cells on fake tensors).
    """
    profile = new_profile(loaded, layers, settings, environment or describe_environment(device))
    total = len(settings.batch_sizes) * len(settings.trainable_layer_counts)
    began = time.perf_counter()
    in_steps = 0.0
    position = 0
    guard = torch.cuda.device(device) if device.type == "cuda" else nullcontext()
    with guard:
        try:
            if device.type == "cuda":  # the first cell starts from an empty cache, as every later one does
                gc.collect()
                torch.cuda.empty_cache()
            for batch_size in settings.batch_sizes:
                out_of_memory_at: int | None = None
                for trainable_layers in settings.trainable_layer_counts:
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
                        row, seconds = cell_runner(loaded, layers, batch_size, trainable_layers, settings, device)
                        in_steps += seconds
                        if row.status == "oom":
                            out_of_memory_at = trainable_layers
                    profile.rows.append(row)
                    profile.timing = SweepTiming(time.perf_counter() - began, in_steps)
                    if save:
                        save(profile)
                    if observer:
                        observer.cell_finished(row)
            profile.complete = True
        finally:
            profile.timing = SweepTiming(time.perf_counter() - began, in_steps)
            if save:
                save(profile)
    return profile


# ---------------------------------------------------------------- a sweep ready to run


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

    def run(self, observer: SweepObserver | None = None) -> Profile:
        """Run every cell, saving the profile (JSON and CSV) after each."""

        def save(profile: Profile) -> None:
            save_profile(profile, self.path)

        if self.settings.mode == "estimate":
            from layerprof.estimate import estimate_model

            return estimate_model(
                self.spec, self.options, self.settings, observer=observer, save=save, layers=self.layers
            )
        assert self.loaded is not None
        return profile_model(
            self.loaded,
            self.layers,
            self.settings,
            self.device,
            observer=observer,
            save=save,
            environment=self.environment,
        )


def validate_settings(settings: SweepSettings) -> None:
    if settings.warmup_steps < 1:
        raise LayerprofError(
            f"--warmup {settings.warmup_steps}: at least 1 warm-up step is needed (the first step allocates the "
            "optimizer state, which a measured step must not include)"
        )
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
) -> SweepJob:
    """Build MODEL on the device and resolve the cells; `settings.batch_sizes` empty means the family's default.
    The default output is profiles/MODEL-DEVICE.json; `tf32` sets TensorFloat-32 (None: PyTorch's defaults)."""
    validate_settings(settings)
    device = resolve_device(device_name)
    apply_tf32(tf32)
    environment = describe_environment(device)
    path = ensure_writable(out or Path("profiles") / f"{model_slug(spec)}-{device_slug(environment)}.json")
    loaded = build_model(spec, options, device=device, dtype=torch_dtype(settings.precision))
    layers = loaded.split()
    settings = replace(
        settings,
        mode="measure",
        batch_sizes=settings.batch_sizes or loaded.workload.default_batch_sizes,
        trainable_layer_counts=layer_selection.resolve(len(layers)),
    )
    return SweepJob(spec, options, layers, settings, device, environment, path, loaded)
