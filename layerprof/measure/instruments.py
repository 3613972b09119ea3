"""Timers, memory probes and FLOP counting for one training step.

Timing and instrumentation never share a step: timed steps run bare, and memory tracking / FLOP counting run
in one extra step afterwards, so that dispatch-level hooks add nothing to the step times.
"""

from __future__ import annotations

import math
import statistics
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeVar, cast

import torch
from torch._subclasses.fake_tensor import FakeTensor, unset_fake_temporarily  # imported by torch itself
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, sdpa_flop_count
from torch.utils.hooks import RemovableHandle

from layerprof.devices import MatmulThreads
from layerprof.profile import MemoryCategory
from layerprof.sources.recipes import recomputing
from layerprof.stats import TimingStats, median_confidence_interval

T = TypeVar("T")

__all__ = ["TimingStats", "median_confidence_interval"]  # kept importable from here

# ---------------------------------------------------------------- time


# A cell is host-bound when launching a step takes at least this share of the step's time.
HOST_BOUND_SHARE = 0.9


@dataclass
class StepTimes:
    step_ms: list[float] = field(default_factory=list)  # one per measured step
    host_ms: list[float] = field(default_factory=list)  # CUDA: launching one step onto an idle queue

    def extend(self, other: StepTimes) -> None:
        self.step_ms.extend(other.step_ms)
        self.host_ms.extend(other.host_ms)

    @property
    def host_bound(self) -> bool | None:
        if not self.host_ms or not self.step_ms:
            return None
        return statistics.median(self.host_ms) >= HOST_BOUND_SHARE * statistics.median(self.step_ms)


def time_window(
    step: Callable[[], object],
    device: torch.device,
    count: int,
    launch_ms: Callable[[], float] | None = None,
) -> StepTimes:
    """`count` consecutive steps.

    CUDA: events recorded on the device's current stream between steps and read after one synchronise. The host
    time says whether Python keeps up with the GPU: `launch_ms` (one untimed step that reports its own launch
    time, e.g. `Cell.launch_ms`) runs first onto the idle queue; without it, the first timed step's launch is
    taken. CPU: perf_counter around each step.
    """
    times = StepTimes()
    if device.type == "cuda":
        stream = torch.cuda.current_stream(device)
        events = [torch.cuda.Event(enable_timing=True) for _ in range(count + 1)]
        stream.synchronize()
        if launch_ms is not None:
            times.host_ms.append(launch_ms())
        events[0].record(stream)
        for index in range(count):
            began = time.perf_counter()
            step()
            if index == 0 and launch_ms is None:
                times.host_ms.append((time.perf_counter() - began) * 1000.0)
            events[index + 1].record(stream)
        events[-1].synchronize()
        times.step_ms = [events[i].elapsed_time(events[i + 1]) for i in range(count)]
        return times
    clock = time.perf_counter
    for _ in range(count):
        began = clock()
        step()
        times.step_ms.append((clock() - began) * 1000.0)
    return times


def reference_workload_ms(device: torch.device) -> float:
    """A fixed workload timed on the device (the median of three runs): when it runs slower than in the
    quietest round, something else was using the machine."""
    size = 4096 if device.type == "cuda" else 384
    a = torch.ones(size, size, device=device)

    def work() -> None:
        for _ in range(8):
            torch.mm(a, a)

    work()
    return statistics.median(sum(time_window(work, device, 1).step_ms) for _ in range(3))


# ---------------------------------------------------------------- memory: live-tensor tracker (any device)

# what a LiveTensorTracker's log holds in place of an allocation's bytes for a free and a change of category
FREED, RECATEGORISED = -1, -2


class LiveTensorTracker(TorchDispatchMode):
    """Peak bytes of live tensor storage during a step, and its split by MemoryCategory at that peak.

    Storages alive before the step (parameters, buffers, optimizer state, the batch) are registered first, so
    that views of them (a weight's `.t()` inside `nn.Linear`) are never counted as new allocations. Every op
    output whose storage is new is counted until a weak-reference finaliser sees the storage released.
    Storages are keyed by the storage object, not its data pointer (fake and meta tensors share pointers).
    Gradients are recognised when autograd accumulates them into `.grad`.

    `allocation_size` maps a storage's bytes to what its allocation holds: itself on the CPU, the caching
    allocator's block on CUDA (`layerprof.devices.cuda_block_bytes`), so that the tracker's figures compare
    with `torch.cuda.max_memory_allocated`.
    """

    def __init__(self, allocation_size: Callable[[int], int] = int) -> None:
        super().__init__()
        self.allocation_size = allocation_size
        self._category: dict[int, MemoryCategory] = {}  # id(storage) -> category
        self._size: dict[int, int] = {}
        self._refs: dict[int, weakref.ref[torch.UntypedStorage]] = {}
        self.live: dict[MemoryCategory, int] = {category: 0 for category in MemoryCategory if category.tracked}
        self.current = 0
        self.peak = 0
        self.at_peak = dict(self.live)
        self.category_peaks = dict(self.live)  # each category's own maximum during the step
        self.new_allocations = MemoryCategory.ACTIVATIONS  # what op outputs count as; the step's phase sets it
        self._hooks: list[RemovableHandle] = []
        # while a list: every allocation (key, bytes, category), free (key, FREED, None) and change of category
        # (key, RECATEGORISED, category) in order (`layerprof.predict.reuse` records a frozen layer's forward)
        self.log: list[tuple[int, int, MemoryCategory | None]] | None = None
        self._virtual = 0  # the last key of an allocation no storage holds (`allocate_virtual`)

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
            if self.log is not None:
                self.log.append((key, RECATEGORISED, category))
            self.live[old] -= self._size[key]
            self.live[category] += self._size[key]
            self.category_peaks[category] = max(self.category_peaks[category], self.live[category])
            self._category[key] = category

    def _track(self, tensor: torch.Tensor, category: MemoryCategory) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._category:
            return
        self._allocate(key, storage.nbytes(), category)
        self._refs[key] = weakref.ref(storage, lambda _ref, key=key: self._release(key))  # type: ignore[misc]

    def allocate_virtual(self, nbytes: int, category: MemoryCategory) -> int:
        """Count an allocation of `nbytes` that no storage holds (a replayed one); `_release(key)` frees it."""
        self._virtual -= 1  # storage ids are positive: a negative key is no storage's
        self._allocate(self._virtual, nbytes, category)
        return self._virtual

    def _allocate(self, key: int, nbytes: int, category: MemoryCategory) -> None:
        """A storage of `nbytes` (requested) allocated now, under `key`."""
        if self.log is not None:
            self.log.append((key, nbytes, category))
        size = self.allocation_size(nbytes)
        self._category[key] = category
        self._size[key] = size
        self.live[category] += size
        self.current += size
        self.category_peaks[category] = max(self.category_peaks[category], self.live[category])
        if self.current > self.peak:
            self.peak = self.current
            self.at_peak = dict(self.live)

    def _release(self, key: int) -> None:
        category = self._category.pop(key, None)
        if category is None:
            return
        if self.log is not None:
            self.log.append((key, FREED, None))
        size = self._size.pop(key)
        self._refs.pop(key, None)
        self.live[category] -= size
        self.current -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is PRIM_DEVICE and fake_device_query(args):
            return args[0].device
        shortcut = fake_shortcut(func, args, kwargs)
        if shortcut is not NO_SHORTCUT:
            return shortcut
        out = func(*args, **(kwargs or {}))
        for value in op_tensors(out):
            self._track(value, self.new_allocations)
        return out

    def __exit__(self, *exc: object) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        super().__exit__(*exc)


def plain_tensors(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The tensors that hold a tensor's storage: itself, or a wrapper subclass's inner tensors (torchao's 8-bit
    optimizer state: codes, scale and code map), recursively."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    if not is_traceable_wrapper_subclass(tensor):
        return [tensor]
    names, _ = tensor.__tensor_flatten__()
    return [inner for name in names for inner in plain_tensors(getattr(tensor, name))]


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every tensor of the optimizer's state that holds storage (wrapper subclasses by their inner tensors)."""
    return [
        plain
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
        for plain in plain_tensors(value)
    ]


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """The bytes of the optimizer's state, each storage once."""
    storages = {id(t.untyped_storage()): t.untyped_storage().nbytes() for t in optimizer_state_tensors(optimizer)}
    return sum(storages.values())


# ---------------------------------------------------------------- FLOPs


def _attention_forward_flops(query_shape, key_shape, value_shape, *_args: object, **_kwargs: object) -> int:
    """Q @ K^T and P @ V."""
    return int(sdpa_flop_count(query_shape, key_shape, value_shape))


def _attention_backward_flops(
    grad_out_shape, query_shape, key_shape, value_shape, *_args: object, **_kwargs: object
) -> int:
    """dV, dP, dQ and dK: twice the forward's products. Fused kernels also recompute the scores, which
    PyTorch's own formula counts; model FLOPs leave that out, so that every backend counts the same."""
    return 2 * int(sdpa_flop_count(query_shape, key_shape, value_shape))


def _attention_formulas() -> dict[object, Callable[..., int]]:
    """Formulas for every fused attention kernel the CPU and CUDA can pick, where this torch has it. The CPU's
    flash kernel has no formula in torch (it counts 0); the math path is counted by its matmuls."""
    aten = torch.ops.aten
    forward = ("_scaled_dot_product_flash_attention_for_cpu",)
    backward = (
        "_scaled_dot_product_flash_attention_for_cpu_backward",
        "_scaled_dot_product_flash_attention_backward",
        "_scaled_dot_product_efficient_attention_backward",
        "_scaled_dot_product_cudnn_attention_backward",
    )
    formulas: dict[object, Callable[..., int]] = {}
    for names, formula in ((forward, _attention_forward_flops), (backward, _attention_backward_flops)):
        for name in names:
            if hasattr(aten, name):
                formulas[getattr(aten, name)] = formula
    return formulas


def _convolution_backward_flops(
    grad_out_shape,
    x_shape,
    w_shape,
    _bias,
    _stride,
    _padding,
    _dilation,
    transposed,
    _output_padding,
    _groups,
    output_mask,
    *_args: object,
    **_kwargs: object,
) -> int:
    """The input gradient and the weight gradient of a convolution each cost what its forward costs, grouped and
    depthwise convolutions included. torch's own formula counts the weight gradient as if `groups` were 1: a
    depthwise layer's backward read `channels` times too many FLOPs (efficientnet_b0 trained 14x its cost).

    The forward's count already divides by the groups through the weight's shape (C_out, C_in / groups, k...);
    the weight gradient correlates each group's C_in / groups inputs with its C_out / groups outputs, the same
    products again. The bias gradient (a sum) counts 0, as the bias does in the forward."""
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


ATTENTION_FLOP_FORMULAS = _attention_formulas()
# every formula layerprof puts in place of torch's own (torch.utils.flop_counter): the FLOP registry
FLOP_FORMULAS: dict[object, Callable[..., int]] = {
    **ATTENTION_FLOP_FORMULAS,
    torch.ops.aten.convolution_backward: _convolution_backward_flops,
}


def flop_counter() -> FlopCounterMode:
    """Model FLOPs per step: matmuls, convolutions and attention (every backend alike); elementwise ops,
    normalisation and the optimizer count 0."""
    return FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS)


# ---------------------------------------------------------------- CUDA allocator


@dataclass
class AllocatorPeaks:
    allocated_bytes: int
    reserved_bytes: int
    requested_bytes: int | None  # what tensors asked for, before rounding to blocks (torch >= 2.1)
    alloc_retries: int  # since the last reset


def reset_cuda_peaks(device: torch.device) -> int:
    """Reset the allocator's peaks; returns its retry count so far, to subtract later."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return int(torch.cuda.memory_stats(device).get("num_alloc_retries", 0))


def cuda_peaks(device: torch.device, retries_before: int = 0) -> AllocatorPeaks:
    """The allocator's peaks since the last reset."""
    torch.cuda.synchronize(device)
    stats = torch.cuda.memory_stats(device)
    requested = stats.get("requested_bytes.all.peak")
    return AllocatorPeaks(
        allocated_bytes=int(stats.get("allocated_bytes.all.peak", torch.cuda.max_memory_allocated(device))),
        reserved_bytes=int(stats.get("reserved_bytes.all.peak", torch.cuda.max_memory_reserved(device))),
        requested_bytes=None if requested is None else int(requested),
        alloc_retries=int(stats.get("num_alloc_retries", 0)) - retries_before,
    )


# ---------------------------------------------------------------- failures

# Allocation failures that are out-of-memory in all but name: cuBLAS and cuDNN allocate their workspaces
# themselves and report their own status.
OUT_OF_MEMORY_MARKERS = (
    "out of memory",
    "DefaultCPUAllocator: can't allocate memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE",
    "CUDNN_BACKEND_API_FAILED: CUDNN_STATUS_ALLOC",
)
# CUDA errors that leave the context unusable: every later CUDA call fails with the same error.
STICKY_CUDA_MARKERS = (
    "illegal memory access",
    "device-side assert",
    "unspecified launch failure",
    "illegal instruction",
    "misaligned address",
    "an illegal address",
    "hardware stack error",
    "uncorrectable ECC error",
    "CUDA error: unknown error",
)


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    message = str(error)
    return isinstance(error, RuntimeError) and any(
        marker.lower() in message.lower() for marker in OUT_OF_MEMORY_MARKERS
    )


def is_sticky_cuda_error(error: BaseException) -> bool:
    """An error after which this process can run nothing more on the GPU."""
    message = str(error).lower()
    return isinstance(error, RuntimeError) and any(marker.lower() in message for marker in STICKY_CUDA_MARKERS)


def tensors_in(value: object) -> list[torch.Tensor]:
    """The tensors in any pytree (a batch: a dataclass registered with pytree, a dict, a tuple, ...)."""
    return [v for v in tree_flatten(value)[0] if isinstance(v, torch.Tensor)]


def detached(value: T) -> T:
    """`value` (any pytree: a tensor, a batch, a layer's inputs or outputs) with every tensor in it detached."""
    return cast(T, tree_map(lambda v: v.detach() if isinstance(v, torch.Tensor) else v, value))


# Autograd's engine and the optimizer ask a fake tensor for its device through the dispatcher (prim.device): 72% of
# a fake step's dispatches. FakeTensorMode answers it from the tensor alone (the `device` property: its fake device,
# or meta inside a kernel); a mode above it answers the same without passing it down the stack. The answer is no
# operation: nothing is recorded or tracked for it either way.
PRIM_DEVICE = torch.ops.prim.device.default


def fake_device_query(args: Sequence[object]) -> bool:
    """A prim.device query about one fake tensor (answered by its `device` property)."""
    return len(args) == 1 and isinstance(args[0], FakeTensor)


# An in-place multi-tensor operation (the optimizer's step: `_foreach_mul_`, `_foreach_lerp_`, ...) on fake tensors
# allocates nothing and returns nothing: with no tensor holding a value (a fake tensor's constant, which the
# optimizer's step counters hold), running it changes nothing an estimate sees, and fake tensors' cache keys made it
# the most of a traced step once the blocks replay. The recorder above still records it.
LOCAL_SCALAR = torch.ops.aten._local_scalar_dense.default  # `.item()`: the optimizer reads its step counters
NO_SHORTCUT = object()


def fake_shortcut(func: object, args: Sequence[object], kwargs: dict[str, object] | None) -> object:
    """What FakeTensorMode would answer, where that is known without its dispatch (whose cache keys cost most of an
    optimizer step): nothing, for an in-place multi-tensor operation on fake tensors without constants; a constant's
    value, for `.item()` of a fake constant. NO_SHORTCUT elsewhere."""
    if in_place_foreach(func) and fake_in_place_foreach(args, kwargs):
        return None
    if func is LOCAL_SCALAR and isinstance(args[0], FakeTensor) and args[0].constant is not None:
        with unset_fake_temporarily():
            return args[0].constant.item()
    return NO_SHORTCUT


class FakeShortcuts(TorchDispatchMode):
    """Runs every operation but answers `fake_shortcut`'s without running them (an estimate's optimizer priming)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        shortcut = fake_shortcut(func, args, kwargs)
        if shortcut is not NO_SHORTCUT:
            return shortcut
        return func(*args, **(kwargs or {}))


def in_place_foreach(func: object) -> bool:
    """Whether aten op `func` is an in-place multi-tensor operation (`_foreach_add_`, ...)."""
    name = getattr(getattr(func, "_overloadpacket", None), "__name__", "")
    return name.startswith("_foreach_") and name.endswith("_")


def fake_in_place_foreach(args: Sequence[object], kwargs: dict[str, object] | None) -> bool:
    """Whether every tensor of an in-place multi-tensor operation's arguments is fake and holds no constant."""
    tensors = op_tensors((args, kwargs or {}))
    return bool(tensors) and all(isinstance(t, FakeTensor) and t.constant is None for t in tensors)


def op_tensors(value: object) -> list[torch.Tensor]:
    """The tensors in an aten operation's arguments or results, in pytree's order: they nest only in tuples, lists
    and dicts, so this walks those alone (`tensors_in`'s generic pytree flatten was about 7% of a traced step)."""
    if isinstance(value, torch.Tensor):
        return [value]
    found: list[torch.Tensor] = []
    _collect_tensors(value, found)
    return found


def _collect_tensors(value: object, found: list[torch.Tensor]) -> None:
    if isinstance(value, torch.Tensor):
        found.append(value)
    elif isinstance(value, (tuple, list)):
        for item in value:
            _collect_tensors(item, found)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_tensors(item, found)


# ---------------------------------------------------------------- the operations of a step


class Phase(str, Enum):
    """The part of a training step an operation belongs to."""

    FORWARD = "forward"
    BACKWARD = "backward"
    OPTIMIZER = "optimizer"
    RECOMPUTE = "recompute"  # a checkpointed layer's forward run again inside backward


class OpClass(str, Enum):
    """What bounds an operation's kernel, each class with its own efficiency in the time model: matrix products,
    dense and grouped (depthwise) convolutions and attention by FLOPs; normalisation, elementwise arithmetic,
    softmax and reductions (pooling included) and data movement (copies, concatenation, padding, gathers, channel
    shuffles) by the bytes they move."""

    GEMM = "gemm"
    CONV = "conv"
    GROUPED_CONV = "grouped_conv"  # groups > 1: depthwise and grouped convolutions, far from the dense peak
    ATTENTION = "attention"
    NORM = "norm"
    ELEMENTWISE = "elementwise"
    REDUCTION = "reduction"
    MOVEMENT = "movement"

    @property
    def compute_bound(self) -> bool:
        """Whether the class is priced by FLOPs against a peak (else by bytes against a bandwidth)."""
        return self in (OpClass.GEMM, OpClass.CONV, OpClass.GROUPED_CONV, OpClass.ATTENTION)


GEMM_OPS = frozenset(("mm", "addmm", "bmm", "baddbmm", "_scaled_mm", "_addmm_activation"))
# fused-bias products, which CUDA runs through cuBLASLt (with a workspace of its own)
CUBLASLT_OPS = frozenset(("addmm", "_addmm_activation"))
CONV_OPS = frozenset(("convolution", "convolution_backward", "cudnn_convolution", "_convolution"))
# where each convolution op takes `groups` among its positional arguments
CONV_GROUPS_ARGUMENT = {"convolution": 8, "_convolution": 8, "convolution_backward": 9, "cudnn_convolution": 5}
NORM_OPS = frozenset(
    (
        "native_batch_norm",
        "native_batch_norm_backward",
        "_native_batch_norm_legit",
        "_native_batch_norm_legit_functional",
        "_native_batch_norm_legit_no_training",
        "batch_norm_backward",
        "cudnn_batch_norm",
        "cudnn_batch_norm_backward",
        "native_layer_norm",
        "native_layer_norm_backward",
        "native_group_norm",
        "native_group_norm_backward",
        "_fused_rms_norm",
        "_fused_rms_norm_backward",
    )
)
REDUCTION_OPS = frozenset(
    (
        "_softmax",
        "_softmax_backward_data",
        "_log_softmax",
        "_log_softmax_backward_data",
        "sum",
        "mean",
        "amax",
        "amin",
        "max",
        "min",
        "argmax",
        "var",
        "var_mean",
        "std",
        "norm",
        "linalg_vector_norm",
        "_foreach_norm",
        "logsumexp",
        "cumsum",
        "nll_loss_forward",
        "nll_loss_backward",
        "nll_loss2d_forward",
        "nll_loss2d_backward",
        "max_pool2d_with_indices",
        "max_pool2d_with_indices_backward",
        "avg_pool2d",
        "avg_pool2d_backward",
        "_adaptive_avg_pool2d",
        "_adaptive_avg_pool2d_backward",
        "adaptive_max_pool2d",
        "adaptive_max_pool2d_backward",
    )
)
MOVEMENT_OPS = frozenset(
    (
        "copy_",
        "_to_copy",
        "clone",
        "cat",
        "stack",
        "constant_pad_nd",
        "slice_backward",
        "select_backward",
        "slice_scatter",
        "select_scatter",
        "index_select",
        "gather",
        "scatter",
        "scatter_add",
        "index",
        "index_put",
        "index_put_",
        "index_add",
        "embedding",
        "embedding_dense_backward",
        "repeat",
        "expand_copy",
        "split_with_sizes_copy",
        "channel_shuffle",
        "pixel_shuffle",
        "roll",
        "flip",
        "fill_",
        "zero_",
        "zeros",
        "zeros_like",
        "new_zeros",
        "ones",
        "ones_like",
        "full",
        "full_like",
        "tril",
        "triu",
    )
)
# the registry: aten op name -> class; convolutions with groups > 1 become GROUPED_CONV, attention is found by
# name (its kernels have many names), and every other op is ELEMENTWISE arithmetic
OP_CLASSES: dict[str, OpClass] = {
    name: op_class
    for op_class, names in (
        (OpClass.GEMM, GEMM_OPS),
        (OpClass.CONV, CONV_OPS),
        (OpClass.NORM, NORM_OPS),
        (OpClass.REDUCTION, REDUCTION_OPS),
        (OpClass.MOVEMENT, MOVEMENT_OPS),
    )
    for name in names
}
# operations that launch no kernel: views, metadata, allocation without initialisation, host-side scalars;
# `_unsafe_view` is a view whose schema says it is not one (matmul and reshape of a fresh result return it)
NO_KERNEL_OPS = frozenset(
    (
        "_unsafe_view",
        "empty",
        "empty_strided",
        "new_empty",
        "new_empty_strided",
        "empty_like",
        "_local_scalar_dense",
        "lift_fresh",
        "_record_function_enter_new",
        "_record_function_exit",
        "sym_size",
        "sym_stride",
        "sym_numel",
        "device",
    )
)
# operations that read rows of their first input, not all of it (an embedding reads the tokens' rows)
ROW_READ_OPS = frozenset(("embedding", "index_select", "gather", "index", "take_along_dim"))
# PyTorch's multi_tensor_apply launches one kernel per this many tensors, by the number of tensor lists taken
FOREACH_TENSORS_PER_KERNEL = (110, 64, 48, 36, 30)


def op_class(name: str, args: Sequence[object] = ()) -> OpClass:
    """The class of aten op `name` (`OP_CLASSES`); a convolution called with `args` whose groups exceed 1 is
    GROUPED_CONV."""
    if "scaled_dot_product" in name or "flash_attention" in name or "efficient_attention" in name:
        return OpClass.ATTENTION
    found = OP_CLASSES.get(name, OpClass.ELEMENTWISE)
    if found is OpClass.CONV:
        index = CONV_GROUPS_ARGUMENT.get(name)
        groups = args[index] if index is not None and len(args) > index else 1
        if isinstance(groups, int) and groups > 1:
            return OpClass.GROUPED_CONV
    return found


class ConvKind(str, Enum):
    """How a CPU runs a convolution: each kind reaches the peak by its own curve in the time model."""

    DENSE = "dense"  # groups = 1, a kernel wider than 1x1, through oneDNN
    POINTWISE = "pointwise"  # groups = 1, a 1x1 kernel, through oneDNN
    NATIVE = "native"  # groups = 1, through ATen's own kernel (a product per image): see `aten_native_conv`
    GROUPED = "grouped"  # 1 < groups < input channels
    DEPTHWISE = "depthwise"  # one group per input channel, at most 3x3
    WIDE_DEPTHWISE = "wide_depthwise"  # one group per input channel, 5x5 and wider (oneDNN's slower kernels)


@dataclass(frozen=True)
class ConvShape:
    """A convolution's geometry, as the time model prices it on a CPU: how many output positions each image's
    channel has (small late layers run far below the peak) and how much work each output element takes."""

    out_pixels: int  # output positions per image and channel (H_out x W_out; the forward's output for backward)
    per_output: int  # multiply-adds per output element: input channels per group x kernel taps
    groups: int
    channels: int  # input channels
    native: bool  # ATen's own kernel, not oneDNN (`aten_native_conv`, decided as ATen decides when traced)
    input_grad: bool = False  # convolution_backward: computes the input's gradient
    weight_grad: bool = False  # convolution_backward: computes the weight's gradient
    strided: bool = False  # a stride above 1 (stems, downsampling): slower than the unit-stride table says

    @property
    def taps(self) -> int:
        """Kernel positions (k_h x k_w)."""
        return self.per_output * self.groups // max(1, self.channels)

    @property
    def kind(self) -> ConvKind:
        """How the CPU runs it: by groups, kernel size and ATen's choice of kernel."""
        if self.groups > 1 and self.groups == self.channels:
            return ConvKind.DEPTHWISE if self.taps <= 9 else ConvKind.WIDE_DEPTHWISE
        if self.groups > 1:
            return ConvKind.GROUPED
        if self.native:
            return ConvKind.NATIVE
        return ConvKind.POINTWISE if self.taps == 1 else ConvKind.DENSE


def aten_native_conv(
    batch: int,
    kernel: Sequence[int],
    unit_stride: bool,
    groups: int,
    input_elements: int,
    float32: bool,
    transposed: bool,
    threads: int,
) -> bool:
    """Whether ATen runs a float32 CPU convolution with its own kernel instead of oneDNN's, by its rule
    (`ConvParams::use_mkldnn` in aten/src/ATen/native/Convolution.cpp): a 1x1 kernel at unit stride and dilation
    with a batch below 16 on one thread ("THNN is faster when single-threaded"), a dense convolution of one image
    with at most a 3x3 kernel and at most 20,480 input elements, and transposed ones. Other dtypes: oneDNN (False).
    ATen reads the kernel's last two sizes (a 1-d convolution is viewed as 2-d, its kernel as 1 x k; a 3-d one with
    a k x 1 x 1 kernel is pointwise), and `input_elements` is the product of the input's first four sizes (a 3-d
    convolution's width left out)."""
    if not float32:
        return False
    pointwise = all(k == 1 for k in kernel[-2:])
    wide = len(kernel) >= 2 and all(k > 3 for k in kernel[-2:])
    onednn = (
        not transposed
        and (not unit_stride or batch >= 16 or not pointwise or threads > 1)
        and (groups > 1 or wide or batch > 1 or input_elements > 20480)
    )
    return not onednn


# where each convolution op takes (input, weight, stride, dilation, transposed) among its positional arguments
CONV_ARGUMENTS = {
    "convolution": (0, 1, 3, 5, 6),
    "_convolution": (0, 1, 3, 5, 6),
    "convolution_backward": (1, 2, 4, 6, 7),
    "cudnn_convolution": (0, 1, 3, 4, None),
}


def conv_shape(name: str, args: Sequence[object], out: object) -> ConvShape | None:
    """The geometry of convolution op `name` called with `args` returning `out` (None for other ops, or where the
    arguments are not as the schema has them); ATen's choice of kernel as it would make it now (torch's threads)."""
    where = CONV_ARGUMENTS.get(name)
    if where is None:
        return None
    at_input, at_weight, at_stride, at_dilation, at_transposed = where
    x, weight = args[at_input], args[at_weight]
    output = args[0] if name == "convolution_backward" else out
    if not (isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor) and isinstance(output, torch.Tensor)):
        return None
    at_groups = CONV_GROUPS_ARGUMENT[name]
    given = args[at_groups] if len(args) > at_groups else 1
    groups = given if isinstance(given, int) else 1
    transposed = at_transposed is not None and len(args) > at_transposed and bool(args[at_transposed])
    steps = [*_ints(args, at_stride), *_ints(args, at_dilation)]
    kernel = [int(k) for k in weight.shape[2:]]
    taps = math.prod(kernel)
    per_output = (int(weight.shape[0]) // groups if transposed else int(weight.shape[1])) * taps
    mask = args[10] if name == "convolution_backward" and len(args) > 10 else ()
    native = aten_native_conv(
        int(x.shape[0]),
        kernel,
        all(step == 1 for step in steps),
        groups,
        math.prod(int(size) for size in x.shape[:4]),
        x.dtype == torch.float32,
        transposed,
        torch.get_num_threads(),
    )
    return ConvShape(
        math.prod(int(size) for size in output.shape[2:]),
        per_output,
        groups,
        int(x.shape[1]),
        native,
        bool(mask[0]) if isinstance(mask, (list, tuple)) and mask else False,
        bool(mask[1]) if isinstance(mask, (list, tuple)) and len(mask) > 1 else False,
        any(step != 1 for step in _ints(args, at_stride)),
    )


# ATen's max pooling on a CPU, and whether the op is its backward
POOL_OPS = {"max_pool2d_with_indices": False, "max_pool2d_with_indices_backward": True}


@dataclass(frozen=True)
class PoolShape:
    """A max pooling's work, as the time model prices it on a CPU: ATen's kernel visits every window position of
    every output one element at a time (forward) and adds each output's gradient at its index (backward), far below
    any memory rate. The outputs are kept per byte the op moves, so that the work follows the bytes wherever a
    trace's bytes are scaled (between two batch sizes)."""

    taps: int  # window positions each output visits (k_h x k_w); 1 for the backward (one addition per output)
    bytes_per_output: float  # the op's bytes moved over its output elements (the forward's output for backward)
    backward: bool = False

    def work(self, bytes_moved: int) -> float:
        """The window visits (forward) or additions (backward) of a call that moves `bytes_moved`."""
        return bytes_moved / self.bytes_per_output * self.taps


def pool_shape(name: str, args: Sequence[object], out: object, bytes_moved: int) -> PoolShape | None:
    """The work of max pooling op `name` called with `args` returning `out` and moving `bytes_moved` (None for
    other ops, and for a forward on a channels-last input, which runs near its bytes' rate: priced by them):
    `max_pool2d_with_indices(input, kernel_size, ...)` returns (values, indices);
    `max_pool2d_with_indices_backward(grad_output, input, kernel_size, ...)` the input's gradient."""
    backward = POOL_OPS.get(name)
    if backward is None:
        return None
    at = 2 if backward else 1
    given = args[at] if len(args) > at else None
    kernel = [given] if isinstance(given, int) else _ints(args, at)
    outputs = args[0] if backward else (out[0] if isinstance(out, (tuple, list)) and out else None)
    if not isinstance(outputs, torch.Tensor) or not kernel or not outputs.numel() or not bytes_moved:
        return None
    if not backward and _channels_last(args[0]):  # ATen's channels-last forward runs vectorised across channels
        return None
    taps = 1 if backward else math.prod(kernel * (2 // len(kernel)))  # kernel_size=[3] means 3x3
    return PoolShape(taps, bytes_moved / outputs.numel(), backward)


def _channels_last(x: object) -> bool:
    """Whether ATen's CPU max pooling takes its channels-last kernel for `x` (its strides channels-last, not also
    contiguous): that forward runs ~17x faster than the element-at-a-time one (8x64x32x32, 3x3 at stride 2: 0.27 ms
    against 4.7 ms on an AMD EPYC, busy), near its bytes' rate (its backward: as fast in either)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.is_contiguous():
        return False
    return x.is_contiguous(memory_format=torch.channels_last)


def _ints(args: Sequence[object], index: int | None) -> list[int]:
    value = args[index] if index is not None and len(args) > index else ()
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else []


@dataclass(frozen=True)
class OpCost:
    """One operation of a traced step, as the time model needs it."""

    name: str  # the aten op, without overload
    op_class: OpClass
    phase: Phase
    flops: int
    bytes_moved: int  # inputs read and outputs written
    dtype: str  # the compute dtype: "float32", "bfloat16", "float16"
    kernels: int  # kernels it launches on a GPU (0: a view or metadata)
    # bytes of its largest output that is a new allocation (not written into an input, an out= or a view): on a
    # CPU a large one is new pages the kernel must fault in (the time model prices them)
    fresh_bytes: int = 0
    conv: ConvShape | None = None  # a convolution's geometry (the CPU's time model prices it)
    pool: PoolShape | None = None  # a max pooling's work (the CPU's time model prices it)


@dataclass
class StepTrace:
    """A traced training step: its operations, and how many module calls its forward made (the host's Python
    work per module, which the time model prices)."""

    ops: list[OpCost] = field(default_factory=list)
    module_calls: int = 0

    def dispatched(self, phase: Phase) -> int:
        return sum(1 for op in self.ops if op.phase is phase)


class OpRecorder(TorchDispatchMode):
    """Records an `OpCost` for every aten operation of a step (`trace`): the step's FLOPs (by the formulas of
    `flop_counter`), which threads ran matrix products, and what the time model reads. Set `phase` as the step
    moves on; module calls are counted while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.phase = Phase.FORWARD
        self.trace = StepTrace()
        self.paused = False  # while True, operations run unrecorded (`layerprof.predict.reuse` replays a record)
        self._formulas = flop_counter().flop_registry
        self._hook: RemovableHandle | None = None

    @property
    def ops(self) -> list[OpCost]:
        return self.trace.ops

    def _count_call(self, _module: torch.nn.Module, _args: object) -> None:
        self.trace.module_calls += 1

    def __enter__(self) -> OpRecorder:
        self._hook = torch.nn.modules.module.register_module_forward_pre_hook(self._count_call)
        entered: OpRecorder = super().__enter__()
        return entered

    def __exit__(self, *exc: object) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is PRIM_DEVICE and fake_device_query(args):
            return args[0].device
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.paused:
            return out
        name = func.__name__.split(".")[0]
        if name in ("device", "sym_size", "sym_stride", "sym_numel"):
            return out
        formula = self._formulas.get(func._overloadpacket)
        flops = int(formula(*args, **kwargs, out_val=out)) if formula is not None else 0
        inputs = op_tensors((args, kwargs))
        outputs = op_tensors(out)
        kernels = 0 if getattr(func, "is_view", False) or name in NO_KERNEL_OPS else _kernels(name, args)
        phase = Phase.RECOMPUTE if self.phase is Phase.BACKWARD and recomputing() else self.phase
        moved = _bytes_moved(name, inputs, outputs) if kernels else 0
        self.trace.ops.append(
            OpCost(
                name,
                op_class(name, args),
                phase,
                flops,
                moved,
                _compute_dtype(inputs or outputs),
                kernels,
                _fresh_bytes(func, out) if kernels else 0,
                conv_shape(name, args, out) if kernels else None,
                pool_shape(name, args, out, moved) if kernels else None,
            )
        )
        return out


def _kernels(name: str, args: Sequence[object]) -> int:
    if not name.startswith("_foreach_"):
        return 1
    lists = [arg for arg in args if isinstance(arg, (list, tuple)) and arg and isinstance(arg[0], torch.Tensor)]
    if not lists:
        return 1
    per_kernel = FOREACH_TENSORS_PER_KERNEL[min(len(lists), len(FOREACH_TENSORS_PER_KERNEL)) - 1]
    return max(1, math.ceil(len(lists[0]) / per_kernel))


def _fresh_bytes(func: object, out: object) -> int:
    """The bytes of the largest output of aten op `func` that its schema says is a new tensor (a return without
    alias information: not an in-place op's, an out= variant's or a view's)."""
    returns: Sequence[torch.Argument] = getattr(getattr(func, "_schema", None), "returns", ())
    if len(returns) == 1:  # one Tensor or one Tensor[] (the foreach ops)
        pairs = [(returns[0], tensor) for tensor in op_tensors(out)]
    else:
        pairs = [(r, t) for r, t in zip(returns, out if isinstance(out, (tuple, list)) else (out,), strict=False)]
    return max((_nbytes(t) for r, t in pairs if isinstance(t, torch.Tensor) and r.alias_info is None), default=0)


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _bytes_moved(name: str, inputs: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor]) -> int:
    written = sum(_nbytes(t) for t in outputs)
    if name in ROW_READ_OPS and inputs:
        read = sum(_nbytes(t) for t in inputs[1:]) + written  # the rows gathered, the indices
    else:
        read = sum(_nbytes(t) for t in inputs)
    return read + written


def _compute_dtype(tensors: Sequence[torch.Tensor]) -> str:
    for tensor in tensors:
        if tensor.is_floating_point():
            return str(tensor.dtype).removeprefix("torch.")
    return "float32"


def phase_flops(ops: Iterable[OpCost], phase: Phase) -> int:
    return sum(op.flops for op in ops if op.phase is phase)


def matmul_threads(ops: Iterable[OpCost]) -> MatmulThreads:
    """Which threads of a step ran matrix products: the forward and the optimizer run on the caller's, the
    backward on autograd's device thread; fused-bias products use cuBLASLt."""
    on_autograd = (Phase.BACKWARD, Phase.RECOMPUTE)
    caller = {op.name for op in ops if op.op_class is OpClass.GEMM and op.phase not in on_autograd}
    autograd = {op.name for op in ops if op.op_class is OpClass.GEMM and op.phase in on_autograd}
    return MatmulThreads(
        forward=bool(caller),
        forward_lt=bool(caller & CUBLASLT_OPS),
        backward=bool(autograd),
        backward_lt=bool(autograd & CUBLASLT_OPS),
    )
