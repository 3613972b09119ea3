"""The op-class registry: each aten operation of a real training step gets the class whose efficiency prices it,
depthwise and grouped convolutions apart from dense ones."""

from __future__ import annotations

import torch
from torch import nn

from layerprof.measure.instruments import OP_CLASSES, OpClass, OpRecorder, Phase, op_class


class Block(nn.Module):
    """A depthwise-separable block with a norm, an activation, a channel concatenation and a softmax head."""

    def __init__(self) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.pointwise = nn.Conv2d(8, 8, 1, bias=False)
        self.norm = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.depthwise(x), self.pointwise(x)], 1)
        y = torch.relu(self.norm(y)).mean((2, 3))
        return torch.log_softmax(self.head(y), -1)


def test_a_training_step_classes_every_operation() -> None:
    model = Block()
    x = torch.randn(2, 8, 6, 6)
    with OpRecorder() as recorder:
        loss = torch.nn.functional.nll_loss(model(x), torch.tensor([1, 2]))
        recorder.phase = Phase.BACKWARD
        loss.backward()
    classes = {(o.name, o.phase.value): o.op_class for o in recorder.ops if o.kernels}
    convolutions = [o.op_class for o in recorder.ops if o.name in ("convolution", "convolution_backward")]
    assert convolutions == [OpClass.GROUPED_CONV, OpClass.CONV, OpClass.CONV, OpClass.GROUPED_CONV]
    assert classes[("cat", "forward")] is OpClass.MOVEMENT
    assert classes[("native_batch_norm", "forward")] is OpClass.NORM
    assert classes[("native_batch_norm_backward", "backward")] is OpClass.NORM
    assert classes[("relu", "forward")] is OpClass.ELEMENTWISE
    assert classes[("threshold_backward", "backward")] is OpClass.ELEMENTWISE
    assert classes[("mean", "forward")] is OpClass.REDUCTION
    assert classes[("_log_softmax", "forward")] is OpClass.REDUCTION
    assert classes[("addmm", "forward")] is OpClass.GEMM


def test_the_registry_names_each_op_once_and_falls_back_to_elementwise() -> None:
    assert OP_CLASSES["_softmax"] is OpClass.REDUCTION and OP_CLASSES["constant_pad_nd"] is OpClass.MOVEMENT
    assert op_class("some_new_pointwise_op") is OpClass.ELEMENTWISE
    assert op_class("_scaled_dot_product_flash_attention_for_cpu") is OpClass.ATTENTION
    groups_1 = (None,) * 8 + (1,)
    assert op_class("convolution", groups_1) is OpClass.CONV
    assert op_class("convolution", (None,) * 8 + (32,)) is OpClass.GROUPED_CONV
    assert op_class("convolution_backward", (None,) * 9 + (4,)) is OpClass.GROUPED_CONV
    assert [c.compute_bound for c in OpClass] == [True, True, True, True, False, False, False, False]
