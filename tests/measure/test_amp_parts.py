"""amp.py part by part (issue 40's mutation survivors): a CUDA float32 op that names its dtype is left uncast."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from layerprof.measure.amp import CudaAutocastRules


class Casts(TorchFunctionMode):
    """Below the rules: records the dtypes every `Tensor.to` the rules call casts to."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: list[torch.dtype] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's protocol
        kwargs = kwargs or {}
        if func is torch.Tensor.to:
            self.dtypes.append(next(a for a in (*args[1:], *kwargs.values()) if isinstance(a, torch.dtype)))
        return func(*args, **kwargs)


def test_a_float32_op_that_names_its_dtype_is_not_cast_first() -> None:
    hidden = torch.randn(4, 8, dtype=torch.bfloat16)
    with Casts() as casts, CudaAutocastRules(torch.bfloat16):
        assert F.softmax(hidden, -1, dtype=torch.bfloat16).dtype == torch.bfloat16
        assert casts.dtypes == []  # no float32 copy of the input (an estimate would count its memory)
        assert F.softmax(hidden, -1).dtype == torch.float32
        assert casts.dtypes == [torch.float32]
