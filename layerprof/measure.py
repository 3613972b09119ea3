"""Timers, memory probes and FLOP counting for one training step.

Timing and instrumentation never share a step: timed steps run bare, and memory tracking / FLOP counting run
in one extra step afterwards, so that dispatch-level hooks add nothing to the step times.
"""

from __future__ import annotations

import math
import statistics
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from layerprof.profile import MemoryCategory

# ---------------------------------------------------------------- time


@dataclass(frozen=True)
class TimingStats:
    median_ms: float
    mean_ms: float
    std_ms: float
    p10_ms: float
    p90_ms: float
    count: int
    ci_low_ms: float  # 95% confidence interval of the median (order statistics)
    ci_high_ms: float

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> TimingStats:
        ordered = sorted(samples_ms)
        low, high = median_confidence_interval(ordered)
        return cls(
            median_ms=statistics.median(ordered),
            mean_ms=statistics.fmean(ordered),
            std_ms=statistics.stdev(ordered) if len(ordered) > 1 else 0.0,
            p10_ms=_quantile(ordered, 0.10),
            p90_ms=_quantile(ordered, 0.90),
            count=len(ordered),
            ci_low_ms=low,
            ci_high_ms=high,
        )


def _quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    position = (len(ordered) - 1) * q
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def median_confidence_interval(ordered: list[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free 95% interval of the median: order statistics at ranks n/2 -+ z*sqrt(n)/2 (1-based)."""
    n = len(ordered)
    if n == 0:
        return math.nan, math.nan
    half_width = z * math.sqrt(n) / 2
    low_rank = max(1, math.floor(n / 2 - half_width))
    high_rank = min(n, math.ceil(1 + n / 2 + half_width))
    return ordered[low_rank - 1], ordered[high_rank - 1]


def median_is_stable(samples_ms: list[float], tolerance: float) -> bool:
    """True when the 95% interval of the median lies within +-tolerance of the median."""
    ordered = sorted(samples_ms)
    median = statistics.median(ordered)
    low, high = median_confidence_interval(ordered)
    return low >= median * (1 - tolerance) and high <= median * (1 + tolerance)


def time_steps(
    step: Callable[[], Any],
    device: torch.device,
    min_steps: int,
    max_steps: int,
    tolerance: float,
) -> list[float]:
    """Run `step` until the median is stable (after `min_steps`), at most `max_steps`; return ms per step.

    CUDA: one pair of events around each step, synchronised before reading, so host-side gaps between steps
    never count. CPU: perf_counter around each step.
    """
    samples: list[float] = []
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        while len(samples) < max_steps:
            start.record()
            step()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
            if len(samples) >= min_steps and median_is_stable(samples, tolerance):
                break
    else:
        clock = time.perf_counter
        while len(samples) < max_steps:
            began = clock()
            step()
            samples.append((clock() - began) * 1000.0)
            if len(samples) >= min_steps and median_is_stable(samples, tolerance):
                break
    return samples


# ---------------------------------------------------------------- memory: live-tensor tracker (any device)


class LiveTensorTracker(TorchDispatchMode):
    """Peak bytes of live tensor storage during a step, and its split by MemoryCategory at that peak.

    Storages alive before the step (parameters, buffers, optimizer state, the batch) are registered first, so
    that views of them (a weight's `.t()` inside `nn.Linear`) are never counted as new allocations. Every op
    output whose storage is new is counted until a weak-reference finaliser sees the storage released.
    Storages are keyed by the storage object, not its data pointer (fake and meta tensors share pointers).
    Gradients are recognised when autograd accumulates them into `.grad`.

    `allocation_rounding_bytes` rounds every storage up to a multiple, as the CUDA caching allocator does
    (512 bytes), so that an estimate for a GPU compares with `torch.cuda.max_memory_allocated`.
    """

    def __init__(self, allocation_rounding_bytes: int = 1) -> None:
        super().__init__()
        self.rounding = allocation_rounding_bytes
        self._category: dict[int, MemoryCategory] = {}  # id(storage) -> category
        self._size: dict[int, int] = {}
        self._refs: dict[int, weakref.ref] = {}
        self.live: dict[MemoryCategory, int] = dict.fromkeys(MemoryCategory, 0)
        self.current = 0
        self.peak = 0
        self.at_peak = dict(self.live)
        self._hooks: list[Any] = []

    def register(self, tensors: Iterable[torch.Tensor], category: MemoryCategory) -> None:
        for tensor in tensors:
            self._track(tensor, category)

    def watch_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        for param in parameters:
            if param.requires_grad:
                self._hooks.append(param.register_post_accumulate_grad_hook(self._on_grad))

    def _on_grad(self, param: torch.Tensor) -> None:
        if param.grad is not None:
            self._recategorise(param.grad, MemoryCategory.GRADIENTS)

    def _recategorise(self, tensor: torch.Tensor, category: MemoryCategory) -> None:
        key = id(tensor.untyped_storage())
        old = self._category.get(key)
        if old is None:
            self._track(tensor, category)
        elif old != category:
            self.live[old] -= self._size[key]
            self.live[category] += self._size[key]
            self._category[key] = category

    def _track(self, tensor: torch.Tensor, category: MemoryCategory) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._category:
            return
        size = -(-storage.nbytes() // self.rounding) * self.rounding
        self._category[key] = category
        self._size[key] = size
        self._refs[key] = weakref.ref(storage, lambda _ref, key=key: self._release(key))
        self.live[category] += size
        self.current += size
        if self.current > self.peak:
            self.peak = self.current
            self.at_peak = dict(self.live)

    def _release(self, key: int) -> None:
        category = self._category.pop(key, None)
        if category is None:
            return
        size = self._size.pop(key)
        self._refs.pop(key, None)
        self.live[category] -= size
        self.current -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self._track(value, MemoryCategory.ACTIVATIONS)
        return out

    def __exit__(self, *exc: Any) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        return super().__exit__(*exc)


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    storages = {id(t.untyped_storage()): t.untyped_storage().nbytes() for t in optimizer_state_tensors(optimizer)}
    return sum(storages.values())


# ---------------------------------------------------------------- FLOPs


def flop_counter() -> FlopCounterMode:
    """FlopCounterMode counts matmuls, convolutions and attention; elementwise ops and optimizers count 0."""
    return FlopCounterMode(display=False)


# ---------------------------------------------------------------- CUDA allocator and NVML


def reset_cuda_peaks(device: torch.device) -> None:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)


def cuda_peaks(device: torch.device) -> tuple[int, int]:
    """(peak allocated, peak reserved) bytes since the last reset."""
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)


def nvml_process_bytes(device: torch.device) -> int | None:
    """GPU memory NVML attributes to this process (CUDA context included); None where NVML cannot say."""
    try:
        import os

        import pynvml

        pynvml.nvmlInit()
        try:
            index = device.index if device.index is not None else torch.cuda.current_device()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if process.pid == os.getpid() and process.usedGpuMemory is not None:
                    return int(process.usedGpuMemory)
            return None
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - NVML missing, no permission, containerised pid namespace
        return None


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    message = str(error)
    return isinstance(error, RuntimeError) and (
        "out of memory" in message.lower() or "DefaultCPUAllocator: can't allocate memory" in message
    )


def tensors_in(value: Any) -> list[torch.Tensor]:
    return [v for v in tree_flatten(value)[0] if isinstance(v, torch.Tensor)]
