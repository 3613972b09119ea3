"""Frozen layers traced once: the forward of a frozen layer replayed from the record of an alike one.

A frozen layer whose inputs and parameters need no gradient builds no autograd graph: its forward allocates and
frees temporaries and leaves one output, and nothing of it outlives the call but that output. Two such calls of
structurally identical layers (same class and configuration, same parameter and buffer shapes and dtypes, same
train/eval modes) on inputs of the same shapes, strides and dtypes, under the same autocast and grad mode, run the
same operations and make the same allocations, whatever the (fake) values: the blocks of a transformer below the
trainable ones. So an estimate traces the first such call and records it: its operations (`OpCost`s and module
calls) and its allocations in order (requested bytes, category, when each is freed), relative to the call. Every
later alike call, in the same step or a later cell's, is replayed from the record instead of run: the tracker
counts the same allocations and frees (`LiveTensorTracker.allocate_virtual`), the output is a new tensor of the
recorded shape, strides and storage, and the recorder gets the same operations. The tracker's peak, its split at
the peak and its timeline (fit's batch lines) are the traced call's, to the byte.

A call is traced, not replayed, wherever that cannot be checked: an input or parameter that requires grad (a
trainable layer, or a frozen one after a trainable one), a hook on a module inside the layer, a global module hook
other than the recorder's, tied weights (`Layer.shared_with`), an argument that is neither a tensor nor a plain
value (int, float, bool, str, None), and a call whose record left anything alive but its one tensor output, freed
a storage it had not allocated, or changed a storage's category (such a call is never replayed).
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.nn.modules import module as torch_module
from torch.overrides import _get_current_function_mode_stack
from torch.utils._pytree import tree_flatten

from layerprof.measure.instruments import FREED, RECATEGORISED, LiveTensorTracker, OpCost, OpRecorder
from layerprof.profile import MemoryCategory
from layerprof.sources.layers import Layer

PLAIN_VALUES = (int, float, bool, str, type(None))
PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter, FakeTensor)  # not a wrapper subclass, whose layout is its own
Event = tuple[int, int, "MemoryCategory | None"]  # (allocation index in the call, requested bytes or FREED, category)


@dataclass(frozen=True)
class ForwardRecord:
    """One traced call of a frozen layer: its allocations and frees in order (`Event`s, indices counted from the
    call's first allocation), which allocation is the output and its layout, and the operations it ran."""

    events: tuple[Event, ...]
    output: int  # the index of the output's allocation
    output_bytes: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    storage_offset: int
    dtype: torch.dtype
    device: torch.device
    ops: tuple[OpCost, ...]
    module_calls: int  # calls of modules inside the layer (the recorder counts module calls)


class BlockRecords:
    """The records of frozen layers' forwards for one model's estimate, by what the call depends on (`None`: such
    a call cannot be replayed); `traced` and `replayed` count the calls of each kind."""

    def __init__(self) -> None:
        self.records: dict[Hashable, ForwardRecord | None] = {}
        self.traced = 0
        self.replayed = 0
        self.trained = TrainedRecords()  # trainable blocks: forward, backward and their gradients
        self.steps = StepRecords()  # optimizer steps

    def checked_backward(self, backward: Callable[[torch.Tensor], None]) -> Callable[[torch.Tensor], None]:
        """`backward` (a cell's) with the autograd graph of the step checked first for every trainable block
        recorded in its forward (`TrainedRecords.check_graph`)."""

        def checked(loss: torch.Tensor) -> None:
            logging = self.trained.check_graph(loss) if self.trained.pending else None
            try:
                backward(loss)
            finally:
                if logging is not None:
                    logging.log = None

        return checked

    def refuse(self, key: Hashable, scaled: bool = False) -> None:
        """Never replay calls under `key` again (a replay found it cannot stand for them: `ReplayMismatch`); for a
        record scaled from other batch sizes (`scaled`), never scale one for `key` again: it is traced and recorded
        as any new call."""
        if scaled:
            self.trained.records.pop(key, None)
            self.trained.unscaled.add(key)
        else:
            self.trained.records[key] = None

    @contextmanager
    def replaying(
        self,
        model: torch.nn.Module,
        layers: Sequence[Layer],
        trainable_layers: int,
        tracker: LiveTensorTracker,
        recorder: OpRecorder,
        batch_size: int | None = None,
    ) -> Iterator[None]:
        """While active (around one instrumented step at z = `trainable_layers`), every frozen layer that can be
        replayed runs through `_call`: traced and recorded the first time, replayed after. Trainable blocks are
        recorded and replayed alike (`TrainedRecords`); given the step's `batch_size`, a trainable block's record
        at a new batch size is scaled from two at others (`TrainedRecords.scaled_record`)."""
        patched: list[torch.nn.Module] = []
        frozen = len(layers) - trainable_layers
        try:
            for position, layer in enumerate(layers):
                module = model.get_submodule(layer.name) if layer.name else None
                if module is None or layer.shared_with or "forward" in vars(module) or id(module) in map(id, patched):
                    continue
                if position < frozen:
                    signature = _module_signature(module)
                    if signature is not None:
                        module.forward = self._forward(module.forward, signature, tracker, recorder)
                        patched.append(module)
                    continue
                trainable = _trainable_signature(module)
                if trainable is not None:
                    module.forward = self.trained.patched_forward(
                        module, module.forward, trainable, tracker, recorder, batch_size
                    )
                    patched.append(module)
            yield
            # a block replayed from a scaled record whose own traced call never made its record: unconfirmed
            unconfirmed = next((key for key, pending in self.trained.pending.items() if pending.scaled_replays), None)
            if unconfirmed is not None:
                raise ReplayMismatch(unconfirmed, scaled=True)
        finally:
            for module in patched:
                del module.forward
            self.trained.pending.clear()

    def _forward(
        self, original: Callable[..., object], signature: Hashable, tracker: LiveTensorTracker, recorder: OpRecorder
    ) -> Callable[..., object]:
        def forward(*args: object, **kwargs: object) -> object:
            key = _call_key(signature, args, kwargs, tracker, recorder)
            if key is None or tracker.log is not None:  # inside a call being recorded: run it
                return original(*args, **kwargs)
            if key not in self.records:
                return self._record(key, original, args, kwargs, tracker, recorder)
            record = self.records[key]
            if record is None:
                return original(*args, **kwargs)
            return self._replay(record, tracker, recorder)

        return forward

    def _record(
        self,
        key: Hashable,
        original: Callable[..., object],
        args: tuple[object, ...],
        kwargs: dict[str, object],
        tracker: LiveTensorTracker,
        recorder: OpRecorder,
    ) -> object:
        output, log, ops, calls = _logged_call(original, args, kwargs, tracker, recorder)
        self.records[key] = _recorded(log, output, ops, calls)
        self.traced += 1
        return output

    def _replay(self, record: ForwardRecord, tracker: LiveTensorTracker, recorder: OpRecorder) -> torch.Tensor:
        keys: dict[int, int] = {}
        output: torch.Tensor | None = None
        recorder.paused = True  # the output's own allocation is no operation of the step
        try:
            for index, nbytes, category in record.events:
                if nbytes == FREED:
                    tracker._release(keys.pop(index))
                elif index == record.output:
                    output = _new_output(record)  # the tracker counts it as the step's new allocation
                else:
                    assert category is not None
                    keys[index] = tracker.allocate_virtual(nbytes, category)
        finally:
            recorder.paused = False
        recorder.trace.ops.extend(record.ops)
        recorder.trace.module_calls += record.module_calls
        self.replayed += 1
        assert output is not None
        return output


def _logged_call(
    original: Callable[..., object],
    args: tuple[object, ...],
    kwargs: dict[str, object],
    tracker: LiveTensorTracker,
    recorder: OpRecorder,
) -> tuple[object, list[tuple[int, int, MemoryCategory | None]], tuple[OpCost, ...], int]:
    """A call run with the tracker's log on: its output, its allocations and frees, its operations, its module
    calls."""
    ops_before, calls_before = len(recorder.trace.ops), recorder.trace.module_calls
    tracker.log = []
    try:
        output = original(*args, **kwargs)
    finally:
        log, tracker.log = tracker.log, None
    return output, log, tuple(recorder.trace.ops[ops_before:]), recorder.trace.module_calls - calls_before


def _module_signature(module: torch.nn.Module) -> Hashable | None:
    """What a frozen layer's forward depends on besides its inputs: class, configuration, parameter and buffer
    shapes and dtypes, each submodule's train/eval mode. None where it cannot be replayed: a parameter that
    requires grad, or a hook on a module inside it (the layer's own hooks run outside its forward)."""
    if any(param.requires_grad for param in module.parameters()) or _inner_hooks(module):
        return None
    parameters = tuple((name, tuple(p.shape), p.dtype) for name, p in module.named_parameters())
    buffers = tuple((name, tuple(b.shape), b.dtype) for name, b in module.named_buffers())
    modes = tuple(inner.training for inner in module.modules())
    return (type(module), repr(module), parameters, buffers, modes)


def _inner_hooks(module: torch.nn.Module) -> bool:
    """Whether a module inside `module` has hooks or a forward replaced on the instance (by another tool)."""
    for inner in module.modules():
        if inner is not module and (
            inner._forward_hooks or inner._forward_pre_hooks or inner._backward_hooks or inner._backward_pre_hooks
        ):
            return True
        if "forward" in vars(inner):
            return True
    return False


def _call_key(
    signature: Hashable,
    args: tuple[object, ...],
    kwargs: dict[str, object],
    tracker: LiveTensorTracker,
    recorder: OpRecorder,
) -> Hashable | None:
    """What a call depends on: the layer's signature, every input's layout (shape, strides, offset, dtype, device)
    and every plain argument, autocast, grad mode and what the tracker counts new allocations as. None where the
    call cannot be replayed: an input that requires grad, an argument of another kind, a global module hook other
    than the recorder's."""
    if _global_module_hooks(recorder):
        return None
    leaves, spec = tree_flatten((args, kwargs))
    described: list[Hashable] = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            if leaf.requires_grad or leaf.is_sparse or type(leaf) not in PLAIN_TENSORS:
                return None
            described.append((tuple(leaf.shape), leaf.stride(), leaf.storage_offset(), leaf.dtype, str(leaf.device)))
        elif isinstance(leaf, PLAIN_VALUES):
            described.append((type(leaf), leaf))
        else:
            return None
    return (signature, str(spec), tuple(described), *_modes(tracker, recorder))


def _global_module_hooks(recorder: OpRecorder) -> bool:
    """Whether a global module hook other than the recorder's is registered (it could do anything in a call)."""
    if torch_module._global_forward_hooks or torch_module._global_backward_hooks:
        return True
    if torch_module._global_backward_pre_hooks:
        return True
    pre_hooks = list(torch_module._global_forward_pre_hooks.values())
    return any(getattr(hook, "__self__", None) is not recorder for hook in pre_hooks)


def _modes(tracker: LiveTensorTracker, recorder: OpRecorder) -> tuple[Hashable, ...]:
    """What a call depends on besides its module and arguments: autocast, function modes (CUDA's autocast on the
    CPU), grad and inference modes, what the tracker counts new allocations as, the recorder's phase."""
    autocast = tuple((torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind)) for kind in ("cpu", "cuda"))
    function_modes = tuple(type(mode) for mode in _get_current_function_mode_stack())
    return (
        autocast,
        function_modes,
        torch.is_grad_enabled(),
        torch.is_inference_mode_enabled(),
        tracker.new_allocations,
        recorder.phase,
    )


def _recorded(
    log: Sequence[tuple[int, int, MemoryCategory | None]], output: object, ops: tuple[OpCost, ...], module_calls: int
) -> ForwardRecord | None:
    """The record of a traced call from the tracker's log of it (None where it cannot be replayed: see the
    module's docstring)."""
    if not isinstance(output, torch.Tensor) or output.requires_grad or output.is_sparse:
        return None
    found = _events(log)
    if found is None:
        return None
    events, index_of = found
    alive = list(index_of.items())
    if len(alive) != 1 or alive[0][0] != id(output.untyped_storage()):
        return None
    output_index = alive[0][1]
    offset = output.storage_offset()
    if not isinstance(offset, int) or not all(isinstance(n, int) for n in (*output.shape, *output.stride())):
        return None  # symbolic sizes
    return ForwardRecord(
        tuple(events),
        output_index,
        next(nbytes for index, nbytes, _ in events if index == output_index and nbytes != FREED),
        tuple(int(n) for n in output.shape),
        tuple(int(n) for n in output.stride()),
        offset,
        output.dtype,
        output.device,
        ops,
        module_calls,
    )


def _events(log: Sequence[tuple[int, int, MemoryCategory | None]]) -> tuple[list[Event], dict[int, int]] | None:
    """A call's allocations and frees numbered from its first allocation, and the storages still alive after it (key
    -> index); None where it changed a storage's category or freed one from before it."""
    index_of: dict[int, int] = {}  # storage key -> its allocation's index, while alive
    events: list[Event] = []
    allocated = 0
    for key, nbytes, category in log:
        if nbytes == RECATEGORISED:
            return None
        if nbytes == FREED:
            if key not in index_of:  # a storage from before the call
                return None
            events.append((index_of.pop(key), FREED, None))
        else:
            index_of[key] = allocated
            events.append((allocated, nbytes, category))
            allocated += 1
    return events, index_of


def _new_output(record: ForwardRecord) -> torch.Tensor:
    """A tensor of the recorded layout on a storage of the recorded bytes (allocated now, under the step's modes)."""
    layout = Layout(record.size, record.stride, record.storage_offset, record.output_bytes, record.dtype, record.device)
    return layout.new()


# ---------------------------------------------------------------- trainable blocks: forward, backward, gradients

# a trainable block's backward, replayed in order: an allocation (index, requested bytes, category), a free of one of
# its own allocations, of an input's storage (by its position among the call's arguments), of the incoming gradient,
# and a parameter's gradient accumulated (its position among the block's parameters, the allocation that holds it)
ALLOC, FREE, FREE_INPUT, FREE_GRAD_OUT, GRAD = range(5)
GRAD_OUT = -1  # the block passes the incoming gradient down as its input's gradient
Action = tuple[int, int, int, "MemoryCategory | None"]


@dataclass(frozen=True)
class Layout:
    """A real tensor a replay makes: shape, strides and offset on a storage of `storage_bytes`."""

    size: tuple[int, ...]
    stride: tuple[int, ...]
    storage_offset: int
    storage_bytes: int
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def of(cls, tensor: torch.Tensor) -> Layout | None:
        """The tensor's layout (None for symbolic sizes)."""
        offset = tensor.storage_offset()
        if not isinstance(offset, int) or not all(isinstance(n, int) for n in (*tensor.shape, *tensor.stride())):
            return None
        return cls(
            tuple(int(n) for n in tensor.shape),
            tuple(int(n) for n in tensor.stride()),
            offset,
            tensor.untyped_storage().nbytes(),
            tensor.dtype,
            tensor.device,
        )

    def new(self) -> torch.Tensor:
        """A tensor of this layout on a new storage of the recorded bytes (allocated now)."""
        itemsize = self.dtype.itemsize
        extent = 0 if 0 in self.size else 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if self.storage_offset == 0 and extent * itemsize == self.storage_bytes:
            return torch.empty_strided(self.size, self.stride, dtype=self.dtype, device=self.device)
        base = torch.empty(self.storage_bytes // itemsize, dtype=self.dtype, device=self.device)
        return base.as_strided(self.size, self.stride, self.storage_offset)


@dataclass(frozen=True)
class TrainedRecord:
    """One traced call of a trainable block and its backward: the forward's allocations and frees (`Event`s, the
    output among them), which of the call's inputs and whether its output the block's autograd graph saved (a
    replay holds those until the recorded backward frees them), the backward's `Action`s (allocations numbered on
    from the forward's), which allocations are real tensors (its parameters' gradients, its input's gradient) and
    the operations of both."""

    forward: tuple[Event, ...]
    output: int
    layouts: dict[int, Layout]  # the output and every allocation a replay makes a real tensor of
    forward_ops: tuple[OpCost, ...]
    module_calls: int
    held_inputs: tuple[int, ...]  # positions among the call's flattened arguments
    holds_output: bool
    backward: tuple[Action, ...]
    backward_ops: tuple[OpCost, ...]
    returned: int  # the allocation passed down as the input's gradient, or GRAD_OUT


class ReplayMismatch(Exception):
    """A replayed trainable block would have freed a storage its record kept: the call was not alike to the
    recorded one after all; or (`scaled`) a record scaled from two other batch sizes was not the one its block's
    traced call made. The cell is traced again without replaying calls under `key` (`scaled`: without scaling
    a record for it)."""

    def __init__(self, key: Hashable, scaled: bool = False) -> None:
        super().__init__("a replayed block's record does not stand for it")
        self.key = key
        self.scaled = scaled


def _trainable_signature(module: torch.nn.Module) -> Hashable | None:
    """What a trainable block's forward and backward depend on besides its inputs: as `_module_signature`, with each
    parameter's requires_grad; None where a module inside it has hooks or its forward replaced, or it has backward
    hooks of its own."""
    if _inner_hooks(module) or module._backward_hooks or module._backward_pre_hooks:
        return None
    parameters = tuple((name, tuple(p.shape), p.dtype, p.requires_grad) for name, p in module.named_parameters())
    buffers = tuple((name, tuple(b.shape), b.dtype) for name, b in module.named_buffers())
    modes = tuple(inner.training for inner in module.modules())
    return ("trainable", type(module), repr(module), parameters, buffers, modes)


class _Pending:
    """A trainable block's call being recorded: its forward is done, its backward is awaited (between the hook on
    its output, `start`, and the hook on its input, `end`)."""

    def __init__(
        self,
        owner: TrainedRecords,
        key: Hashable,
        params: list[torch.nn.Parameter],
        inputs: dict[int, int],
        forward_log: list[tuple[int, int, MemoryCategory | None]],
        output: torch.Tensor,
        x: torch.Tensor,
        forward_ops: tuple[OpCost, ...],
        module_calls: int,
        tracker: LiveTensorTracker,
        recorder: OpRecorder,
    ) -> None:
        self.owner, self.key, self.params = owner, key, params
        self.inputs = inputs  # storage key -> position among the call's flattened arguments
        self.saved: set[int] = set()  # the storages the block's autograd nodes saved (`check_graph`)
        self.checked = False
        self.forward_log, self.forward_ops, self.module_calls = forward_log, forward_ops, module_calls
        self.tracker, self.recorder = tracker, recorder
        self.output_key = id(output.untyped_storage())
        self.output_storage = weakref.ref(output.untyped_storage())
        self.output_alive = True  # at the start of the backward (else its storage's id may be another's by then)
        self.output_layout = Layout.of(output)
        self.output_node, self.output_nr = output.grad_fn, output.output_nr
        self.x_node, self.x_nr = x.grad_fn, x.output_nr
        self.grad_out_key = 0
        self.ops_start = self.log_start = 0
        self.started = False
        self.valid = self.output_layout is not None
        self.batch_size: int | None = None  # the step's, where known: the record joins its family's
        self.scaled: TrainedRecord | None = None  # the record scaled from other batch sizes, its forward matched
        self.scaled_replays = 0  # alike calls replayed from `scaled` before this call's record was made

    def start(self, grad: torch.Tensor) -> None:
        """The gradient has reached the block's output: its backward begins (the tracker logs the whole backward
        of a step with records to make: `TrainedRecords.check_graph`)."""
        if self.tracker.log is None:
            self.valid = False
            return
        self.grad_out_key = id(grad.untyped_storage())
        self.output_alive = self.output_storage() is not None
        self.ops_start = len(self.recorder.trace.ops)
        self.log_start = len(self.tracker.log)
        self.started = True

    def end(self, grad: torch.Tensor) -> None:
        """The block's input has its gradient: its backward is done; the record is made (or refused)."""
        log = None if self.tracker.log is None or not self.started else self.tracker.log[self.log_start :]
        self.owner.pending.pop(self.key, None)
        record = None
        if self.valid and self.checked and log is not None:
            record = self._record(log, grad, tuple(self.recorder.trace.ops[self.ops_start :]))
            self.owner.traced += 1
        self.owner.records[self.key] = record
        if record is not None and self.batch_size is not None:
            self.owner.families.setdefault(_family(self.key), {})[self.batch_size] = self.key
        if self.scaled_replays and record != self.scaled:  # the calls replayed from it were not alike after all
            raise ReplayMismatch(self.key, scaled=True)

    def _record(
        self, log: Sequence[tuple[int, int, MemoryCategory | None]], grad: torch.Tensor, ops: tuple[OpCost, ...]
    ) -> TrainedRecord | None:
        found = _events(self.forward_log)
        if found is None:
            return None
        forward, alive = found
        count = sum(nbytes != FREED for _, nbytes, _ in forward)  # allocations so far
        live = {key: (ALLOC, index) for key, index in alive.items()}  # storage key -> (what, index or position)
        if self.output_key not in live or self.output_layout is None:
            return None
        output = live[self.output_key][1]
        # besides the output, only what autograd saved may outlive the forward
        saved_indices = {live[key][1] for key in self.saved if key in live}
        if {index for _, index in live.values()} - saved_indices - {output}:
            return None
        forward_count = count
        holds_output = self.output_key in self.saved
        held_inputs = tuple(sorted({self.inputs[key] for key in self.saved if key in self.inputs}))
        # storages are known by id: only those certainly alive at the backward's start keep theirs (a dead
        # output's or unsaved input's id may be a new storage's by then)
        if not self.output_alive:
            if holds_output:
                return None
            del live[self.output_key]
        for key, position in self.inputs.items():
            if key in self.saved:
                live.setdefault(key, (FREE_INPUT, position))
        if self.grad_out_key in live:
            return None
        live[self.grad_out_key] = (FREE_GRAD_OUT, 0)
        grads = {}
        for position, param in enumerate(self.params):
            if param.grad is not None:
                grads[id(param.grad.untyped_storage())] = position
        if len(grads) != sum(param.grad is not None for param in self.params):
            return None  # two gradients on one storage
        backward: list[Action] = []
        layouts: dict[int, Layout] = {output: self.output_layout}
        for key, nbytes, category in log:
            if nbytes == RECATEGORISED:
                if key not in live or live[key][0] != ALLOC or key not in grads:
                    return None
                param = self.params[grads[key]]
                assert param.grad is not None
                layout = Layout.of(param.grad)
                if layout is None:
                    return None
                index = live[key][1]
                layouts[index] = layout
                backward.append((GRAD, grads.pop(key), index, None))
            elif nbytes == FREED:
                if key not in live:
                    return None
                kind, index = live.pop(key)
                if kind == FREE_INPUT and index not in held_inputs:
                    return None
                if kind == ALLOC and index == output and not holds_output:
                    return None
                backward.append((FREE if kind == ALLOC else kind, index, 0, None))
            else:
                live[key] = (ALLOC, count)
                backward.append((ALLOC, count, nbytes, category))
                count += 1
        if grads:
            return None  # a gradient accumulated outside the block's backward
        grad_key = id(grad.untyped_storage())
        if grad_key not in live or live[grad_key][0] not in (ALLOC, FREE_GRAD_OUT):
            return None
        returned = GRAD_OUT if live[grad_key][0] == FREE_GRAD_OUT else live[grad_key][1]
        if returned != GRAD_OUT:
            layout = Layout.of(grad)
            if layout is None or returned < forward_count:
                return None
            layouts[returned] = layout
        # after the backward, the block holds nothing but its parameters' gradients and its input's gradient
        kept = {index for kind, index in live.values() if kind == ALLOC} - {output}
        if kept - set(layouts):
            return None
        return TrainedRecord(
            tuple(forward),
            output,
            layouts,
            self.forward_ops,
            self.module_calls,
            held_inputs,
            holds_output,
            tuple(backward),
            ops,
            returned,
        )


class TrainedRecords:
    """The records of trainable blocks' calls (forward and backward) for one model's estimate, by what the call
    depends on (`None`: such a call is never replayed); `traced` and `replayed` count calls of each kind.

    A call of a trainable block whose one input that needs a gradient comes from the layer below is recorded: its
    forward's allocations, the tensors its autograd graph saved, and, between the hooks on its output's and its
    input's gradients, its backward's allocations and frees, its parameters' gradients and its input's gradient.
    The record is made only where the step's graph shows that nothing outside the block takes its input or its
    inner tensors (`check_graph`), so that the backward between the two hooks is the block's alone. A later alike
    call runs as one autograd node (`_Replayed`) that counts the same allocations, frees and operations in both
    passes, holds the saved inputs' and output's storages until the record frees them, and hands each parameter
    its gradient (a real tensor of the recorded layout) through the same hooks as autograd's accumulation."""

    def __init__(self) -> None:
        self.records: dict[Hashable, TrainedRecord | None] = {}
        self.pending: dict[Hashable, _Pending] = {}
        self.traced = 0
        self.replayed = 0
        self.scaled = 0  # of the replayed calls, those replayed from a scaled record before it was confirmed
        # a call's key with its integers left out -> the batch sizes it was recorded at -> its key there
        self.families: dict[Hashable, dict[int, Hashable]] = {}
        self.unscaled: set[Hashable] = set()  # keys whose scaled record was not their traced one

    def patched_forward(
        self,
        module: torch.nn.Module,
        original: Callable[..., object],
        signature: Hashable,
        tracker: LiveTensorTracker,
        recorder: OpRecorder,
        batch_size: int | None = None,
    ) -> Callable[..., object]:
        """The block's forward: recorded, replayed or run as it is."""
        params = list(module.parameters())

        def forward(*args: object, **kwargs: object) -> object:
            found = _trainable_call(signature, params, args, kwargs, tracker, recorder)
            if found is None or tracker.log is not None:
                return original(*args, **kwargs)
            key, x, leaves = found
            if key in self.pending:
                pending = self.pending[key]
                if pending.scaled is None:
                    return original(*args, **kwargs)
                pending.scaled_replays += 1
                self.replayed += 1
                self.scaled += 1
                state = _ReplayState(self, key, pending.scaled, params, leaves, tracker, recorder, scaled=True)
                return _Replayed.apply(x, state)
            if key not in self.records:
                return self._record(key, params, original, args, kwargs, x, leaves, tracker, recorder, batch_size)
            record = self.records[key]
            if record is None:
                return original(*args, **kwargs)
            self.replayed += 1
            state = _ReplayState(self, key, record, params, leaves, tracker, recorder)
            return _Replayed.apply(x, state)

        return forward

    def scaled_record(self, key: Hashable, batch_size: int | None) -> TrainedRecord | None:
        """The record a call under `key` at `batch_size` would make, from two records of its family at other batch
        sizes: where `key` itself is on the line through their keys (every integer of it: shapes, strides,
        offsets, plain arguments), the records run the same allocations, frees, gradients and operations in the
        same order, and every integer of theirs (requested bytes, layouts, FLOPs, bytes moved) is on the line
        through the two at `batch_size`, to the unit. None where no two records are so. Nothing here assumes that
        the figures scale: the call's own trace is compared with the scaled record (`_Pending.end`)."""
        if batch_size is None or key in self.unscaled:
            return None
        known = self.families.get(_family(key), {})
        batches = sorted(
            (b for b, k in known.items() if b != batch_size and self.records.get(k) is not None),
            key=lambda b: (abs(b - batch_size), b),
        )
        for i, first in enumerate(batches[:MAX_SCALED_FROM]):
            for second in batches[i + 1 : MAX_SCALED_FROM]:
                found = _scaled_from(
                    (first, known[first], self.records[known[first]]),
                    (second, known[second], self.records[known[second]]),
                    key,
                    batch_size,
                )
                if found is not None:
                    return found
        return None

    def _record(
        self,
        key: Hashable,
        params: list[torch.nn.Parameter],
        original: Callable[..., object],
        args: tuple[object, ...],
        kwargs: dict[str, object],
        x: torch.Tensor,
        leaves: list[object],
        tracker: LiveTensorTracker,
        recorder: OpRecorder,
        batch_size: int | None = None,
    ) -> object:
        inputs: dict[int, int] = {}
        for position, leaf in enumerate(leaves):
            if isinstance(leaf, torch.Tensor):
                inputs.setdefault(id(leaf.untyped_storage()), position)
        scaled = self.scaled_record(key, batch_size)
        output, log, ops, calls = _logged_call(original, args, kwargs, tracker, recorder)
        if not isinstance(output, torch.Tensor) or type(output) not in PLAIN_TENSORS or output.grad_fn is None:
            self.records[key] = None
            return output
        pending = _Pending(self, key, params, inputs, log, output, x, ops, calls, tracker, recorder)
        pending.batch_size = batch_size
        if scaled is not None and _forward_as_scaled(scaled, log, output, ops, calls):
            pending.scaled = scaled  # the alike calls after this one replay it; its backward is compared at `end`
        output.register_hook(pending.start)
        x.register_hook(pending.end)
        self.pending[key] = pending
        return output

    def check_graph(self, loss: torch.Tensor) -> LiveTensorTracker | None:
        """Before the backward of a step that recorded blocks: each record stands only if the graph's nodes
        outside the block take neither its input nor any tensor inside it (only its output), and the block's
        own nodes reach no leaf but its parameters. Else the call is never replayed. Where one stands, the
        tracker logs the backward (each block's share is what it logs between the block's two hooks): returns
        that tracker, whose log the caller ends after the backward."""
        owner: dict[object, _Pending] = {}
        for pending in self.pending.values():
            nodes = _block_nodes(pending)
            if nodes is None:
                pending.valid = False
                continue
            for node in nodes:
                owner[node] = pending
            pending.recorder.paused = True  # reading a saved tensor runs no operation of the step
            try:
                pending.saved = _saved_storages(nodes)
            finally:
                pending.recorder.paused = False
            pending.checked = True
        stack: list[object] = [loss.grad_fn]
        seen: set[int] = set()
        visited: list[object] = []  # held, so that no node's id is another's while this runs
        while stack:
            node = stack.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            visited.append(node)
            mine = owner.get(node)
            for following, number in node.next_functions:  # type: ignore[attr-defined]
                if following is None:
                    continue
                for pending in self.pending.values():
                    if mine is pending:
                        continue
                    if following is pending.x_node and number == pending.x_nr:
                        pending.valid = False  # the block's input is taken outside it
                    elif owner.get(following) is pending and (
                        following is not pending.output_node or number != pending.output_nr
                    ):
                        pending.valid = False  # a tensor inside the block is taken outside it
                stack.append(following)
        for pending in self.pending.values():
            if pending.output_node is None or id(pending.output_node) not in seen:
                pending.valid = False
        standing = [pending for pending in self.pending.values() if pending.valid]
        if not standing or standing[0].tracker.log is not None:
            return None
        standing[0].tracker.log = []
        return standing[0].tracker


def _saved_storages(nodes: set[object]) -> set[int]:
    """The storages the nodes saved for backward (their `_saved_*` tensors; a custom Function's saved tensors)."""
    found: set[int] = set()
    for node in nodes:
        names = [name for name in dir(node) if name.startswith("_saved_")]
        values = [getattr(node, name) for name in names]
        if hasattr(node, "saved_tensors"):
            values.append(node.saved_tensors)
        for value in values:
            for tensor in value if isinstance(value, (list, tuple)) else (value,):
                if isinstance(tensor, torch.Tensor):
                    found.add(id(tensor.untyped_storage()))
    return found


MAX_BLOCK_NODES = 100_000


def _block_nodes(pending: _Pending) -> set[object] | None:
    """The autograd nodes of a recorded block: from its output's node down to its input's, each reaching no leaf
    but the block's parameters (None where one does)."""
    param_ids = {id(param) for param in pending.params}
    nodes: set[object] = set()
    stack = [pending.output_node]
    while stack:
        node = stack.pop()
        if node is None or node is pending.x_node or node in nodes:
            continue
        if type(node).__name__ == "AccumulateGrad":
            if id(node.variable) not in param_ids:  # type: ignore[attr-defined]
                return None
            nodes.add(node)
            continue
        nodes.add(node)
        if len(nodes) > MAX_BLOCK_NODES:
            return None
        stack.extend(following for following, _ in node.next_functions)
    return nodes


def _trainable_call(
    signature: Hashable,
    params: list[torch.nn.Parameter],
    args: tuple[object, ...],
    kwargs: dict[str, object],
    tracker: LiveTensorTracker,
    recorder: OpRecorder,
) -> tuple[Hashable, torch.Tensor, list[object]] | None:
    """What a trainable block's call depends on (as `_call_key`, with each input's requires_grad), its one input
    that needs a gradient, and its flattened arguments. None where it cannot be replayed: not one input needing a
    gradient (from a layer below: not a leaf), a parameter with a gradient already or a hook of its own (the
    tracker's excepted), an argument of another kind, a global module hook other than the recorder's."""
    for param in params:
        if param.grad is not None or param._backward_hooks:
            return None
        hooks = getattr(param, "_post_accumulate_grad_hooks", None) or {}
        if any(getattr(hook, "__self__", None) is not tracker for hook in hooks.values()):
            return None
    if _global_module_hooks(recorder):
        return None
    leaves, spec = tree_flatten((args, kwargs))
    described: list[Hashable] = []
    needing: list[torch.Tensor] = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            if leaf.is_sparse or type(leaf) not in PLAIN_TENSORS:
                return None
            if leaf.requires_grad:
                needing.append(leaf)
            layout = (tuple(leaf.shape), leaf.stride(), leaf.storage_offset(), leaf.dtype, str(leaf.device))
            described.append((*layout, leaf.requires_grad))
        elif isinstance(leaf, PLAIN_VALUES):
            described.append((type(leaf), leaf))
        else:
            return None
    if len(needing) != 1 or needing[0].grad_fn is None:
        return None
    return (signature, str(spec), tuple(described), *_modes(tracker, recorder)), needing[0], leaves


class _ReplayState:
    """One replayed call: its record, the virtual allocations it made, the storages it holds for its backward."""

    def __init__(
        self,
        owner: TrainedRecords,
        key: Hashable,
        record: TrainedRecord,
        params: list[torch.nn.Parameter],
        leaves: list[object],
        tracker: LiveTensorTracker,
        recorder: OpRecorder,
        scaled: bool = False,
    ) -> None:
        self.owner, self.key, self.record, self.params = owner, key, record, params
        self.scaled = scaled  # the record is scaled from other batch sizes, not yet confirmed
        self.tracker, self.recorder = tracker, recorder
        self.held: dict[int, torch.UntypedStorage] = {}
        for position in record.held_inputs:
            leaf = leaves[position]
            assert isinstance(leaf, torch.Tensor)
            self.held[position] = leaf.untyped_storage()
        self.output_storage: torch.UntypedStorage | None = None
        self.keys: dict[int, int] = {}

    def forward(self) -> torch.Tensor:
        record, tracker = self.record, self.tracker
        output: torch.Tensor | None = None
        self.recorder.paused = True
        try:
            for index, nbytes, category in record.forward:
                if nbytes == FREED:
                    tracker._release(self.keys.pop(index))
                elif index == record.output:
                    output = record.layouts[index].new()
                else:
                    assert category is not None
                    self.keys[index] = tracker.allocate_virtual(nbytes, category)
        finally:
            self.recorder.paused = False
        self.recorder.trace.ops.extend(record.forward_ops)
        self.recorder.trace.module_calls += record.module_calls
        assert output is not None
        if record.holds_output:
            self.output_storage = output.untyped_storage()
        return output

    def backward(self, grad: torch.Tensor) -> torch.Tensor:
        record, tracker = self.record, self.tracker
        real: dict[int, torch.Tensor] = {}
        self.recorder.paused = True
        try:
            for kind, index, nbytes, category in record.backward:
                if kind == ALLOC:
                    if index in record.layouts:
                        real[index] = record.layouts[index].new()
                        if tracker._category.get(id(real[index].untyped_storage())) != category:
                            raise ReplayMismatch(self.key, self.scaled)
                    else:
                        assert category is not None
                        self.keys[index] = tracker.allocate_virtual(nbytes, category)
                elif kind == FREE:
                    if index == record.output:
                        self.output_storage = None
                    else:
                        tracker._release(self.keys.pop(index))
                elif kind == FREE_INPUT:
                    del self.held[index]
                elif kind == FREE_GRAD_OUT:
                    tracker._release(id(grad.untyped_storage()))
                else:  # GRAD: autograd's accumulation into the parameter, then its hooks (`nbytes`: its allocation)
                    param = self.params[index]
                    param.grad = real[nbytes]
                    for hook in list((getattr(param, "_post_accumulate_grad_hooks", None) or {}).values()):
                        hook(param)
        finally:
            self.recorder.paused = False
        self.recorder.trace.ops.extend(record.backward_ops)
        returned = grad if record.returned == GRAD_OUT else real[record.returned]
        real.clear()
        # what the record kept past its backward must not be freed here: else the call was not alike after all
        kept = [*self.held.values(), *([self.output_storage] if self.output_storage is not None else [])]
        self.held.clear()
        self.output_storage = None
        refs = [weakref.ref(storage) for storage in kept]
        del kept
        if any(ref() is None for ref in refs):
            raise ReplayMismatch(self.key, self.scaled)
        return returned


class _Replayed(torch.autograd.Function):
    """A replayed trainable block as one autograd node: its forward and backward counted from the record."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor, state: _ReplayState) -> torch.Tensor:
        ctx.state = state  # type: ignore[attr-defined]
        return state.forward()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        state: _ReplayState = ctx.state  # type: ignore[attr-defined]
        ctx.state = None  # type: ignore[attr-defined]
        return state.backward(grad), None


# ---------------------------------------------------------------- trainable records across batch sizes

MAX_SCALED_FROM = 6  # the recorded batch sizes nearest to a new one that its record may be scaled from


class _NotAlike(Exception):
    """Two records (or keys) that are not one record at two batch sizes."""


def _family(value: Hashable) -> Hashable:
    """A call's key with every integer (not a bool) left out: the keys of one call at several batch sizes."""
    if type(value) is int:
        return int
    if type(value) is tuple:
        return tuple(_family(item) for item in value)
    return value


def _scaled(first: object, second: object, at: tuple[int, int, int]) -> object:
    """`first` (at batch size `at[0]`) and `second` (at `at[1]`) at batch size `at[2]`: every integer on the line
    through the two (a whole number, else `_NotAlike`), every other value the same in both (else `_NotAlike`);
    tuples, dicts and dataclasses item by item."""
    if type(first) is not type(second):
        raise _NotAlike
    if type(first) is int:
        b1, b2, b = at
        assert isinstance(second, int)
        step, rest = divmod((second - first) * (b - b1), b2 - b1)
        if rest:
            raise _NotAlike
        return first + step
    if type(first) is tuple:
        assert isinstance(second, tuple)
        if len(first) != len(second):
            raise _NotAlike
        return tuple(_scaled(x, y, at) for x, y in zip(first, second, strict=True))
    if type(first) is dict:
        assert isinstance(second, dict)
        if first.keys() != second.keys():
            raise _NotAlike
        return {name: _scaled(value, second[name], at) for name, value in first.items()}
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        changes = {
            field.name: _scaled(getattr(first, field.name), getattr(second, field.name), at)
            for field in dataclasses.fields(first)
        }
        return dataclasses.replace(first, **changes)
    if first != second:
        raise _NotAlike
    return first


def _skeleton(record: TrainedRecord) -> Hashable:
    """What of a record must be the same at every batch size: its events but for their bytes, which allocations
    are real tensors, what it holds and returns, its operations' count."""
    return (
        tuple((index, nbytes == FREED, category) for index, nbytes, category in record.forward),
        record.output,
        tuple(sorted(record.layouts)),
        record.module_calls,
        record.held_inputs,
        record.holds_output,
        tuple(
            (kind, index, nbytes if kind == GRAD else 0, category) for kind, index, nbytes, category in record.backward
        ),
        record.returned,
        len(record.forward_ops),
        len(record.backward_ops),
    )


def _scaled_from(
    first: tuple[int, Hashable, TrainedRecord | None],
    second: tuple[int, Hashable, TrainedRecord | None],
    key: Hashable,
    batch_size: int,
) -> TrainedRecord | None:
    """The record at `batch_size` under `key` on the line through two (batch size, key, record), or None where
    `key` is not on the line through theirs or the records are not one record at two batch sizes."""
    (b1, key1, record1), (b2, key2, record2) = first, second
    if record1 is None or record2 is None or _skeleton(record1) != _skeleton(record2):
        return None
    at = (b1, b2, batch_size)
    try:
        if _scaled(key1, key2, at) != key:
            return None
        record = _scaled(record1, record2, at)
    except _NotAlike:
        return None
    assert isinstance(record, TrainedRecord)
    # an allocation scaled to -1 bytes is no free (FREED is -1): the frees are the events without a category
    allocations = [nbytes for _, nbytes, category in record.forward if category is not None]
    allocations += [nbytes for kind, _, nbytes, _ in record.backward if kind == ALLOC]
    layouts = [n for layout in record.layouts.values() for n in (*layout.size, layout.storage_offset)]
    if min([*allocations, *layouts, 0]) < 0 or any(layout.storage_bytes < 0 for layout in record.layouts.values()):
        return None
    return record


def _forward_as_scaled(
    scaled: TrainedRecord,
    log: Sequence[tuple[int, int, MemoryCategory | None]],
    output: torch.Tensor,
    ops: tuple[OpCost, ...],
    module_calls: int,
) -> bool:
    """Whether a traced call's forward is the scaled record's: the same allocations and frees, output layout and
    operations (its backward is compared when its record is made)."""
    found = _events(log)
    return (
        found is not None
        and tuple(found[0]) == scaled.forward
        and ops == scaled.forward_ops
        and module_calls == scaled.module_calls
        and Layout.of(output) == scaled.layouts.get(scaled.output)
    )


# ---------------------------------------------------------------- the optimizer step

MISSING = object()


@dataclass(frozen=True)
class StepRecord:
    """One traced optimizer step: its temporaries' allocations and frees in order (`Event`s) and its operations."""

    events: tuple[Event, ...]
    ops: tuple[OpCost, ...]


class StepRecords:
    """The optimizer steps of one model's estimate, by what a step depends on: the optimizer's class and settings,
    and each parameter's, gradient's and state tensor's layout, in order. A step over the same parameters with
    gradients of the same layouts (a z at another batch size: `fit` traces each z at several) allocates and
    frees the same temporaries and runs the same operations, whatever the values: it is replayed from the first
    one's record. Traced, never replayed: an optimizer from outside torch.optim, a state that is not a tensor, a
    step that leaves a temporary alive, frees a tensor from before it or changes a tensor's category."""

    def __init__(self) -> None:
        self.records: dict[Hashable, StepRecord | None] = {}
        self.traced = 0
        self.replayed = 0

    def step(
        self, optimizer: torch.optim.Optimizer, tracker: LiveTensorTracker, recorder: OpRecorder
    ) -> Callable[[], None]:
        """`optimizer.step`, recorded the first time a step of its key runs and replayed after."""
        original = optimizer.step

        def step() -> None:
            key = _step_key(optimizer, tracker, recorder)
            found = self.records.get(key, MISSING) if key is not None else None
            if key is None or tracker.log is not None or found is None:
                original()
                return
            if found is MISSING:
                ops_before = len(recorder.trace.ops)
                tracker.log = []
                try:
                    original()
                finally:
                    log, tracker.log = tracker.log, None
                self.records[key] = _step_record(log, tuple(recorder.trace.ops[ops_before:]))
                self.traced += 1
                return
            assert isinstance(found, StepRecord)
            keys: dict[int, int] = {}
            for index, nbytes, category in found.events:
                if nbytes == FREED:
                    tracker._release(keys.pop(index))
                else:
                    assert category is not None
                    keys[index] = tracker.allocate_virtual(nbytes, category)
            recorder.trace.ops.extend(found.ops)
            self.replayed += 1

        return step


def _layout(tensor: torch.Tensor) -> Hashable:
    return (tuple(tensor.shape), tensor.stride(), tensor.storage_offset(), tensor.dtype, str(tensor.device))


def _step_key(optimizer: torch.optim.Optimizer, tracker: LiveTensorTracker, recorder: OpRecorder) -> Hashable | None:
    """What an optimizer step depends on (None where it cannot be replayed: see `StepRecords`)."""
    if not type(optimizer).__module__.startswith("torch.optim."):
        return None
    from torch.optim import optimizer as torch_optimizer

    if torch_optimizer._global_optimizer_pre_hooks or torch_optimizer._global_optimizer_post_hooks:
        return None
    if optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks:
        return None
    groups: list[Hashable] = []
    for group in optimizer.param_groups:
        settings = tuple(sorted((name, repr(value)) for name, value in group.items() if name != "params"))
        params: list[Hashable] = []
        for param in group["params"]:
            if type(param) not in PLAIN_TENSORS or (param.grad is not None and type(param.grad) not in PLAIN_TENSORS):
                return None
            state: list[Hashable] = []
            for name, value in optimizer.state.get(param, {}).items():
                if not isinstance(value, torch.Tensor) or type(value) not in PLAIN_TENSORS:
                    return None
                state.append((name, _layout(value)))
            grad = None if param.grad is None else _layout(param.grad)
            params.append((_layout(param), param.requires_grad, grad, tuple(state)))
        groups.append((settings, tuple(params)))
    name = f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"
    return (name, tuple(groups), *_modes(tracker, recorder))


def _step_record(log: Sequence[tuple[int, int, MemoryCategory | None]], ops: tuple[OpCost, ...]) -> StepRecord | None:
    """The record of a traced optimizer step (None where it cannot be replayed: see `StepRecords`)."""
    found = _events(log)
    if found is None or found[1]:  # a temporary left alive
        return None
    return StepRecord(tuple(found[0]), ops)
