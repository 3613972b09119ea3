"""Predict memory and FLOPs without a GPU: run each cell's training step on fake tensors.

Under `FakeTensorMode` every tensor has a shape, a dtype and a storage but no data, so the live-tensor
tracker sees exactly the allocations a real step makes (checked against real CPU tensors) while nothing of
the model's size is ever allocated. The model is built with CPU dispatch: fake CUDA tensors cannot run a
backward pass on a machine without CUDA. For `--target cuda` every storage holds the block the CUDA caching
allocator would give it (`layerprof.devices.AllocatorConfig`: 512-byte rounding, large blocks kept whole when
at most 1 MiB would remain, PYTORCH_CUDA_ALLOC_CONF's settings honoured), and the cuBLAS/cuBLASLt workspaces of
the target's architecture are added for each thread that runs a matrix product (the forward's and autograd's
backward thread hold one set each): together what `torch.cuda.max_memory_allocated` counts.

Not modelled: the CUDA context (`ladder` and `fit` reserve 512 MiB for it), cuDNN's convolution workspaces
(they depend on the algorithm cuDNN picks), allocator fragmentation and the reuse of larger cached blocks
(reserved exceeds allocated by a few per cent up to ~20%), and kernels whose CUDA implementation saves
different tensors for backward than the CPU one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from layerprof.devices import (
    CUDA_CONTEXT_RESERVE_BYTES,
    TARGETS,
    AllocatorConfig,
    MatmulThreads,
    cublas_workspace_bytes,
    gpu_kind,
    gpu_memory_bytes,
    kind_of_device,
    smallest_gpu_for,
)
from layerprof.environment import apply_threads, describe_environment
from layerprof.errors import LayerprofError
from layerprof.layers import Layer
from layerprof.measure import StepTrace, first_line
from layerprof.models import LoadedModel, ModelOptions, build_fake, model_slug, split_without_memory
from layerprof.parsing import LayerSelection
from layerprof.profile import EnvironmentInfo, Profile, Row, SweepSettings, ensure_writable, load_profile
from layerprof.sweep import (
    SweepJob,
    SweepObserver,
    failed_row,
    instrumented_step,
    new_profile,
    new_row,
    prepared_cell,
    profile_model,
    resumable_profile,
    torch_dtype,
    warn_frozen_batchnorm,
)
from layerprof.timemodel import DevicePeaks, MeasuredStep, Numerics, TimeModel, cpu_peaks
from layerprof.timemodel import calibrate as calibrate_model

ESTIMATE_DEVICE = torch.device("cpu")  # the dispatch device of the fake tensors


def build_fake_model(spec: str, options: ModelOptions, precision: str) -> tuple[FakeTensorMode, LoadedModel]:
    """The model on fake tensors in the precision's parameter dtype (layerprof.models.build_fake)."""
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
    loaded: LoadedModel,
    layers: Sequence[Layer],
    batch_size: int,
    trainable_layers: int,
    settings: SweepSettings,
    device: torch.device,
    *,
    time_model: TimeModel | None = None,
    traces: dict[tuple[int, int], StepTrace] | None = None,
) -> tuple[Row, float]:
    """One cell on fake tensors: optimizer state primed (steady state), then one tracked step; its step time
    predicted by `time_model` where given, its operations kept in `traces` where given (for calibration)."""
    target = settings.target or "cuda"
    try:
        # the optimizer implementation PyTorch picks on the target: multi-tensor on CUDA, per-tensor on CPU
        on_cuda = target == "cuda"
        with prepared_cell(
            loaded,
            layers,
            batch_size,
            trainable_layers,
            settings,
            device,
            foreach=on_cuda,
            cuda_autocast_on_cpu=on_cuda,
            with_scaler=False,
        ) as cell:
            # steady state without a forward pass: zero gradients make the optimizer create its state
            for param in cell.params:
                param.grad = torch.zeros_like(param)
            cell.optimizer.step()
            cell.optimizer.zero_grad(set_to_none=True)
            threads, trace = instrumented_step(cell, device, allocation_size_for(target))
            row = cell.row
        row.memory_workspace_bytes = workspace_for(settings, threads) if target == "cuda" else 0
        row.peak_memory_bytes = (row.tracked_peak_bytes or 0) + row.memory_workspace_bytes
        row.memory_source = f"estimate-{target}"
        if traces is not None:
            traces[row.key] = trace
        if time_model is not None:
            predicted = time_model.predict(trace)
            row.predicted_step_time_ms = predicted.step_ms
            row.predicted_device_time_ms = predicted.device_ms
            row.predicted_host_time_ms = predicted.host_ms
            row.predicted_host_bound = predicted.host_bound if target == "cuda" else None
        return row, 0.0
    except Exception as error:  # noqa: BLE001 - an operator fake tensors cannot run fails its cell, named
        row = new_row(layers, batch_size, trainable_layers)
        return failed_row(row, "error", f"cannot estimate: {_why_not(error)}"), 0.0


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
    save: Callable[[Profile], Any] | None = None,
    layers: Sequence[Layer] | None = None,
    order: tuple[str, str] | None = None,
    resume: Profile | None = None,
    time_model: TimeModel | None = None,
    traces: dict[tuple[int, int], StepTrace] | None = None,
) -> Profile:
    """A Profile of estimated memory and FLOPs for every cell (`settings.target`), with step times predicted by
    `time_model` where given (labelled as predictions); each cell's operations kept in `traces` where given.
    `layers` (with the `order` they are in) is a split made before, on the meta device; `resume` an interrupted
    estimate of the same sweep whose finished cells are kept."""
    target = settings.target or "cuda"
    if target not in TARGETS:
        raise LayerprofError(f"--target must be cuda or cpu, got {target!r}")
    settings = replace(settings, mode="estimate", target=target)
    mode, loaded = build_fake_model(spec, options, settings.precision)
    if order is not None:
        loaded.order, loaded.order_reason = order
    runner = functools.partial(estimate_cell, time_model=time_model, traces=traces)
    described = time_model.to_dict() if time_model is not None else None

    def save_with_time_model(profile: Profile) -> None:
        profile.time_model = described
        if save:
            save(profile)

    with mode:
        split = list(layers) if layers is not None else loaded.split()
        profile = profile_model(
            loaded,
            split,
            settings,
            ESTIMATE_DEVICE,
            observer=observer,
            save=save_with_time_model,
            cell_runner=runner,
            environment=estimate_environment(target, settings.target_gpu),
            resume=resume,
        )
    profile.time_model = described
    return profile


# ---------------------------------------------------------------- the time model behind predicted step times


def default_time_model(settings: SweepSettings, threads: int | None = None) -> TimeModel:
    """The target's peaks with the documented default constants: the named GPU's datasheet (H100's when none is
    named, as for the workspaces), or this CPU's own measured peaks at `threads`."""
    if (settings.target or "cuda") == "cpu":
        return TimeModel.default(cpu_peaks(threads), Numerics.current())
    gpu = gpu_kind(settings.target_gpu or "H100")
    return TimeModel.default(DevicePeaks.of_gpu(gpu), Numerics.current())


def resolve_time_model(
    settings: SweepSettings, calibrate: Sequence[Path] = (), threads: int | None = None, observer: Any = None
) -> TimeModel:
    """The time model an estimate predicts with: the defaults, or fitted to the measured profiles in `calibrate`
    (any models, measured on the target's device kind), or reused from an estimate that holds a fitted one."""
    model = default_time_model(settings, threads)
    if not calibrate:
        return model
    profiles = [load_profile(path) for path in calibrate]
    reused = [p for p in profiles if p.is_estimate]
    if reused:
        if len(profiles) > 1:
            raise LayerprofError("--calibrate takes either one estimate to reuse its time model, or measured profiles")
        return _reused_time_model(reused[0], model, calibrate[0])
    steps = []
    for path, profile in zip(calibrate, profiles, strict=True):
        _same_device(profile, model, path, threads)
        steps.extend(measured_steps(profile, settings.target or "cuda"))
    if not steps:
        raise LayerprofError(
            f"--calibrate: no cell of {', '.join(map(str, calibrate))} ran (status ok, with a step time); "
            "give measured profiles with ok cells"
        )
    return calibrate_model(steps, model.peaks, model.numerics)


def _reused_time_model(profile: Profile, target: TimeModel, path: Path) -> TimeModel:
    if not profile.time_model:
        raise LayerprofError(f"--calibrate {path}: this estimate holds no time model; give measured profiles")
    reused = TimeModel.from_dict(profile.time_model, source=str(path))
    if reused.peaks.name != target.peaks.name:
        raise LayerprofError(
            f"--calibrate {path}: its time model is for {reused.peaks.name}, this estimate for {target.peaks.name}; "
            "calibrate with profiles of the same device kind"
        )
    return TimeModel(target.peaks, reused.constants, target.numerics, reused.residuals)


def _same_device(profile: Profile, model: TimeModel, path: Path, threads: int | None) -> None:
    """Calibration data must come from the device the estimate predicts for."""
    env = profile.environment
    if model.peaks.kind == "cuda":
        gpu = kind_of_device(env.device_name, env.total_memory_bytes) if env.device_kind == "cuda" else None
        if gpu is None or gpu.name != model.peaks.name:
            raise LayerprofError(
                f"--calibrate {path}: measured on {env.device_name!r}, not on {model.peaks.name}; calibrate with "
                f"profiles measured on that GPU kind, or estimate for it (--gpu NAME)"
            )
        return
    if env.device_kind != "cpu" or env.device_name != model.peaks.name:
        raise LayerprofError(
            f"--calibrate {path}: measured on {env.device_name!r}, not on this CPU ({model.peaks.name}); CPU "
            "estimates calibrate with profiles measured here"
        )
    wanted = threads or torch.get_num_threads()
    if env.torch_threads and env.torch_threads != wanted:
        raise LayerprofError(
            f"--calibrate {path}: measured with {env.torch_threads} thread(s), the estimate uses {wanted}; "
            f"pass --threads {env.torch_threads}"
        )


def measured_steps(profile: Profile, target: str) -> list[MeasuredStep]:
    """Every measured cell of a profile that ran, with its step traced again on fake tensors."""
    ok = [row for row in profile.rows if row.ok and row.step_time_ms]
    if not ok:
        return []
    traces: dict[tuple[int, int], StepTrace] = {}
    settings = replace(
        profile.settings,
        batch_sizes=tuple(sorted({row.batch_size for row in ok})),
        trainable_layer_counts=tuple(sorted({row.trainable_layers for row in ok})),
        mode="estimate",
        target=target,
        target_gpu=None,
    )
    estimate_model(profile.model.spec, ModelOptions.of_profile(profile), settings, traces=traces)
    numerics = Numerics.of(profile.environment.numerics)
    name = profile.model.spec
    return [
        MeasuredStep(
            f"{name} b{row.batch_size} z={row.trainable_layers}",
            traces[row.key],
            row.step_time_ms,
            row.host_time_ms,
            numerics,
        )  # fmt: skip
        for row in ok
        if row.key in traces
    ]


def plan_estimate(
    spec: str,
    options: ModelOptions,
    settings: SweepSettings,
    layer_selection: LayerSelection,
    out: Path | None = None,
    calibrate: Sequence[Path] = (),
    threads: int | None = None,
    restart: bool = False,
) -> SweepJob:
    """Split MODEL on the meta device, resolve the cells and the time model (fitted to `calibrate`'s measured
    profiles where given); the default output is profiles/MODEL-estimate-TARGET.json. An interrupted estimate of
    the same sweep there is resumed unless `restart`."""
    target = settings.target or "cuda"
    if target not in TARGETS:
        raise LayerprofError(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    if threads is not None:
        apply_threads(threads, None)
    path = ensure_writable(out or Path("profiles") / f"{model_slug(spec)}-estimate-{target}.json")
    meta, layers = split_without_memory(spec, options)
    settings = replace(
        settings,
        mode="estimate",
        target=target,
        batch_sizes=settings.batch_sizes or meta.workload.default_batch_sizes,
        trainable_layer_counts=layer_selection.resolve(len(layers)),
    )
    warn_frozen_batchnorm(meta.model, layers, settings)
    environment = estimate_environment(target, settings.target_gpu)
    resume = resumable_profile(path, new_profile(meta, layers, settings, environment), restart)
    order = (meta.order, meta.order_reason)
    time_model = resolve_time_model(settings, calibrate, threads)
    return SweepJob(
        spec, options, layers, settings, ESTIMATE_DEVICE, environment, path,
        order=order, resume=resume, time_model=time_model,
    )  # fmt: skip


# ---------------------------------------------------------------- what fits


@dataclass
class FitResult:
    trainable_layers: int
    largest_batch_size: int  # 0: not even batch 1 fits
    need_at_largest_bytes: int | None
    smallest_gpu: str | None = None  # for the requested batch size, the smallest listed GPU that runs it


@dataclass
class FitReport:
    model: str
    target: str
    memory_bytes: int  # the budget
    batch_size: int | None  # the batch the smallest GPUs were found for, if asked
    results: list[FitResult]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_model(
    spec: str,
    options: ModelOptions,
    settings: SweepSettings,
    memory_bytes: int,
    layer_selection: LayerSelection,
    batch_size: int | None = None,
) -> FitReport:
    """For each selected z, the largest batch whose estimated need fits `memory_bytes` (context reserve included
    for CUDA) and, given `batch_size`, the smallest listed GPU that runs it."""
    search = FitSearch(spec, options, settings)
    zs = layer_selection.resolve(len(search.layers))
    results = [search.largest_batch(z, memory_bytes) for z in zs]
    if batch_size is not None:
        for result in results:
            result.smallest_gpu = search.smallest_gpu(result.trainable_layers, batch_size)
    if all(result.largest_batch_size == 0 for result in results):
        lowest = min(result.need_at_largest_bytes or 0 for result in results)
        raise LayerprofError(
            f"no z fits in {memory_bytes / 2**30:.2f} GiB even at batch 1; the smallest need is "
            f"{lowest / 2**30:.2f} GiB (z={min(zs)}, context reserve included)"
        )
    return FitReport(spec, search.settings.target or "cuda", memory_bytes, batch_size, results)


class FitSearch:
    """Largest batch per z under a memory budget: a line through two estimates, then checked at the boundary."""

    def __init__(self, spec: str, options: ModelOptions, settings: SweepSettings) -> None:
        self.settings = replace(settings, mode="estimate", target=settings.target or "cuda")
        self.mode, self.loaded = build_fake_model(spec, options, settings.precision)
        self.reserve = CUDA_CONTEXT_RESERVE_BYTES if self.settings.target == "cuda" else 0
        with self.mode:
            self.layers = self.loaded.split()
        self._cache: dict[tuple[int, int], int] = {}

    def need_bytes(self, trainable_layers: int, batch_size: int) -> int:
        key = (trainable_layers, batch_size)
        if key not in self._cache:
            with self.mode:
                row, _ = estimate_cell(
                    self.loaded, self.layers, batch_size, trainable_layers, self.settings, ESTIMATE_DEVICE
                )
            if not row.ok:
                raise LayerprofError(f"z={trainable_layers}, batch {batch_size}: {row.message}")
            self._cache[key] = int(row.peak_memory_bytes or 0) + self.reserve
        return self._cache[key]

    def largest_batch(self, trainable_layers: int, budget_bytes: int, limit: int = 1 << 24) -> FitResult:
        """Memory grows with the batch almost linearly: a line through batch 1 and 256 guesses the boundary,
        steps of 1% of the guess (doubling) bracket it, and interpolation inside the bracket (bisection where
        interpolation stalls) pins it, so a z costs a handful of estimates. The allocator's block rules make
        the line a little uneven. The answer fits, and the next batch does not (below 1,000; above, a batch within
        0.1% of it does not)."""

        def need(batch_size: int) -> int:
            return self.need_bytes(trainable_layers, batch_size)

        if need(1) > budget_bytes:
            return FitResult(trainable_layers, 0, need(1))
        low, high = self._bracket(need, budget_bytes, limit)
        if high is None:
            return FitResult(trainable_layers, low, need(low))
        interpolate = True
        while high - low > max(1, low // 1000):  # exact below batch 1000, within 0.1% above
            if interpolate:
                share = (budget_bytes - need(low)) / max(1, need(high) - need(low))
                middle = min(high - 1, max(low + 1, low + math.floor(share * (high - low))))
            else:
                middle = (low + high) // 2
            width = high - low
            low, high = (middle, high) if need(middle) <= budget_bytes else (low, middle)
            interpolate = high - low < width / 2  # bisect after a step that did not halve the bracket
        return FitResult(trainable_layers, low, need(low))

    @staticmethod
    def _bracket(need: Callable[[int], int], budget_bytes: int, limit: int) -> tuple[int, int | None]:
        """(a batch that fits, a larger one that does not), or (limit, None) when even the limit fits."""
        previous, guess = 1, 256
        for _ in range(4):  # secant steps along the memory line, from batch 1 and 256 towards the boundary
            rise = need(guess) - need(previous)
            if rise <= 0:
                break
            target = guess + (budget_bytes - need(guess)) * (guess - previous) / rise
            previous, guess = guess, int(max(1, min(limit, math.floor(target))))
            if abs(guess - previous) <= max(1, previous // 100):
                break
        step = max(1, guess // 100)
        if need(guess) <= budget_bytes:
            low = guess
            while low < limit:
                candidate = min(limit, low + step)
                if need(candidate) > budget_bytes:
                    return low, candidate
                low, step = candidate, step * 2
            return limit, None
        high = guess
        while True:
            candidate = max(1, high - step)
            if need(candidate) <= budget_bytes:
                return candidate, high
            high, step = candidate, step * 2

    def smallest_gpu(self, trainable_layers: int, batch_size: int) -> str | None:
        return smallest_gpu_for(self.need_bytes(trainable_layers, batch_size))
