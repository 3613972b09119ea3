"""Measured forward and backward time per layer (`profile --per-layer`): where a full-training step spends it.

One full-training step is timed with a mark at every layer boundary: a forward pre-hook and hook on each layer,
and a hook on each layer's output that runs when the gradient reaches it (autograd walks the layers top down).
On CUDA each mark records an event on the current stream, read after one synchronise, so nothing waits on the
host; on the CPU each mark reads `perf_counter`. A layer's forward time runs from its pre-hook to its hook; its
backward time from the moment the gradient reaches its output to the moment it reaches the output of the next
trainable layer below (the last layer to run backward ends at the end of the backward pass). The median over a
few steps is kept. Steps with marks run slower than bare ones (a hook per layer): the table gives shares of the
marked step beside milliseconds, and the sweep's own step times stay as they were measured, without marks.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from torch.utils._pytree import tree_flatten

from layerprof.profile import JsonDict, Layer

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle

    from layerprof.measure.cells import Cell

MARKED_STEPS = 5  # after two warm-up steps


@dataclass
class LayerTime:
    """One layer's forward and backward time in full training."""

    index: int
    name: str
    forward_ms: float
    backward_ms: float


@dataclass
class LayerTimes:
    """Every layer's times at one batch size, and how they were taken."""

    batch_size: int
    device: str
    layers: list[LayerTime]
    marked_step_ms: float  # the marked steps' median: forward, loss, backward and optimizer
    source: str  # "cuda-events" | "perf-counter"

    def to_dict(self) -> JsonDict:
        """The JSON form, one entry of a profile's `layer_times`."""
        return asdict(self)


class _Clock:
    """Marks on the device's timeline: CUDA events, or the host's perf_counter."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.events: list[tuple[str, int, torch.cuda.Event]] = []  # on CUDA
        self.stamps: list[tuple[str, int, float]] = []  # elsewhere: perf_counter seconds

    def clear(self) -> None:
        self.events.clear()
        self.stamps.clear()

    def mark(self, kind: str, index: int) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.events.append((kind, index, event))
        else:
            self.stamps.append((kind, index, time.perf_counter()))

    def milliseconds(self) -> list[tuple[str, int, float]]:
        if self.events:
            self.events[-1][2].synchronize()
            first = self.events[0][2]
            return [(kind, index, first.elapsed_time(event)) for kind, index, event in self.events]
        if not self.stamps:
            return []
        start = self.stamps[0][2]
        return [(kind, index, (stamp - start) * 1000.0) for kind, index, stamp in self.stamps]


def _hooks(modules: Sequence[torch.nn.Module], clock: _Clock) -> list[RemovableHandle]:
    handles = []
    for index, module in enumerate(modules):
        handles.append(module.register_forward_pre_hook(lambda _m, _a, index=index: clock.mark("enter", index)))

        def leave(_module: torch.nn.Module, _args: object, output: object, index: int = index) -> None:
            clock.mark("leave", index)
            for value in tree_flatten(output)[0]:
                if isinstance(value, torch.Tensor) and value.requires_grad:
                    value.register_hook(lambda grad, index=index: clock.mark("gradient", index))
                    break

        handles.append(module.register_forward_hook(leave))
    return handles


def _one_step(cell: Cell, clock: _Clock) -> list[tuple[str, int, float]]:
    """One step as `Cell.step` runs it, with a mark where the backward ends and where the step ends."""
    clock.clear()
    clock.mark("start", -1)
    cell.backward(cell.forward())
    clock.mark("backward-done", -1)
    cell.update()
    clock.mark("end", -1)
    return clock.milliseconds()


def _durations(marks: list[tuple[str, int, float]], count: int) -> tuple[list[float], list[float], float]:
    forward = [0.0] * count
    backward = [0.0] * count
    entered: dict[int, float] = {}
    gradients = [(index, at) for kind, index, at in marks if kind == "gradient"]
    for kind, index, at in marks:
        if kind == "enter":
            entered.setdefault(index, at)
        elif kind == "leave" and index in entered:
            forward[index] += at - entered.pop(index)
    end_of_backward = next(at for kind, _, at in marks if kind == "backward-done")
    for position, (index, at) in enumerate(gradients):
        until = gradients[position + 1][1] if position + 1 < len(gradients) else end_of_backward
        backward[index] += until - at
    return forward, backward, marks[-1][2]


def measure_layer_times(cell: Cell, layers: Sequence[Layer], device: torch.device) -> LayerTimes:
    """Median forward and backward time per layer over MARKED_STEPS marked full-training steps of `cell`."""
    modules = dict(cell.model.named_modules())
    clock = _Clock(device)
    handles = _hooks([modules[layer.name] for layer in layers], clock)
    try:
        for _ in range(2):  # the hooks' first calls, and a step that allocates nothing new
            _one_step(cell, clock)
        runs = [_durations(_one_step(cell, clock), len(layers)) for _ in range(MARKED_STEPS)]
    finally:
        for handle in handles:
            handle.remove()
    times = [
        LayerTime(
            layer.index, layer.name, statistics.median(r[0][i] for r in runs), statistics.median(r[1][i] for r in runs)
        )
        for i, layer in enumerate(layers)
    ]
    return LayerTimes(
        cell.row.batch_size,
        str(device),
        times,
        statistics.median(r[2] for r in runs),
        "cuda-events" if device.type == "cuda" else "perf-counter",
    )
