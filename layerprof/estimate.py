"""Predict memory and FLOPs without a GPU: run each cell's training step on fake tensors.

Under `FakeTensorMode` every tensor has a shape, a dtype and a storage but no data, so the live-tensor
tracker sees exactly the allocations a real step makes (checked against real CPU tensors) while nothing of
the model's size is ever allocated. The model is built with CPU dispatch: fake CUDA tensors cannot run a
backward pass on a machine without CUDA. For `--target cuda` every storage is rounded up as the CUDA caching
allocator rounds it (512 bytes), which is what `torch.cuda.max_memory_allocated` counts.

Not modelled: the CUDA context and cuBLAS/cuDNN workspaces (a few hundred MiB per process; `ladder` and
`fit` reserve 512 MiB), allocator fragmentation (reserved exceeds allocated by a few per cent up to ~20%),
and kernels whose CUDA implementation saves different tensors for backward than the CPU one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from layerprof.environment import describe_environment
from layerprof.errors import LayerprofError
from layerprof.ladder import CUDA_CONTEXT_RESERVE_BYTES
from layerprof.layers import Layer, freeze_layers, total_params, trainable_params
from layerprof.measure import CUDA_ALLOCATION_ROUNDING_BYTES, first_line
from layerprof.models import LoadedModel, ModelOptions, build_model
from layerprof.profile import Profile, Row
from layerprof.sweep import (
    DTYPES,
    SweepObserver,
    SweepSettings,
    failed_row,
    instrumented_step,
    make_optimizer,
    profile_model,
)

TARGETS = ("cuda", "cpu")
ESTIMATE_DEVICE = torch.device("cpu")  # the dispatch device of the fake tensors

# nvidia-smi's total memory (MiB) of common GPUs and MIG slices.
GPUS: dict[str, int] = {
    "1g.5gb": 4864,
    "1g.10gb": 9984,
    "T4": 15360,
    "2g.20gb": 19968,
    "L4": 23034,
    "A10": 23028,
    "RTX4090": 24564,
    "3g.40gb": 40192,
    "A100-40GB": 40960,
    "L40S": 46068,
    "A100-80GB": 81920,
    "H100": 81559,
    "H200": 143771,
    "B200": 183359,
}


def build_fake_model(spec: str, options: ModelOptions, dtype: torch.dtype) -> tuple[FakeTensorMode, LoadedModel]:
    """The model with fake parameters: its full size is never allocated."""
    mode = FakeTensorMode()
    with mode:
        loaded = build_model(spec, options, device=ESTIMATE_DEVICE, dtype=dtype)
    return mode, loaded


def rounding_for(target: str) -> int:
    return CUDA_ALLOCATION_ROUNDING_BYTES if target == "cuda" else 1


def estimate_cell(
    loaded: LoadedModel,
    layers: Sequence[Layer],
    batch_size: int,
    trainable_layers: int,
    settings: SweepSettings,
    device: torch.device,
    target: str = "cuda",
) -> tuple[Row, float]:
    """One cell on fake tensors: optimizer state primed (steady state), then one tracked step."""
    model, workload = loaded.model, loaded.workload
    row = Row(batch_size, trainable_layers, "ok", trainable_params=trainable_params(layers, trainable_layers))
    row.trainable_fraction = row.trainable_params / max(1, total_params(layers))
    frozen = freeze_layers(model, layers, trainable_layers)
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        # the optimizer implementation PyTorch picks on the target: multi-tensor on CUDA, per-tensor on CPU
        optimizer = make_optimizer(settings.optimizer, params, settings.learning_rate, foreach=target == "cuda")
        # steady state without a forward pass: zero gradients make the optimizer create its state
        for param in params:
            param.grad = torch.zeros_like(param)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        batch = workload.make_batch(batch_size, device, DTYPES[settings.dtype])
        instrumented_step(model, workload, batch, optimizer, params, row, rounding_for(target))
        row.peak_memory_bytes = row.tracked_peak_bytes
        row.memory_source = f"estimate-{target}"
    except Exception as error:  # noqa: BLE001 - an operator fake tensors cannot run fails its cell, named
        row = failed_row(row, "error", f"cannot estimate: {first_line(error)}")
    finally:
        frozen.remove()
        for param in params:
            param.grad = None
    return row, 0.0


def estimate_environment(target: str) -> dict[str, Any]:
    environment = describe_environment(ESTIMATE_DEVICE)
    environment.update(
        device_kind=target,
        device_name=f"estimate for {target}",
        total_memory_bytes=None,
        estimated=True,
    )
    return environment


def estimate_model(
    spec: str,
    options: ModelOptions,
    settings: SweepSettings,
    target: str = "cuda",
    observer: SweepObserver | None = None,
    save: Callable[[Profile], Any] | None = None,
    layers: Sequence[Layer] | None = None,
) -> Profile:
    """A Profile of estimated memory and FLOPs for every cell; no step times."""
    if target not in TARGETS:
        raise LayerprofError(f"--target must be cuda or cpu, got {target!r}")
    mode, loaded = build_fake_model(spec, options, DTYPES[settings.dtype])
    with mode:
        split = list(layers) if layers is not None else loaded.split()

        def runner(*args: Any) -> tuple[Row, float]:
            return estimate_cell(*args, target=target)

        profile = profile_model(
            loaded, split, settings, ESTIMATE_DEVICE, observer, save, runner, estimate_environment(target)
        )
    for measured_only in ("warmup_steps", "min_steps", "max_steps", "median_tolerance", "stopping_rule"):
        profile.settings.pop(measured_only, None)
    profile.settings["mode"] = "estimate"
    profile.settings["target"] = target
    if save:
        save(profile)
    return profile


# ---------------------------------------------------------------- what fits


@dataclass
class FitResult:
    trainable_layers: int
    largest_batch_size: int  # 0: not even batch 1 fits
    need_at_largest_bytes: int | None
    smallest_gpu: str | None = None  # for the requested batch size, the smallest listed GPU that runs it


def gpu_memory_bytes(name: str) -> int:
    for known, mib in GPUS.items():
        if known.lower() == name.lower():
            return mib * 2**20
    raise LayerprofError(f"unknown --gpu {name!r}; known: {', '.join(GPUS)}")


class FitSearch:
    """Largest batch per z under a memory budget: a line through two estimates, then checked at the boundary."""

    def __init__(self, spec: str, options: ModelOptions, settings: SweepSettings, target: str = "cuda") -> None:
        self.mode, self.loaded = build_fake_model(spec, options, DTYPES[settings.dtype])
        self.settings = settings
        self.target = target
        self.reserve = CUDA_CONTEXT_RESERVE_BYTES if target == "cuda" else 0
        with self.mode:
            self.layers = self.loaded.split()
        self._cache: dict[tuple[int, int], int] = {}

    def need_bytes(self, trainable_layers: int, batch_size: int) -> int:
        key = (trainable_layers, batch_size)
        if key not in self._cache:
            with self.mode:
                row, _ = estimate_cell(
                    self.loaded, self.layers, batch_size, trainable_layers, self.settings, ESTIMATE_DEVICE, self.target
                )
            if not row.ok:
                raise LayerprofError(f"z={trainable_layers}, batch {batch_size}: {row.message}")
            self._cache[key] = int(row.peak_memory_bytes or 0) + self.reserve
        return self._cache[key]

    def largest_batch(self, trainable_layers: int, budget_bytes: int, limit: int = 1 << 24) -> FitResult:
        """Memory grows with the batch and almost linearly: secant steps from batch 1 and 256 find the boundary
        approximately, doubling steps away from that guess bracket it, bisection pins it. A few estimates per z."""

        def fits(batch_size: int) -> bool:
            return self.need_bytes(trainable_layers, batch_size) <= budget_bytes

        def result(batch_size: int) -> FitResult:
            return FitResult(trainable_layers, batch_size, self.need_bytes(trainable_layers, batch_size))

        if not fits(1):
            return FitResult(trainable_layers, 0, self.need_bytes(trainable_layers, 1))
        # secant steps on the (nearly linear) memory line
        previous, guess = 1, 256
        for _ in range(6):
            rise = self.need_bytes(trainable_layers, guess) - self.need_bytes(trainable_layers, previous)
            if guess == previous or rise <= 0:
                break
            slope = rise / (guess - previous)
            target = guess + (budget_bytes - self.need_bytes(trainable_layers, guess)) / slope
            previous, guess = guess, int(max(1, min(limit, math.floor(target))))
            if abs(guess - previous) <= 1:
                break
        step = 1
        if fits(guess):
            low = guess
            while low < limit and fits(min(limit, guess + step)):
                low = min(limit, guess + step)
                step *= 2
            if low == limit:
                return result(limit)
            high = min(limit, guess + step)
        else:
            high = guess
            while guess - step > 1 and not fits(guess - step):
                high = guess - step
                step *= 2
            low = max(1, guess - step)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if fits(middle) else (low, middle)
        return result(low)

    def smallest_gpu(self, trainable_layers: int, batch_size: int) -> str | None:
        need = self.need_bytes(trainable_layers, batch_size)
        for name, mib in sorted(GPUS.items(), key=lambda item: item[1]):
            if need <= mib * 2**20:
                return name
        return None
