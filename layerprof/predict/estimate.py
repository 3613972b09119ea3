"""Predict memory and FLOPs without a GPU: run each cell's training step on fake tensors.

Under `FakeTensorMode` every tensor has a shape, a dtype and a storage but no data, so the live-tensor
tracker sees exactly the allocations a real step makes (checked against real CPU tensors) while nothing of
the model's size is ever allocated. The model is built with CPU dispatch: fake CUDA tensors cannot run a
backward pass on a machine without CUDA. For `--target cuda` every storage holds the block the CUDA caching
allocator would give it (`layerprof.devices.AllocatorConfig`: 512-byte rounding, large blocks kept whole when
at most 1 MiB would remain, PYTORCH_CUDA_ALLOC_CONF's settings honoured), and the cuBLAS/cuBLASLt workspaces of
the target's architecture are added for each thread that runs a matrix product (the forward's and autograd's
backward thread hold one set each): together what `torch.cuda.max_memory_allocated` counts.

Not modelled: the CUDA context (`ladder` and `fit` reserve 768 MiB for it), cuDNN's convolution workspaces
(they depend on the algorithm cuDNN picks), allocator fragmentation and the reuse of larger cached blocks
(reserved exceeds allocated by a few per cent up to ~20%), and kernels whose CUDA implementation saves
different tensors for backward than the CPU one.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from layerprof.devices import (
    TARGETS,
    AllocatorConfig,
    MatmulThreads,
    cublas_workspace_bytes,
    gpu_kind,
    gpu_memory_bytes,
)
from layerprof.errors import LayerprofError
from layerprof.measure.cells import (
    CellContext,
    CellRunner,
    failed_row,
    instrumented_step,
    new_row,
    prepared_cell,
    torch_dtype,
)
from layerprof.measure.environment import describe_environment
from layerprof.measure.instruments import FakeShortcuts, LiveTensorTracker, OpRecorder, StepTrace, first_line
from layerprof.measure.jobs import SweepObserver, profile_model
from layerprof.measure.optimizers import OptimizerSpec, optimizer_spec
from layerprof.predict.reuse import BlockRecords, ReplayMismatch
from layerprof.predict.timemodel import TimeModel
from layerprof.profile import EnvironmentInfo, JsonDict, Profile, Row, SweepSettings
from layerprof.sources.layers import Layer
from layerprof.sources.models import LoadedModel, ModelOptions, build_fake

if TYPE_CHECKING:
    from layerprof.predict.compose import Timeline

ESTIMATE_DEVICE = torch.device("cpu")  # the dispatch device of the fake tensors
# what an ok row of an optimizer whose step cannot run on fake tensors says (layerprof.measure.optimizers)
UNTRACED_STEP = (
    "{optimizer}'s step reads values back to the host, which fake tensors cannot: its state is counted by the "
    "library's own rules, the step's temporaries are left out"
)


def build_fake_model(spec: str, options: ModelOptions, precision: str) -> tuple[FakeTensorMode, LoadedModel]:
    """The model on fake tensors in the precision's parameter dtype (layerprof.sources.models.build_fake)."""
    return build_fake(spec, options, torch_dtype(precision))


def allocation_size_for(target: str) -> Callable[[int], int]:
    """What an allocation of n bytes holds on the target: the caching allocator's block on CUDA, under this
    process's PYTORCH_CUDA_ALLOC_CONF (set it as the training run will)."""
    return AllocatorConfig.from_environment().block_bytes if target == "cuda" else int


def workspace_for(settings: SweepSettings, threads: MatmulThreads) -> int:
    """cuBLAS/cuBLASLt workspaces a CUDA process holds once its threads have run matrix products: those of the
    named GPU's architecture, or Hopper's (the largest) when none is named; one set for the forward's thread and
    one for autograd's backward thread (`layerprof.devices.cublas_workspace_bytes`)."""
    gpu = gpu_kind(settings.target_gpu) if settings.target_gpu else gpu_kind("H100")
    return cublas_workspace_bytes(gpu.compute_capability, threads=threads, allocator=AllocatorConfig.from_environment())


def estimate_cell(
    context: CellContext,
    batch_size: int,
    trainable_layers: int,
    *,
    time_model: TimeModel | None = None,
    traces: dict[tuple[int, int], StepTrace] | None = None,
    primed: PrimedStates | None = None,
    timelines: dict[tuple[int, int], Timeline] | None = None,
    blocks: BlockRecords | None = None,
) -> tuple[Row, float]:
    """One cell on fake tensors: optimizer state primed (steady state), then one tracked step; its step time
    predicted by `time_model` where given, its operations kept in `traces` where given (for calibration).
    `primed` keeps each parameter's optimizer state for the next cells of the same model (`prime_optimizer`);
    `timelines` the step's allocation timeline (`layerprof.predict.compose.Timeline`, for the fit's batch lines);
    `blocks` the records of frozen layers' forwards, from which alike frozen layers are replayed
    (`layerprof.predict.reuse`; traced cell by cell under adapters and checkpointing)."""
    settings, device = context.settings, context.device
    target = settings.target or "cuda"
    try:
        # the optimizer implementation PyTorch picks on the target: multi-tensor on CUDA, per-tensor on CPU
        on_cuda = target == "cuda"
        with prepared_cell(
            context, batch_size, trainable_layers, foreach=on_cuda, cuda_autocast_on_cpu=on_cuda, with_scaler=False
        ) as cell:
            spec = optimizer_spec(settings.optimizer)
            assert cell.optimizer is not None  # a training cell always has one
            prime_optimizer(cell.optimizer, cell.params, primed, spec)
            cell.optimizer_steps = spec.traced  # not traced: the state counts, the step's temporaries do not
            recording = None
            if timelines is not None:
                from layerprof.predict.compose import RecordingTracker

                recording = RecordingTracker(allocation_size_for(target))
            tracker = recording if recording is not None else LiveTensorTracker(allocation_size_for(target))
            recorder = OpRecorder()
            replay: AbstractContextManager[None] = nullcontext()
            if blocks is not None and settings.adapter == "none" and settings.checkpointing == "none":
                replay = blocks.replaying(
                    cell.model, context.layers, trainable_layers, tracker, recorder, batch_size=batch_size
                )
                cell.backward = blocks.checked_backward(cell.backward)  # type: ignore[method-assign,assignment]
                cell.optimizer.step = blocks.steps.step(cell.optimizer, tracker, recorder)  # type: ignore[method-assign,assignment]
            with replay:
                threads, trace = instrumented_step(cell, device, allocation_size_for(target), tracker, recorder)
            if recording is not None and timelines is not None:
                timelines[(batch_size, trainable_layers)] = recording.timeline()
            row = cell.row
        row.memory_workspace_bytes = workspace_for(settings, threads) if target == "cuda" else 0
        row.peak_memory_bytes = (row.tracked_peak_bytes or 0) + row.memory_workspace_bytes
        row.memory_source = "estimate-cuda" if target == "cuda" else "estimate-cpu"
        row.estimate_basis = "traced"
        if not spec.traced:
            row.message = UNTRACED_STEP.format(optimizer=settings.optimizer)
        if traces is not None:
            traces[row.key] = trace
        if time_model is not None:
            predicted = time_model.predict(trace)
            row.predicted_step_time_ms = predicted.step_ms
            row.predicted_device_time_ms = predicted.device_ms
            row.predicted_host_time_ms = predicted.host_ms
            row.predicted_host_bound = predicted.host_bound if target == "cuda" else None
        return row, 0.0
    except ReplayMismatch as mismatch:  # a replayed block was not alike after all: the cell traced again
        assert blocks is not None
        blocks.refuse(mismatch.key, mismatch.scaled)
        return estimate_cell(
            context,
            batch_size,
            trainable_layers,
            time_model=time_model,
            traces=traces,
            primed=primed,
            timelines=timelines,
            blocks=blocks,
        )
    except Exception as error:  # noqa: BLE001 - an operator fake tensors cannot run fails its cell, named
        row = new_row(context.layers, batch_size, trainable_layers)
        return failed_row(row, "error", f"cannot estimate: {_why_not(error)}"), 0.0


# between cells an estimate saves its profile at most this often (and always at its end: `estimate_model`)
SAVE_EVERY_S = 2.0


@dataclass
class SpacedSave:
    """The `save` an estimate's sweep calls after each cell: the profile gets the time model's description and is
    saved at most every SAVE_EVERY_S (an estimate's cell takes a fraction of a second, a composed one none: writing
    the growing JSON and CSV after each was a tenth of an estimate's time); `flush` saves the last one handed over,
    which `estimate_model` calls when the sweep ends, interrupted or not."""

    save: Callable[[Profile], object] | None
    time_model: JsonDict | None
    last_saved_s: float = -math.inf
    unsaved: Profile | None = None

    def __call__(self, profile: Profile) -> None:
        """Hand over the sweep's profile after a cell: saved now if SAVE_EVERY_S has passed since the last save."""
        profile.time_model = self.time_model
        self.unsaved = profile
        if time.monotonic() - self.last_saved_s >= SAVE_EVERY_S:
            self.flush()

    def flush(self) -> None:
        """Save the last profile handed over, if it is not saved yet."""
        if self.save is not None and self.unsaved is not None:
            self.save(self.unsaved)
            self.last_saved_s = time.monotonic()
            self.unsaved = None


# a parameter's optimizer state, by the parameter's id, with the parameter itself: an id is reused once its object is
# gone (LoRA's adapters are built anew per cell), so a state is reused only for the very same parameter
PrimedStates = dict[int, tuple[torch.nn.Parameter, dict[str, object]]]


def prime_optimizer(
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.nn.Parameter],
    primed: PrimedStates | None,
    spec: OptimizerSpec | None = None,
) -> None:
    """Steady state without a forward pass: zero gradients make the optimizer create its state (an optimizer whose
    step cannot run on fake tensors, `spec.traced` False, gets the state its library's rules give). A parameter's
    state depends on the parameter and the optimizer's settings alone, so with `primed` (for one model and one
    optimizer setting) only parameters no earlier cell primed take the step, and the others get their state back:
    the per-parameter step was a third of a small model's trace."""
    cached: PrimedStates = primed if primed is not None else {}
    fresh = [param for param in params if id(param) not in cached or cached[id(param)][0] is not param]
    if fresh and spec is not None and not spec.traced:  # its step cannot run on fake tensors: the library's rules
        for param in fresh:
            optimizer.state[param] = spec.prime_state(optimizer, param)
            if primed is not None:
                primed[id(param)] = (param, optimizer.state[param])
    elif fresh:
        for param in fresh:
            param.grad = torch.zeros_like(param)
        with FakeShortcuts():
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if primed is not None:
            for param in fresh:
                primed[id(param)] = (param, optimizer.state[param])
    if primed is not None:  # in the parameters' order, as a first step creates it: the same timeline every cell
        optimizer.state.clear()
        for param in params:
            optimizer.state[param] = cached[id(param)][1]


def refuse_compile(settings: SweepSettings) -> None:
    """An estimate traces the eager step: torch.compile is measured only (`layerprof profile --compile`)."""
    if settings.compile_mode != "eager":
        raise LayerprofError(
            "--compile is measured only: an estimate traces the eager step on fake tensors and cannot say what "
            "torch.compile's fused kernels hold or take (run `layerprof profile --compile`, or estimate without it)"
        )


# Fake tensors have shapes but no values: an op whose output shape or a Python branch depends on values stops them.
DATA_DEPENDENT = ("DynamicOutputShapeException", "DataDependentOutputException", "GuardOnDataDependentSymNode")


def _why_not(error: BaseException) -> str:
    """The error in one line; for a forward pass that depends on the data (mixture-of-experts routing, a
    `.item()` in Python), what an estimate cannot do and what can."""
    if type(error).__name__ in DATA_DEPENDENT:
        return (
            f"the forward pass depends on the data ({first_line(error)}; e.g. mixture-of-experts routing), which "
            "fake tensors do not hold; measure it with `layerprof profile`"
        )
    return first_line(error)


def estimate_environment(target: str, target_gpu: str | None = None) -> EnvironmentInfo:
    """The estimating machine's software, labelled as an estimate for the target (and its memory, for a named
    GPU, so that ladders count slots on it)."""
    environment = describe_environment(ESTIMATE_DEVICE)
    return replace(
        environment,
        device_kind=target,
        device_name=f"estimate for {target_gpu or target}",
        total_memory_bytes=gpu_memory_bytes(target_gpu) if target_gpu else None,
        estimated=True,
        numerics={},
    )


def estimate_model(
    spec: str,
    options: ModelOptions,
    settings: SweepSettings,
    *,
    observer: SweepObserver | None = None,
    save: Callable[[Profile], object] | None = None,
    layers: Sequence[Layer] | None = None,
    order: tuple[str, str] | None = None,
    resume: Profile | None = None,
    time_model: TimeModel | None = None,
    traces: dict[tuple[int, int], StepTrace] | None = None,
    compose: bool = True,
    reuse: bool = True,
    blocks: BlockRecords | None = None,
) -> Profile:
    """A Profile of estimated memory and FLOPs for every cell (`settings.target`), with step times predicted by
    `time_model` where given (labelled as predictions); each cell's operations kept in `traces` where given.
    `layers` (with the `order` they are in) is a split made before, on the meta device; `resume` an interrupted
    estimate of the same sweep whose finished cells are kept. With `compose` (and no `traces` to keep), runs of
    alike z are composed from a few traced anchors (`layerprof.predict.compose`), each row saying which it is.
    With `reuse`, a frozen layer alike to one already traced is replayed from its record (`layerprof.predict.reuse`,
    kept in `blocks` where given): the same figures to the byte; without it every layer of every cell is traced."""
    target = settings.target or "cuda"
    if target not in TARGETS:
        raise LayerprofError(f"--target must be cuda or cpu, got {target!r}")
    refuse_compile(settings)
    settings = replace(settings, mode="estimate", target=target)
    compose = compose and settings.adapter == "none" and settings.checkpointing == "none"  # traced cell by cell
    mode, loaded = build_fake_model(spec, options, settings.precision)
    if order is not None:
        loaded.order, loaded.order_reason = order
    if reuse and blocks is None:
        blocks = BlockRecords()
    runner: CellRunner = functools.partial(
        estimate_cell, time_model=time_model, traces=traces, primed={}, blocks=blocks if reuse else None
    )
    if compose and traces is None:
        from layerprof.predict.compose import ComposedCells

        runner = ComposedCells(runner, settings.trainable_layer_counts)
    described = time_model.to_dict() if time_model is not None else None

    saver = SpacedSave(save, described)

    with mode:
        split = list(layers) if layers is not None else loaded.split()
        try:
            profile = profile_model(
                loaded,
                split,
                settings,
                ESTIMATE_DEVICE,
                observer=observer,
                save=saver,
                cell_runner=runner,
                environment=estimate_environment(target, settings.target_gpu),
                resume=resume,
            )
        finally:
            saver.flush()
    profile.time_model = described
    return profile
