"""Mixed precision as a training step runs it: autocast for the forward and the loss, a gradient scaler for
float16, and, for estimates of a CUDA run made on the CPU, CUDA's autocast rules applied to CPU tensors.

CPU and CUDA autocast cast different operations: CUDA runs layer_norm, softmax, the losses and pointwise
exp/log/pow in float32, the CPU keeps them in the lower precision. Fake tensors of an estimate dispatch to the
CPU (fake CUDA tensors cannot run a backward pass without a GPU), so `CudaAutocastRules` re-creates CUDA's
policy one level up, on the torch functions a model calls: the same casts, made by the same differentiable
`.to()`, with parameters' casts cached for the region as autocast caches them. Its lists are those of
PyTorch's autocast reference ("CUDA Ops that can autocast to float16 / float32").
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

from layerprof.precision import Precision


def _existing(*names: str) -> frozenset[Callable[..., object]]:
    """The torch callables with these dotted names that exist in this torch version."""
    found: list[Callable[..., object]] = []
    for name in names:
        owner: object = {"torch": torch, "F": F, "Tensor": torch.Tensor}[name.split(".")[0]]
        for part in name.split(".")[1:]:
            owner = getattr(owner, part, None)
        if callable(owner):  # None where this torch version lacks it
            found.append(owner)
    return frozenset(found)


# CUDA: run in the lower precision
CUDA_LOWER_PRECISION = _existing(
    "F.linear", "F.bilinear", "torch.matmul", "Tensor.matmul", "Tensor.__matmul__", "Tensor.__rmatmul__",
    "torch.mm", "Tensor.mm", "torch.bmm", "Tensor.bmm", "torch.addmm", "Tensor.addmm", "torch.baddbmm",
    "Tensor.baddbmm", "torch.addbmm", "Tensor.addbmm", "torch.mv", "Tensor.mv", "torch.addmv", "Tensor.addmv",
    "torch.addr", "Tensor.addr", "torch.chain_matmul", "torch.einsum", "F.conv1d", "F.conv2d", "F.conv3d",
    "F.conv_transpose1d", "F.conv_transpose2d", "F.conv_transpose3d", "F.prelu", "F.scaled_dot_product_attention",
)  # fmt: skip
# CUDA: run in float32
CUDA_FLOAT32 = _existing(
    "F.layer_norm", "torch.layer_norm", "F.group_norm", "torch.group_norm", "F.softmax", "torch.softmax",
    "Tensor.softmax", "F.log_softmax", "torch.log_softmax", "Tensor.log_softmax", "F.softmin", "F.cross_entropy",
    "F.nll_loss", "F.mse_loss", "F.l1_loss", "F.smooth_l1_loss", "F.huber_loss", "F.kl_div",
    "F.binary_cross_entropy_with_logits", "F.cosine_similarity", "F.normalize", "F.softplus", "torch.exp",
    "Tensor.exp", "torch.expm1", "torch.log", "Tensor.log", "torch.log1p", "Tensor.log1p", "torch.log2",
    "torch.log10", "torch.pow", "Tensor.pow", "Tensor.__pow__", "Tensor.__rpow__", "torch.rsqrt", "Tensor.rsqrt",
    "torch.reciprocal", "Tensor.reciprocal", "torch.sum", "Tensor.sum", "torch.prod", "Tensor.prod",
    "torch.cumsum", "Tensor.cumsum", "torch.cumprod", "Tensor.cumprod", "torch.norm", "Tensor.norm",
    "torch.dist", "torch.cdist", "torch.acos", "torch.asin", "torch.cosh", "torch.sinh", "torch.tan",
    "torch.erfinv", "Tensor.__rtruediv__", "Tensor.__rdiv__",
)  # fmt: skip


class CudaAutocastRules(TorchFunctionMode):
    """CUDA autocast's casts, applied to tensors of any device (the CPU fake tensors of an estimate)."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype
        self._cache: dict[int, torch.Tensor] = {}  # parameters' casts, kept for the region as autocast does

    def _cast(self, value: object, dtype: torch.dtype) -> object:
        if (
            not isinstance(value, torch.Tensor)
            or not value.is_floating_point()
            or value.dtype in (dtype, torch.float64)
        ):
            return value
        cacheable = dtype == self.dtype and value.dtype == torch.float32 and value.requires_grad and value.is_leaf
        if not cacheable:
            return value.to(dtype)
        key = id(value)
        if key not in self._cache:
            self._cache[key] = value.to(dtype)
        return self._cache[key]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        """Every torch call in the region: inputs cast to `dtype` for CUDA_LOWER_PRECISION ops, to float32 for
        CUDA_FLOAT32 ones (unless the call names its dtype), as CUDA autocast would."""
        kwargs = kwargs or {}
        if func in CUDA_LOWER_PRECISION:
            args, kwargs = tree_map(lambda v: self._cast(v, self.dtype), (args, kwargs))
        elif func in CUDA_FLOAT32 and kwargs.get("dtype") is None:  # an explicit dtype= makes an op ineligible
            args, kwargs = tree_map(lambda v: self._cast(v, torch.float32), (args, kwargs))
        return func(*args, **kwargs)

    def __exit__(self, *exc: object) -> None:
        """Drop the parameters' cached casts, so that the next region casts their updated values (as autocast)."""
        self._cache.clear()
        super().__exit__(*exc)


def autocast_for(
    precision: Precision, device_type: str, cuda_rules_on_cpu: bool = False
) -> AbstractContextManager[object]:
    """The region a mixed-precision step runs its forward and loss in; nothing for *-true precisions."""
    if not precision.mixed:
        return nullcontext()
    dtype = getattr(torch, precision.dtype)
    if cuda_rules_on_cpu:
        return CudaAutocastRules(dtype)
    return torch.autocast(device_type, dtype=dtype)


def gradient_scaler(precision: Precision, device_type: str) -> torch.amp.GradScaler | None:
    """A GradScaler for float16 mixed precision, as Lightning's `16-mixed` uses one."""
    if not precision.scaled:
        return None
    return torch.amp.GradScaler(device_type)
