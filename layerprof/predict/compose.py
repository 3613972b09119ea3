"""Cells composed from traced ones: an estimate's z (and a fit's) that need no fake-tensor step of their own.

Going from z to z + 1 trains one more layer: its parameters' gradients and optimizer state, the activations it
keeps for backward, its backward FLOPs, and the gradient the layer above now passes down to it. Over a *run* of
z whose lowest trainable layers are structurally identical (same class, same module configuration, same
parameter shapes, same input and output shapes at this batch size, no tied weights: the blocks of a transformer,
a ResNet stage's repeated blocks), every such step adds the same operations and the same allocations: the
step's timeline keeps its shape and only its repeated segments grow. Each event's live bytes are then affine in
z, and the peak, their maximum, is convex in z: the secant through two neighbouring z bounds it from below
beyond them, and the chord between two z from above between them, so a line that holds at both ends of a
stretch holds all along it.

So a run's cells are composed from four traced *anchors* (its first two and last two z): each integer figure
(FLOPs, optimizer state, the peak and every memory category at the peak, on the allocator's rounded sizes) must
step by the same amount at both ends and along the whole chord, to the byte. Where it does not, the peak has a
kink (the backward's peak at small z, the optimizer step's at large z): the first two anchors' line and the last
two's cross at z = k, and with the cells at k and k + 1 traced and on their lines, the run is two lines. Else
every cell of the run is traced. A composed row says so (`Row.estimate_basis`); the test suite checks composed
rows against full traces on many models. Predicted step times of composed rows are interpolated between their
line's ends (the time model prices a foreach kernel per 110 tensors, a step function of z): close to a trace.

`fit` composes across the batch size too: a step's timeline at two batch sizes, identical but for requested
sizes that grow by whole bytes per sample, replays at any batch size through the allocator's rounding
(`BatchLine`), and the run's z between the anchors are searched on the composed need. Such a z's predicted step
time comes from the anchors beside it: each anchor's traced operations at two batch sizes, scaled per operation
to the z's batch along the line through them (`trace_at_batch`), priced, and interpolated at the z.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch._subclasses.fake_tensor import unset_fake_temporarily
from torch.utils._pytree import tree_flatten

from layerprof.measure.cells import CellContext, CellRunner, new_row
from layerprof.measure.instruments import LiveTensorTracker, OpCost, StepTrace
from layerprof.profile import MEMORY_FIELDS, EstimateBasis, MemoryCategory, Row, SweepSettings
from layerprof.sources.layers import Layer

__all__ = ["ComposedCells", "EstimateBasis"]

# the integer figures a composed row takes from the line through its run's anchors
LINEAR_FIELDS = (
    "forward_flops",
    "backward_flops",
    "flops",
    "optimizer_state_bytes",
    "tracked_peak_bytes",
    "peak_activations_bytes",
    "peak_memory_bytes",
    *MEMORY_FIELDS,
)
# the predicted times, interpolated (not exact: see the module's docstring)
PREDICTED_FIELDS = ("predicted_device_time_ms", "predicted_host_time_ms")
# a run of fewer selected z than this is traced cell by cell: its anchors would cost as much
MIN_COMPOSED_RUN = 5

Trace = Callable[[int, int], Row]  # (batch size, z) -> a traced row
Shapes = tuple[tuple[tuple[int, ...], str], ...]  # each tensor's shape and dtype, in pytree order
LayerCall = tuple[Shapes, Shapes]  # one forward call of a layer: its inputs' and its outputs' shapes


# ---------------------------------------------------------------- which z are alike


@contextmanager
def recorded_shapes(model: torch.nn.Module, layers: Sequence[Layer]) -> Iterator[list[list[LayerCall]]]:
    """While active, each layer's forward calls are recorded as (input shapes, output shapes, dtypes): run one
    step inside it to learn the shapes its signature needs."""
    modules = dict(model.named_modules())
    calls: list[list[LayerCall]] = [[] for _ in layers]
    handles = []

    def described(value: object) -> Shapes:
        return tuple((tuple(t.shape), str(t.dtype)) for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor))

    for index, layer in enumerate(layers):
        module = modules.get(layer.name)
        if module is None:
            continue

        def hook(
            _module: torch.nn.Module,
            args: tuple[object, ...],
            kwargs: dict[str, object],
            output: object,
            index: int = index,
        ) -> None:
            calls[index].append((described((args, kwargs)), described(output)))

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def layer_signatures(
    model: torch.nn.Module, layers: Sequence[Layer], calls: Sequence[Sequence[LayerCall]]
) -> list[Hashable]:
    """What makes two layers cost the same when they join training: class, configuration (the module's repr),
    parameter shapes and dtypes, the shapes of every call, the parameters the model's own code froze. A layer with
    tied weights, or one whose shapes were not recorded, is alike to none."""
    modules = dict(model.named_modules())
    signatures: list[Hashable] = []
    for index, layer in enumerate(layers):
        module = modules.get(layer.name)
        if module is None or layer.shared_with or not calls[index]:
            signatures.append(("unique", index))
            continue
        parameters = tuple((tuple(p.shape), str(p.dtype), p.requires_grad) for p in module.parameters())
        # the parameters the model's own code froze, by their name inside the layer: a frozen block is alike only
        # to a block frozen the same way
        frozen = tuple(name.removeprefix(f"{layer.name}.") for name in layer.frozen_names)
        signatures.append(
            (
                layer.type,
                repr(module),
                layer.params,
                layer.new_trainable_params,
                layer.calls,
                parameters,
                tuple(calls[index]),
                frozen,
            )
        )
    return signatures


def z_runs(signatures: Sequence[Hashable], zs: Sequence[int]) -> list[list[int]]:
    """The selected z grouped into runs: consecutive z (every z between them, selected or not) whose lowest
    trainable layer (layer n - z) has the same signature."""
    n = len(signatures)
    runs: list[list[int]] = []
    for z in sorted(set(zs)):
        if runs:
            last = runs[-1][-1]
            if all(signatures[n - y] == signatures[n - z] for y in range(last, z)):
                runs[-1].append(z)
                continue
        runs.append([z])
    return runs


def anchors_of(start: int, last: int) -> tuple[int, int, int, int]:
    """The z a run from `start` to `last` is composed from: its first two and its last two."""
    return (start, start + 1, last - 1, last)


# ---------------------------------------------------------------- the line through the anchors


def affine_steps(rows: dict[int, Row], first: int, last: int) -> dict[str, int] | None:
    """Each linear figure's step per z, where it steps alike at both ends and along the whole chord to the byte
    (else None); figures every anchor leaves empty are left out."""
    a, b = rows[first], rows[last]
    second, before_last = rows[first + 1], rows[last - 1]
    if not all(row.ok for row in (a, b, second, before_last)):
        return None
    if len({row.memory_source for row in (a, b, second, before_last)}) != 1:
        return None
    steps: dict[str, int] = {}
    for name in LINEAR_FIELDS:
        values = [getattr(row, name) for row in (a, second, before_last, b)]
        if all(value is None for value in values):
            continue
        if any(value is None for value in values):
            return None
        step = values[1] - values[0]
        if values[3] - values[2] != step or values[3] - values[0] != step * (last - first):
            return None
        steps[name] = step
    return steps


def line_steps(low: Row, high: Row, distance: int = 1) -> dict[str, int] | None:
    """Each linear figure's step per z on the line through two rows `distance` z apart (None where either failed,
    they differ in what they hold, or a figure does not step by whole units)."""
    if not (low.ok and high.ok) or low.memory_source != high.memory_source:
        return None
    steps: dict[str, int] = {}
    for name in LINEAR_FIELDS:
        a, b = getattr(low, name), getattr(high, name)
        if a is None and b is None:
            continue
        if a is None or b is None or (b - a) % distance:
            return None
        steps[name] = (b - a) // distance
    return steps


def on_line(row: Row, base: Row, steps: dict[str, int], offset: int) -> bool:
    """Whether every linear figure of `row` lies on the line through `base` (`offset` z away), to the byte."""
    if not row.ok or row.memory_source != base.memory_source:
        return False
    return all(getattr(row, name) == getattr(base, name) + step * offset for name, step in steps.items())


@dataclass(frozen=True)
class Piece:
    """z from `low` to `high` (both traced), every figure on the line through the row of `base` (traced)."""

    low: int
    high: int
    base: int
    steps: dict[str, int]


def kink(
    first: Row, first_steps: dict[str, int], last: Row, last_steps: dict[str, int], first_z: int, last_z: int
) -> int | None:
    """The last z on the first line's side of where the peak's first and last lines cross (None: parallel)."""
    slope_first, slope_last = first_steps.get("tracked_peak_bytes"), last_steps.get("tracked_peak_bytes")
    if slope_first is None or slope_last is None or slope_first == slope_last:
        return None
    if first.tracked_peak_bytes is None or last.tracked_peak_bytes is None:  # a row without a trace: no line
        return None
    # first.peak + s1 (x - a) = last.peak + s2 (x - b)
    crossing = (last.tracked_peak_bytes - first.tracked_peak_bytes + slope_first * first_z - slope_last * last_z) / (
        slope_first - slope_last
    )
    return min(max(int(crossing // 1), first_z), last_z - 1)


def composed_row(piece: Piece, rows: dict[int, Row], new: Row, settings: SweepSettings) -> Row:
    """The row of z = `new.trainable_layers` on its piece's line; `new` holds the cell's own parameter counts.
    Predicted times are interpolated between the piece's ends."""
    z = new.trainable_layers
    base = rows[piece.base]
    row = replace(
        base,
        batch_size=new.batch_size,
        trainable_layers=z,
        trainable_params=new.trainable_params,
        trainable_fraction=new.trainable_fraction,
        estimate_basis="composed",
    )
    for name, step in piece.steps.items():
        setattr(row, name, getattr(base, name) + step * (z - piece.base))
    low, high = rows[piece.low], rows[piece.high]
    share = (z - piece.low) / (piece.high - piece.low)
    for name in PREDICTED_FIELDS:
        a, b = getattr(low, name), getattr(high, name)
        setattr(row, name, None if a is None or b is None else a + (b - a) * share)
    device, host = row.predicted_device_time_ms, row.predicted_host_time_ms
    if device is not None and host is not None:
        if settings.target == "cpu":
            row.predicted_step_time_ms = device + host
        else:
            row.predicted_step_time_ms = max(device, host)
            row.predicted_host_bound = host > device
    return row


# ---------------------------------------------------------------- the cell runner


class ComposedCells:
    """An estimate's cell runner (`layerprof.measure.cells.CellRunner`) that traces each run's anchors and composes the
    cells between them; `trace(context, batch, z)`, itself a cell runner, traces one cell."""

    def __init__(self, trace: CellRunner, zs: Sequence[int]) -> None:
        self.trace = trace
        self.zs = tuple(zs)
        self.rows: dict[tuple[int, int], Row] = {}  # traced cells, anchors included
        self.runs: dict[int, list[list[int]]] = {}  # batch size -> runs
        self.pieces: dict[tuple[int, int], list[Piece] | None] = {}  # (batch, run's first z) -> its lines
        self.traced = 0

    def _traced(self, context: CellContext, batch_size: int, z: int) -> Row:
        key = (batch_size, z)
        if key not in self.rows:
            model, layers = context.loaded.model, context.layers
            if batch_size not in self.runs:
                with recorded_shapes(model, layers) as calls:
                    row, _ = self.trace(context, batch_size, z)
                self.runs[batch_size] = z_runs(layer_signatures(model, layers, calls), self.zs)
            else:
                row, _ = self.trace(context, batch_size, z)
            self.traced += 1
            self.rows[key] = row
        return self.rows[key]

    def _pieces(self, trace: Callable[[int], Row], run: Sequence[int]) -> list[Piece] | None:
        """The run as one line through its four anchors, or two lines (the first two anchors', the last two's)
        that meet at a kink of the peak, each checked at its far end: None where neither holds (trace it all).
        The peak is convex in z, so a line that holds at both ends of a stretch holds all along it."""
        first, last = run[0], run[-1]
        rows = {z: trace(z) for z in anchors_of(first, last)}
        steps = affine_steps(rows, first, last)
        if steps is not None:
            return [Piece(first, last, first, steps)]
        first_steps = line_steps(rows[first], rows[first + 1])
        last_steps = line_steps(rows[last - 1], rows[last])
        if first_steps is None or last_steps is None:
            return None
        k = kink(rows[first], first_steps, rows[last], last_steps, first, last)
        if k is None:
            return None
        if not on_line(trace(k), rows[first], first_steps, k - first):
            return None
        if not on_line(trace(k + 1), rows[last], last_steps, k + 1 - last):
            return None
        return [Piece(first, k, first, first_steps), Piece(k + 1, last, last, last_steps)]

    def __call__(self, context: CellContext, batch_size: int, z: int) -> tuple[Row, float]:
        """The cell's row (`layerprof.measure.cells.CellRunner`): traced where it is an anchor, a kink's side or
        in no run that composes; else composed from its piece's line, in no time."""

        def trace(y: int) -> Row:
            return self._traced(context, batch_size, y)

        if batch_size not in self.runs:
            trace(min(self.zs))
        run = next((run for run in self.runs[batch_size] if z in run), [z])
        key = (batch_size, run[0])
        if key not in self.pieces:
            self.pieces[key] = self._pieces(trace, run) if len(run) >= MIN_COMPOSED_RUN else None
        pieces = self.pieces[key]
        piece = next((p for p in pieces or () if p.low <= z <= p.high), None)
        if piece is None or (batch_size, z) in self.rows or z in (piece.low, piece.high):
            return trace(z), 0.0
        rows = {y: self.rows[(batch_size, y)] for y in {piece.low, piece.high, piece.base}}
        return composed_row(piece, rows, new_row(context.layers, batch_size, z), context.settings), 0.0


# ---------------------------------------------------------------- memory as a function of the batch size (fit)

ALLOCATE, FREE, RECATEGORISE = 0, 1, 2


class RecordingTracker(LiveTensorTracker):
    """The live-tensor tracker that also keeps the step's allocation timeline: every storage's requested bytes in
    the order allocated, and when each is freed or changes category. Replayed with other requested sizes, it
    gives the peak the tracker would see for them."""

    def __init__(self, allocation_size: Callable[[int], int] = int) -> None:
        super().__init__(allocation_size)
        self.events: list[tuple[int, int, MemoryCategory | None]] = []
        self.requested: list[int] = []
        self._order: dict[int, int] = {}

    def _allocate(self, key: int, nbytes: int, category: MemoryCategory) -> None:
        self._order[key] = len(self.requested)
        self.requested.append(nbytes)
        self.events.append((ALLOCATE, self._order[key], category))
        super()._allocate(key, nbytes, category)

    def _recategorise(self, tensor: torch.Tensor, category: MemoryCategory) -> None:
        key = id(tensor.untyped_storage())
        old = self._category.get(key)
        if old is not None and old != category:
            self.events.append((RECATEGORISE, self._order[key], category))
        super()._recategorise(tensor, category)

    def _release(self, key: int) -> None:
        if key in self._category:
            self.events.append((FREE, self._order.pop(key), None))
        super()._release(key)

    def timeline(self) -> Timeline:
        return Timeline(tuple(self.events), tuple(self.requested))


@dataclass(frozen=True)
class Timeline:
    """One traced step's allocations, frees and category changes, with each storage's requested bytes."""

    events: tuple[tuple[int, int, MemoryCategory | None], ...]
    requested: tuple[int, ...]

    def peak_bytes(self, requested: Sequence[int], allocation_size: Callable[[int], int]) -> int:
        """The tracker's peak had the storages requested these sizes (in allocation order): the running sum of
        the allocations' blocks less the freed ones, at its highest."""
        with unset_fake_temporarily():  # a fit searches inside its FakeTensorMode: these are real numbers
            sizes = torch.tensor(list(requested), dtype=torch.int64)
            values, inverse = torch.unique(sizes, return_inverse=True)
            blocks = torch.tensor([allocation_size(int(v)) for v in values.tolist()], dtype=torch.int64)[inverse]
            kinds, indices = self._arrays()
            sign = torch.where(kinds == ALLOCATE, 1, torch.where(kinds == FREE, -1, 0))
            running = torch.cumsum(sign * blocks[indices], 0)
            return max(0, int(running.max())) if len(running) else 0

    def _arrays(self) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self.__dict__.get("_cached_arrays")
        if cached is None:
            kinds = torch.tensor([event[0] for event in self.events], dtype=torch.int64)
            indices = torch.tensor([event[1] for event in self.events], dtype=torch.int64)
            cached = (kinds, indices)
            object.__setattr__(self, "_cached_arrays", cached)
        return cached


@dataclass(frozen=True)
class BatchLine:
    """A z's step at any batch size: the timeline of two traced batch sizes, identical but for the requested
    sizes, each of which is affine in the batch size with an integer slope. `peak_bytes(b)` replays it."""

    timeline: Timeline
    base_batch: int
    slopes: tuple[int, ...]

    @classmethod
    def through(cls, one: tuple[int, Timeline], other: tuple[int, Timeline]) -> BatchLine | None:
        (b1, t1), (b2, t2) = sorted((one, other), key=lambda item: item[0])
        if b1 == b2 or t1.events != t2.events or len(t1.requested) != len(t2.requested):
            return None
        slopes = []
        for r1, r2 in zip(t1.requested, t2.requested, strict=True):
            step, rest = divmod(r2 - r1, b2 - b1)
            if rest:
                return None
            slopes.append(step)
        return cls(t1, b1, tuple(slopes))

    def requested(self, batch_size: int) -> list[int] | None:
        shift = batch_size - self.base_batch
        sizes = [r + s * shift for r, s in zip(self.timeline.requested, self.slopes, strict=True)]
        return None if any(size < 0 for size in sizes) else sizes

    def peak_bytes(self, batch_size: int, allocation_size: Callable[[int], int]) -> int | None:
        sizes = self.requested(batch_size)
        return None if sizes is None else self.timeline.peak_bytes(sizes, allocation_size)


def trace_at_batch(traces: dict[tuple[int, int], StepTrace], z: int, batch_size: int) -> StepTrace | None:
    """z's traced step at `batch_size`: the trace itself where there is one, else the two traced batch sizes of z
    nearest to it whose steps run the same operations in the same order, with every operation's FLOPs and bytes
    on the line through the two (a transformer's or a CNN's per-sample work is the same at every batch); None
    where z has no two such traces."""
    if (batch_size, z) in traces:
        return traces[(batch_size, z)]
    near = sorted((b for b, traced_z in traces if traced_z == z), key=lambda b: (abs(b - batch_size), b))
    for i, first in enumerate(near):
        for second in near[i + 1 :]:
            a, b = traces[(first, z)], traces[(second, z)]
            if a.module_calls != b.module_calls or len(a.ops) != len(b.ops):
                continue
            if [_op_kind(x) for x in a.ops] != [_op_kind(y) for y in b.ops]:
                continue
            share = (batch_size - first) / (second - first)
            ops = [_op_on_line(x, y, share) for x, y in zip(a.ops, b.ops, strict=True)]
            return StepTrace(ops, a.module_calls)
    return None


def _op_on_line(x: OpCost, y: OpCost, share: float) -> OpCost:
    """Operation `x` with its FLOPs and bytes on the line from `x` to `y` at `share` (rounded, at least 0): `x`
    itself where they are the same in both; else a copy of `x` with the three figures set (a fit scales thousands of
    operations: `dataclasses.replace`'s checks were a twentieth of its search)."""
    figures = {
        "flops": max(0, round(x.flops + (y.flops - x.flops) * share)),
        "bytes_moved": max(0, round(x.bytes_moved + (y.bytes_moved - x.bytes_moved) * share)),
        "fresh_bytes": max(0, round(x.fresh_bytes + (y.fresh_bytes - x.fresh_bytes) * share)),
    }
    if all(figures[name] == getattr(x, name) for name in figures):
        return x
    if hasattr(OpCost, "__post_init__") or not hasattr(x, "__dict__"):  # a figure derived from these: construct anew
        return replace(
            x, flops=figures["flops"], bytes_moved=figures["bytes_moved"], fresh_bytes=figures["fresh_bytes"]
        )
    op = object.__new__(OpCost)
    op.__dict__.update(x.__dict__, **figures)  # frozen: set as dataclasses.replace's __init__ would
    return op


def _op_kind(op: OpCost) -> tuple[object, ...]:
    """What must match for two traced operations to be the same one at two batch sizes."""
    return (op.name, op.op_class, op.phase, op.dtype, op.kernels)
