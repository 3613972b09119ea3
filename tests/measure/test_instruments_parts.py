"""measure/instruments.py part by part (issue 40's mutation survivors): a convolution's and a max pooling's shape
record worked out by hand from the arguments aten passes, the CPU kernel each convolution takes, and the op class of
each kind of operation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from layerprof.measure.instruments import (
    FREED,
    RECATEGORISED,
    ConvKind,
    ConvShape,
    LiveTensorTracker,
    OpClass,
    PoolShape,
    StepTimes,
    _attention_backward_flops,
    _convolution_backward_flops,
    _ints,
    _kernels,
    aten_native_conv,
    conv_shape,
    fake_device_query,
    fake_in_place_foreach,
    in_place_foreach,
    op_class,
    pool_shape,
)
from layerprof.profile import MemoryCategory


@pytest.fixture
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- convolutions


def forward_args(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
    transposed: bool = False,
    groups: int = 1,
) -> tuple[object, ...]:
    """aten.convolution's arguments: input, weight, bias, stride, padding, dilation, transposed, output_padding,
    groups."""
    return (x, weight, None, list(stride), [1, 1], list(dilation), transposed, [0, 0], groups)


def test_a_strided_dilated_convolutions_shape_by_hand(one_thread: None) -> None:
    # one 2x7x7 image, four 3x3 filters at stride 2, padding 1, dilation 2: the kernel spans 5, so each side has
    # (7 + 2 - 5) // 2 + 1 = 3 outputs: 9 per channel; each output takes 2 channels x 9 taps = 18 multiply-adds
    x, weight = torch.randn(1, 2, 7, 7), torch.randn(4, 2, 3, 3)
    args = forward_args(x, weight, stride=(2, 2), dilation=(2, 2))
    out = torch.ops.aten.convolution(*args)
    assert out.shape == (1, 4, 3, 3)
    # one image of 98 elements under a 3x3 kernel: ATen's own kernel, whatever the stride
    assert conv_shape("convolution", args, out) == ConvShape(9, 18, 1, 2, True, strided=True)
    # a rectangular output (6 x 2) on a wider input: H_out x W_out, not the channels
    wide_out = torch.empty(1, 4, 6, 2)
    assert conv_shape("_convolution", forward_args(x, weight), wide_out).out_pixels == 12
    # stride 1 in height, 2 in width is strided; dilation 2 alone is not (though ATen's rule counts it)
    assert conv_shape("convolution", forward_args(x, weight, stride=(1, 2)), out).strided is True
    assert conv_shape("convolution", forward_args(x, weight, dilation=(2, 2)), out).strided is False


def test_a_convolutions_groups_and_input_channels_come_from_their_own_arguments() -> None:
    # two images of 6 channels, 3 groups: each output reads 2 channels x a 1x2 kernel (taps 2); groups from args[8]
    x, weight = torch.randn(2, 6, 5, 5), torch.randn(9, 2, 1, 2)
    out = torch.empty(2, 9, 5, 4)
    shape = conv_shape("convolution", forward_args(x, weight, groups=3), out)
    assert shape == ConvShape(20, 4, 3, 6, False)
    assert (shape.taps, shape.kind) == (2, ConvKind.GROUPED)
    # without a groups argument (or one that is no int): one group
    assert conv_shape("convolution", forward_args(x, weight)[:8], out).groups == 1
    assert conv_shape("convolution", (*forward_args(x, weight)[:8], None), out).groups == 1
    # arguments cut before `transposed`: not transposed, one group, unit stride read from what there is
    assert conv_shape("convolution", forward_args(x, weight)[:6], out) == ConvShape(20, 4, 1, 6, False)


def test_a_transposed_convolutions_work_per_output_is_its_input_channels_per_group() -> None:
    # a transposed weight is (C_in, C_out / groups, k_h, k_w): 6 inputs in 2 groups, 4 outputs each, 3x5 kernel;
    # each output element takes 6 / 2 = 3 input channels x 15 taps = 45; ATen's own kernel (transposed)
    x, weight = torch.randn(16, 6, 4, 4), torch.randn(6, 4, 3, 5)
    out = torch.empty(16, 8, 6, 8)
    shape = conv_shape("convolution", forward_args(x, weight, transposed=True, groups=2), out)
    assert shape == ConvShape(48, 45, 2, 6, True)
    assert type(shape.per_output) is int


def backward_args(mask: object) -> tuple[object, ...]:
    """aten.convolution_backward's: grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
    output_padding, groups, output_mask; the forward ran at stride 2 (a 4x4 output from an 8x8 input)."""
    grad, x, weight = torch.randn(2, 5, 4, 4), torch.randn(2, 3, 8, 8), torch.randn(5, 3, 2, 2)
    return (grad, x, weight, [5], [2, 2], [0, 0], [1, 1], False, [0, 0], 1, mask)


def test_a_convolutions_backward_reads_its_forwards_output_and_the_gradients_asked_for() -> None:
    # outputs per channel from the gradient of the output (4x4), not the input (8x8); 3 channels x 4 taps
    assert conv_shape("convolution_backward", backward_args([True, True, False]), None) == ConvShape(
        16, 12, 1, 3, False, True, True, True
    )
    shapes = {
        str(mask): conv_shape("convolution_backward", backward_args(mask), None)
        for mask in ([False, True, True], [True, False, True], [True], [False, True], ())
    }
    grads = {mask: (shape.input_grad, shape.weight_grad) for mask, shape in shapes.items()}
    assert grads == {
        "[False, True, True]": (False, True),
        "[True, False, True]": (True, False),
        "[True]": (True, False),
        "[False, True]": (False, True),
        "()": (False, False),
    }
    # the mask cut off: neither gradient
    cut = backward_args(None)[:10]
    assert conv_shape("convolution_backward", cut, None) == ConvShape(16, 12, 1, 3, False, strided=True)


def test_a_convolution_without_tensors_where_the_schema_has_them_has_no_shape() -> None:
    x, weight = torch.randn(1, 2, 4, 4), torch.randn(2, 2, 1, 1)
    out = torch.empty(1, 2, 4, 4)
    assert conv_shape("convolution", forward_args(x, weight), None) is None  # no output
    assert conv_shape("convolution", (None, *forward_args(x, weight)[1:]), out) is None
    assert conv_shape("convolution", (x, None, *forward_args(x, weight)[2:]), out) is None
    assert conv_shape("mm", (x, weight), out) is None


def test_a_pointwise_convolution_is_atens_own_only_at_unit_stride_and_dilation(one_thread: None) -> None:
    x, weight = torch.randn(8, 4, 4, 4), torch.randn(4, 4, 1, 1)
    out = torch.empty(8, 4, 4, 4)
    natives = [
        conv_shape("convolution", forward_args(x, weight, stride, dilation), out).native
        for stride, dilation in (((1, 1), (1, 1)), ((1, 2), (1, 1)), ((1, 1), (2, 1)))
    ]
    assert natives == [True, False, False]
    assert conv_shape("convolution", forward_args(x.double(), weight.double()), out).native is False


def test_atens_own_kernel_for_1d_and_3d_convolutions_as_aten_views_them(one_thread: None) -> None:
    """ATen views a 1-d convolution as 2-d (kernel 1 x k) and reads a kernel's last two sizes and an input's first
    four (`ConvParams::use_mkldnn`); torch 2.14's profiler shows each case's kernel (thnn_conv2d, slow_conv3d). A
    bug found here: a 1-d pointwise and a 3-d k x 1 x 1 convolution were recorded as oneDNN's, and so was a 3-d
    convolution of one image whose width alone took it past 20,480 input elements."""

    def native(x: torch.Tensor, weight: torch.Tensor) -> bool:
        dims = x.dim() - 2
        args = (x, weight, None, [1] * dims, [0] * dims, [1] * dims, False, [0] * dims, 1)
        return conv_shape("convolution", args, torch.empty(x.shape[0], weight.shape[0], *x.shape[2:])).native

    assert native(torch.empty(8, 4, 16), torch.empty(4, 4, 1))  # thnn_conv2d
    assert native(torch.empty(8, 4, 4, 4, 4), torch.empty(4, 4, 3, 1, 1))  # slow_conv3d
    assert not native(torch.empty(8, 4, 4, 4, 4), torch.empty(4, 4, 3, 3, 3))  # mkldnn_convolution
    # 1 x 4 x 8 x 8 = 256 of ATen's elements (256,000 in all): slow_conv3d
    assert native(torch.empty(1, 4, 8, 8, 1000), torch.empty(4, 4, 3, 3, 3))
    # a 2-d one counts all four: 1 x 4 x 64 x 80 = 20,480 runs ATen's own kernel, one column more oneDNN's
    assert native(torch.empty(1, 4, 64, 80), torch.empty(4, 4, 3, 3))
    assert not native(torch.empty(1, 4, 64, 81), torch.empty(4, 4, 3, 3))
    assert aten_native_conv(8, [1], True, 1, 10**6, True, False, 1)
    assert not aten_native_conv(8, [3], True, 1, 10**6, True, False, 1)


def test_atens_rule_for_its_own_kernel_at_each_edge() -> None:
    # (batch, kernel, unit stride, groups, input elements, float32, transposed, threads)
    assert not aten_native_conv(8, [1, 3], True, 1, 10**6, True, False, 1)  # 1x3 is no pointwise kernel
    assert not aten_native_conv(8, [1, 1], False, 1, 10**6, True, False, 1)  # strided pointwise: oneDNN
    assert aten_native_conv(1, [5], True, 1, 100, True, False, 4)  # a 1-d kernel of 5 is not wide both ways
    assert aten_native_conv(1, [5, 3], True, 1, 100, True, False, 4)  # wide one way only
    assert not aten_native_conv(1, [4, 4], True, 1, 100, True, False, 4)  # wider than 3 both ways
    assert not aten_native_conv(1, [1, 5, 5], True, 1, 100, True, False, 4)  # the last two of a 3-d kernel
    assert not aten_native_conv(2, [3, 3], True, 1, 100, True, False, 4)  # two small images: oneDNN
    assert aten_native_conv(8, [3, 3], False, 1, 10**6, True, True, 4)  # transposed, strided
    assert aten_native_conv(15, [1, 1], True, 1, 10**6, True, False, 1)
    assert not aten_native_conv(16, [1, 1], True, 1, 10**6, True, False, 1)


@pytest.mark.parametrize(
    ("shape", "taps", "kind"),
    [
        (ConvShape(16, 9, 1, 1, False), 9, ConvKind.DENSE),  # one input channel, one group: not depthwise
        (ConvShape(16, 1, 1, 1, False), 1, ConvKind.POINTWISE),
        (ConvShape(16, 4, 1, 4, False), 1, ConvKind.POINTWISE),
        (ConvShape(16, 8, 1, 4, False), 2, ConvKind.DENSE),
        (ConvShape(16, 9, 1, 1, True), 9, ConvKind.NATIVE),
        (ConvShape(16, 9, 2, 2, False), 9, ConvKind.DEPTHWISE),  # two channels, two groups
        (ConvShape(16, 10, 4, 4, False), 10, ConvKind.WIDE_DEPTHWISE),  # a 2x5 kernel
        (ConvShape(16, 18, 2, 4, False), 9, ConvKind.GROUPED),  # two groups of two channels
        (ConvShape(16, 18, 2, 4, True), 9, ConvKind.GROUPED),
    ],
)
def test_a_convolutions_kind_and_taps_by_hand(shape: ConvShape, taps: int, kind: ConvKind) -> None:
    assert (shape.taps, shape.kind) == (taps, kind)
    assert type(shape.taps) is int


# ---------------------------------------------------------------- max pooling


def test_a_max_pooling_window_and_its_bytes_per_output_by_hand() -> None:
    x = torch.randn(1, 2, 5, 5)
    # 3x2 windows at stride 2 on 5x5: 2 x 2 outputs per channel, 8 in all; 240 bytes moved: 30 per output
    values, indices = torch.ops.aten.max_pool2d_with_indices(x, [3, 2], [2, 2])
    assert values.shape == (1, 2, 2, 2)
    forward = pool_shape("max_pool2d_with_indices", (x, [3, 2], [2, 2]), (values, indices), 240)
    assert forward == PoolShape(6, 30.0) and forward.work(480) == 96.0
    assert pool_shape("max_pool2d_with_indices", (x, [3], [2, 2]), [values, indices], 240) == PoolShape(9, 30.0)
    # the backward: one addition per output of the forward (its gradient, args[0]), whatever the window
    backward = pool_shape("max_pool2d_with_indices_backward", (values, x, [3, 2], [2, 2]), x, 80)
    assert backward == PoolShape(1, 10.0, True) and backward.work(80) == 8.0


def test_a_max_pooling_without_a_window_output_or_bytes_has_no_shape() -> None:
    x = torch.randn(1, 2, 5, 5)
    values = torch.empty(1, 2, 2, 2)
    assert pool_shape("max_pool2d_with_indices", (x,), (values,), 240) is None  # no window
    assert pool_shape("max_pool2d_with_indices", (x, []), (values,), 240) is None
    assert pool_shape("max_pool2d_with_indices", (x, [3, 3]), None, 240) is None  # no output
    assert pool_shape("max_pool2d_with_indices", (x, [3, 3]), (), 240) is None
    assert pool_shape("max_pool2d_with_indices", (x, [3, 3]), values, 240) is None  # not (values, indices)
    assert pool_shape("max_pool2d_with_indices", (x, [3, 3]), (torch.empty(1, 2, 0, 0),), 240) is None
    assert pool_shape("max_pool2d_with_indices", (x, [3, 3]), (values,), 0) is None
    assert pool_shape("max_pool2d_with_indices_backward", (values, x), x, 80) is None  # no window
    assert pool_shape("max_pool2d_with_indices_backward", ([3, 3], x, [3, 3]), x, 80) is None


def test_a_channels_last_max_pooling_forward_is_priced_by_its_bytes_and_its_backward_is_not() -> None:
    x = torch.randn(2, 3, 4, 4).to(memory_format=torch.channels_last)
    values = torch.empty(2, 3, 2, 2)
    assert pool_shape("max_pool2d_with_indices", (x, [2, 2]), (values,), 96) is None
    grad = values.to(memory_format=torch.channels_last)
    assert pool_shape("max_pool2d_with_indices_backward", (grad, x, [2, 2]), x, 96) == PoolShape(1, 4.0, True)
    # one channel: contiguous both ways, the element-at-a-time kernel; a 3-d input's strides are never channels-last
    one_channel = torch.randn(2, 1, 4, 4)
    assert one_channel.is_contiguous(memory_format=torch.channels_last)
    assert pool_shape("max_pool2d_with_indices", (one_channel, [2, 2]), (values,), 96) == PoolShape(4, 4.0)
    unbatched = torch.randn(4, 4, 3).permute(2, 0, 1)
    assert pool_shape("max_pool2d_with_indices", (unbatched, [2, 2]), (values,), 96) == PoolShape(4, 4.0)


def test_ints_reads_a_list_argument_where_there_is_one() -> None:
    args = (None, [2, 3], 4)
    assert (_ints(args, 1), _ints(args, 2), _ints(args, 3), _ints(args, None)) == ([2, 3], [], [], [])


# ---------------------------------------------------------------- op classes


@pytest.mark.parametrize(
    ("name", "op_class_"),
    [
        ("scaled_dot_product_attention", OpClass.ATTENTION),
        ("_flash_attention_forward", OpClass.ATTENTION),
        ("_efficient_attention_backward", OpClass.ATTENTION),
        ("mm", OpClass.GEMM),
        ("cudnn_convolution", OpClass.CONV),
        ("native_layer_norm", OpClass.NORM),
        ("max_pool2d_with_indices", OpClass.REDUCTION),
        ("embedding", OpClass.MOVEMENT),
        ("gelu", OpClass.ELEMENTWISE),
    ],
)
def test_the_op_class_of_each_kind_of_op(name: str, op_class_: OpClass) -> None:
    assert op_class(name) is op_class_


def test_a_convolution_is_grouped_from_two_groups_and_dense_without_a_groups_argument() -> None:
    assert op_class("convolution", (None,) * 8 + (2,)) is OpClass.GROUPED_CONV
    assert op_class("cudnn_convolution", (None,) * 5 + (2,)) is OpClass.GROUPED_CONV
    assert op_class("convolution") is OpClass.CONV
    assert op_class("convolution", (None,) * 8) is OpClass.CONV
    assert op_class("convolution", (None,) * 9) is OpClass.CONV  # groups that are no int


# ---------------------------------------------------------------- FLOPs


def test_a_convolutions_backward_costs_its_forward_per_gradient_asked_for() -> None:
    # the forward of 2 images, 3 -> 5 channels, 2x2 kernel, 4x4 outputs: 2 x (2 x 5 x 16 outputs) x (3 x 4) = 3840
    shapes = ((2, 5, 4, 4), (2, 3, 8, 8), (5, 3, 2, 2), [5], [2, 2], [0, 0], [1, 1], False, [0, 0], 1)
    flops = [
        _convolution_backward_flops(*shapes, mask)
        for mask in ([True, False, False], [False, True, False], [True, True, True], [False, False, True])
    ]
    assert flops == [3840, 3840, 7680, 0]  # the bias's gradient (a sum) counts nothing


def test_attentions_backward_is_twice_its_forwards_products() -> None:
    # one batch, two heads, 4 tokens of 8: Q @ K^T and P @ V are 2 x 2 x (4 x 4 x 8) multiply-adds: 1024 FLOPs
    query = (1, 2, 4, 8)
    assert _attention_backward_flops(query, query, query, query) == 2048


# ---------------------------------------------------------------- time and memory


def test_step_times_extend_both_lists() -> None:
    times = StepTimes([1.0], [0.5])
    times.extend(StepTimes([2.0, 3.0], [0.7]))
    assert (times.step_ms, times.host_ms) == ([1.0, 2.0, 3.0], [0.5, 0.7])


def test_the_trackers_log_of_allocations_changes_and_frees_by_hand() -> None:
    tracker = LiveTensorTracker(allocation_size=lambda n: 2 * n)  # an allocator doubling every request
    tracker.log = []
    first = tracker.allocate_virtual(100, MemoryCategory.ACTIVATIONS)
    second = tracker.allocate_virtual(40, MemoryCategory.INPUTS)
    assert (first, second) == (-1, -2)  # negative keys: no storage's
    gradient = torch.ones(5)  # 20 bytes, never registered: tracked when its category changes
    tracker._recategorise(gradient, MemoryCategory.GRADIENTS)
    key = id(gradient.untyped_storage())
    assert tracker.live[MemoryCategory.GRADIENTS] == 40 and key in tracker._refs
    tracker._recategorise(gradient, MemoryCategory.ACTIVATIONS)  # moves its 40 bytes
    tracker._release(first)
    assert tracker.live[MemoryCategory.ACTIVATIONS] == 40 and tracker.current == 120 and tracker.peak == 320
    del gradient  # its storage freed: the weak reference releases it
    assert (tracker.current, tracker._refs) == (80, {})
    assert tracker.log == [
        (-1, 100, MemoryCategory.ACTIVATIONS),
        (-2, 40, MemoryCategory.INPUTS),
        (key, 20, MemoryCategory.GRADIENTS),
        (key, RECATEGORISED, MemoryCategory.ACTIVATIONS),
        (-1, FREED, None),
        (key, FREED, None),
    ]


def test_the_tracker_answers_a_fake_tensors_device_and_drops_its_hooks_on_exit() -> None:
    parameter = torch.nn.Parameter(torch.ones(3))
    tracker = LiveTensorTracker()
    tracker.watch_gradients([parameter, torch.nn.Parameter(torch.ones(2), requires_grad=False)])
    assert len(tracker._hooks) == 1  # a frozen parameter has no gradient to watch
    with FakeTensorMode():
        fake = torch.empty(2)
        with tracker:
            assert torch.ops.prim.device.default(fake) == torch.device("cpu")
    assert tracker._hooks == [] and tracker.peak == 0


def test_which_operations_a_fake_step_answers_without_running_them() -> None:
    with FakeTensorMode():
        fake, other = torch.empty(2), torch.empty(3)
    real = torch.ones(2)
    assert fake_device_query((fake,)) and not fake_device_query((real,))
    assert not fake_device_query(()) and not fake_device_query((fake, other))
    aten = torch.ops.aten
    assert [in_place_foreach(op) for op in (aten._foreach_add_.List, aten._foreach_add.List, aten.add_.Tensor)] == [
        True,
        False,
        False,
    ]
    assert fake_in_place_foreach(([fake, other],), None)
    assert fake_in_place_foreach((), {"self": [fake, other]})  # tensors passed by name count too
    assert not fake_in_place_foreach(([fake, real],), None)  # one real tensor: it runs
    assert not fake_in_place_foreach(([], 2.0), None)


def test_a_foreach_op_without_tensor_lists_launches_one_kernel() -> None:
    assert _kernels("_foreach_mul_", ([], 2.0)) == 1
    assert _kernels("_foreach_mul_", ([torch.ones(1)] * 111, 2.0)) == 2  # 110 tensors per kernel with one list
