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

    @contextmanager
    def replaying(
        self,
        model: torch.nn.Module,
        layers: Sequence[Layer],
        trainable_layers: int,
        tracker: LiveTensorTracker,
        recorder: OpRecorder,
    ) -> Iterator[None]:
        """While active (around one instrumented step at z = `trainable_layers`), every frozen layer that can be
        replayed runs through `_call`: traced and recorded the first time, replayed after."""
        patched: list[torch.nn.Module] = []
        try:
            for layer in layers[: len(layers) - trainable_layers]:
                module = model.get_submodule(layer.name) if layer.name else None
                if module is None or layer.shared_with or "forward" in vars(module) or id(module) in map(id, patched):
                    continue
                signature = _module_signature(module)
                if signature is None:
                    continue
                module.forward = self._forward(module.forward, signature, tracker, recorder)
                patched.append(module)
            yield
        finally:
            for module in patched:
                del module.forward

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
        ops_before, calls_before = len(recorder.trace.ops), recorder.trace.module_calls
        tracker.log = []
        try:
            output = original(*args, **kwargs)
        finally:
            log, tracker.log = tracker.log, None
        ops = tuple(recorder.trace.ops[ops_before:])
        self.records[key] = _recorded(log, output, ops, recorder.trace.module_calls - calls_before)
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


def _module_signature(module: torch.nn.Module) -> Hashable | None:
    """What a frozen layer's forward depends on besides its inputs: class, configuration, parameter and buffer
    shapes and dtypes, each submodule's train/eval mode. None where it cannot be replayed: a parameter that
    requires grad, or a hook on a module inside it (the layer's own hooks run outside its forward)."""
    if any(param.requires_grad for param in module.parameters()):
        return None
    for inner in module.modules():
        if inner is not module and (
            inner._forward_hooks or inner._forward_pre_hooks or inner._backward_hooks or inner._backward_pre_hooks
        ):
            return None
        if "forward" in vars(inner):  # a forward replaced on the instance (by another tool)
            return None
    parameters = tuple((name, tuple(p.shape), p.dtype) for name, p in module.named_parameters())
    buffers = tuple((name, tuple(b.shape), b.dtype) for name, b in module.named_buffers())
    modes = tuple(inner.training for inner in module.modules())
    return (type(module), repr(module), parameters, buffers, modes)


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
    if torch_module._global_forward_hooks or torch_module._global_backward_hooks:
        return None
    if torch_module._global_backward_pre_hooks:
        return None
    pre_hooks = list(torch_module._global_forward_pre_hooks.values())
    if any(getattr(hook, "__self__", None) is not recorder for hook in pre_hooks):
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
    autocast = tuple((torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind)) for kind in ("cpu", "cuda"))
    function_modes = tuple(type(mode) for mode in _get_current_function_mode_stack())  # CUDA's autocast on the CPU
    return (
        signature,
        str(spec),
        tuple(described),
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


def _new_output(record: ForwardRecord) -> torch.Tensor:
    """A tensor of the recorded layout on a storage of the recorded bytes (allocated now, under the step's modes)."""
    itemsize = record.dtype.itemsize
    extent = 0 if 0 in record.size else 1 + sum((n - 1) * s for n, s in zip(record.size, record.stride, strict=True))
    if record.storage_offset == 0 and extent * itemsize == record.output_bytes:
        return torch.empty_strided(record.size, record.stride, dtype=record.dtype, device=record.device)
    base = torch.empty(record.output_bytes // itemsize, dtype=record.dtype, device=record.device)
    return base.as_strided(record.size, record.stride, record.storage_offset)
