"""Running the (batch size, trainable layers) cells: freeze, warm up, time, instrument, save after each.

Each cell reuses the one model but starts clean: its own freezing, a new optimizer over the trainable
parameters only, no gradients, the allocator cache emptied. So a cell's memory figures do not depend on the
cells that ran before it. Within a batch size, z rises; once a z runs out of memory, larger z are skipped.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

import torch

from layerprof.environment import describe_environment
from layerprof.layers import Layer, freeze_layers, total_params, trainable_params
from layerprof.measure import (
    LiveTensorTracker,
    TimingStats,
    cuda_peaks,
    first_line,
    flop_counter,
    is_out_of_memory,
    nvml_process_bytes,
    optimizer_state_bytes,
    optimizer_state_tensors,
    reset_cuda_peaks,
    tensors_in,
    time_steps,
)
from layerprof.models import LoadedModel
from layerprof.profile import Profile, Row

OPTIMIZERS = ("adamw", "adam", "sgd")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class SweepSettings:
    batch_sizes: tuple[int, ...]
    trainable_layers: tuple[int, ...]  # the z values to run, ascending
    warmup_steps: int = 10
    min_steps: int = 10
    max_steps: int = 50
    median_tolerance: float = 0.02  # stop once the 95% CI of the median is within +-2%
    optimizer: str = "adamw"
    learning_rate: float = 1e-3
    dtype: str = "float32"

    def describe(self) -> dict[str, Any]:
        data = asdict(self)
        data["stopping_rule"] = (
            f"after {self.min_steps} measured steps, stop once the 95% confidence interval of the median "
            f"step time is within +-{self.median_tolerance:.0%}; at most {self.max_steps} steps"
        )
        return data


class SweepObserver(Protocol):
    def cell_started(self, batch_size: int, trainable_layers: int, position: int, total: int) -> None: ...

    def cell_finished(self, row: Row) -> None: ...


CellRunner = Callable[[LoadedModel, Sequence[Layer], int, int, "SweepSettings", torch.device], tuple[Row, float]]


def make_optimizer(
    name: str, params: list[torch.nn.Parameter], learning_rate: float, foreach: bool | None = None
) -> torch.optim.Optimizer:
    """`foreach=None` is PyTorch's own choice: the multi-tensor kernels on CUDA, a per-tensor loop on CPU."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=learning_rate, foreach=foreach)
    if name == "adam":
        return torch.optim.Adam(params, lr=learning_rate, foreach=foreach)
    if name == "sgd":
        return torch.optim.SGD(params, lr=learning_rate, momentum=0.9, foreach=foreach)
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")


def dtype_note(dtype: str) -> str:
    if dtype == "float32":
        return "float32 throughout"
    return (
        f"parameters, gradients, optimizer state and floating inputs all in {dtype} "
        "(model.to(dtype); no autocast, no float32 master weights)"
    )


def new_profile(
    loaded: LoadedModel,
    layers: Sequence[Layer],
    settings: SweepSettings,
    device: torch.device,
    environment: dict[str, Any] | None = None,
) -> Profile:
    model_info = loaded.describe()
    model_info["layers"] = [layer.to_dict() for layer in layers]
    model_info["total_params"] = total_params(layers)
    workload = loaded.workload.describe()
    workload.update(dtype=settings.dtype, dtype_mode=dtype_note(settings.dtype), optimizer=settings.optimizer)
    return Profile(
        model=model_info,
        workload=workload,
        environment=environment or describe_environment(device),
        settings=settings.describe(),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def profile_model(
    loaded: LoadedModel,
    layers: Sequence[Layer],
    settings: SweepSettings,
    device: torch.device,
    observer: SweepObserver | None = None,
    save: Callable[[Profile], Any] | None = None,
    cell_runner: CellRunner | None = None,
    environment: dict[str, Any] | None = None,
) -> Profile:
    """Measure every cell; `save(profile)` runs after each cell and at the end (also on Ctrl-C).

    `cell_runner` replaces the measured cell (`layerprof estimate` runs cells on fake tensors).
    """
    cell_runner = cell_runner or run_cell
    profile = new_profile(loaded, layers, settings, device, environment)
    total = len(settings.batch_sizes) * len(settings.trainable_layers)
    began = time.perf_counter()
    in_steps = 0.0
    position = 0
    try:
        for batch_size in settings.batch_sizes:
            out_of_memory_at: int | None = None
            for trainable_layers in settings.trainable_layers:
                position += 1
                if observer:
                    observer.cell_started(batch_size, trainable_layers, position, total)
                if out_of_memory_at is not None:
                    row = Row(
                        batch_size,
                        trainable_layers,
                        "skipped",
                        message=f"skipped: z={out_of_memory_at} already ran out of memory at this batch size",
                        trainable_params=trainable_params(layers, trainable_layers),
                    )
                else:
                    row, seconds = cell_runner(loaded, layers, batch_size, trainable_layers, settings, device)
                    in_steps += seconds
                    if row.status == "oom":
                        out_of_memory_at = trainable_layers
                profile.rows.append(row)
                profile.timing = {"sweep_wall_s": time.perf_counter() - began, "in_steps_s": in_steps}
                if save:
                    save(profile)
                if observer:
                    observer.cell_finished(row)
        profile.complete = True
    finally:
        profile.timing = {"sweep_wall_s": time.perf_counter() - began, "in_steps_s": in_steps}
        if save:
            save(profile)
    return profile


def run_cell(
    loaded: LoadedModel,
    layers: Sequence[Layer],
    batch_size: int,
    trainable_layers: int,
    settings: SweepSettings,
    device: torch.device,
) -> tuple[Row, float]:
    """One cell; returns its row and the seconds spent inside training steps."""
    model, workload = loaded.model, loaded.workload
    dtype = DTYPES[settings.dtype]
    row = Row(batch_size, trainable_layers, "ok", trainable_params=trainable_params(layers, trainable_layers))
    row.trainable_fraction = row.trainable_params / max(1, total_params(layers))
    frozen = freeze_layers(model, layers, trainable_layers)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer: torch.optim.Optimizer | None = None
    batch: Any = None
    step: Callable[[], None] | None = None
    seconds = 0.0
    try:
        optimizer = make_optimizer(settings.optimizer, params, settings.learning_rate)
        batch = workload.make_batch(batch_size, device, dtype)

        step = training_step(model, workload, batch, optimizer)
        began = time.perf_counter()
        for _ in range(settings.warmup_steps):
            step()
        if device.type == "cuda":
            reset_cuda_peaks(device)
        samples = time_steps(step, device, settings.min_steps, settings.max_steps, settings.median_tolerance)
        if device.type == "cuda":
            row.peak_memory_bytes, row.peak_reserved_bytes = cuda_peaks(device)
            row.memory_source = "cuda-allocator"
            row.nvml_process_bytes = nvml_process_bytes(device)
        instrumented_step(model, workload, batch, optimizer, params, row)
        seconds = time.perf_counter() - began
        if device.type != "cuda":
            row.peak_memory_bytes = row.tracked_peak_bytes
            row.memory_source = "cpu-tensor-tracker"
        stats = TimingStats.from_samples(samples)
        row.step_time_ms = stats.median_ms
        row.step_time_mean_ms = stats.mean_ms
        row.step_time_std_ms = stats.std_ms
        row.step_time_p10_ms = stats.p10_ms
        row.step_time_p90_ms = stats.p90_ms
        row.step_time_ci_low_ms = stats.ci_low_ms
        row.step_time_ci_high_ms = stats.ci_high_ms
        row.measured_steps = stats.count
        step_seconds = stats.median_ms / 1000.0
        row.throughput_per_s = workload.items_per_batch(batch_size) / step_seconds
        row.achieved_tflops = (row.flops or 0) / step_seconds / 1e12
    except Exception as error:  # noqa: BLE001 - one failed cell never stops the sweep
        row = failed_row(row, "oom" if is_out_of_memory(error) else "error", first_line(error))
    finally:
        frozen.remove()
        for param in params:
            param.grad = None
        step = optimizer = batch = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row, seconds


def failed_row(row: Row, status: str, message: str) -> Row:
    """A fresh row for a cell that failed: its deterministic parameter counts kept, no partial figures."""
    failed = Row(row.batch_size, row.trainable_layers, status, message=message)
    failed.trainable_params, failed.trainable_fraction = row.trainable_params, row.trainable_fraction
    return failed


def training_step(
    model: torch.nn.Module, workload: Any, batch: Any, optimizer: torch.optim.Optimizer
) -> Callable[[], None]:
    """The step that is timed: forward, loss, backward, optimizer step, zero_grad. Nothing else."""

    def step() -> None:
        workload.loss(model, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def instrumented_step(
    model: torch.nn.Module,
    workload: Any,
    batch: Any,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    row: Row,
    allocation_rounding_bytes: int = 1,
) -> None:
    """One steady-state step under the live-tensor tracker, with FLOPs counted for forward and backward."""
    tracker = LiveTensorTracker(allocation_rounding_bytes)
    tracker.register(list(model.parameters()) + list(model.buffers()), "parameters")
    tracker.register(optimizer_state_tensors(optimizer), "optimizer_state")
    tracker.register(tensors_in(batch), "inputs")
    tracker.watch_gradients(params)
    with tracker:
        with flop_counter() as forward_counter:
            loss = workload.loss(model, batch)
        with flop_counter() as backward_counter:
            loss.backward()
        del loss
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    breakdown = tracker.breakdown()
    row.forward_flops = int(forward_counter.get_total_flops())
    row.backward_flops = int(backward_counter.get_total_flops())
    row.flops = row.forward_flops + row.backward_flops
    row.optimizer_state_bytes = optimizer_state_bytes(optimizer)
    row.tracked_peak_bytes = breakdown.peak_bytes
    row.memory_parameters_bytes = breakdown.parameters
    row.memory_gradients_bytes = breakdown.gradients
    row.memory_optimizer_state_bytes = breakdown.optimizer_state
    row.memory_activations_bytes = breakdown.activations
    row.memory_inputs_bytes = breakdown.inputs
