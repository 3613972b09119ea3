"""Convolutions priced by their shape on a CPU, and the page cost among the calibrated constants (issue 37): the
geometry the recorder keeps for each convolution, ATen's choice of kernel, the curves' arithmetic by hand, and a
calibration that recovers a page cost it was not given."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from layerprof.measure.instruments import ConvKind, ConvShape, OpClass, OpCost, OpRecorder, Phase, StepTrace
from layerprof.measure.instruments import aten_native_conv as native
from layerprof.predict.timemodel import (
    CONV_TABLES,
    DEFAULT_CONSTANTS,
    FITTED,
    ConvTable,
    DevicePeaks,
    MeasuredStep,
    TimeConstants,
    TimeModel,
    calibrate,
    conv_shape_factor,
)
from layerprof.predict.timemodel import ConvPass as P

CPU = DevicePeaks("test cpu", "cpu", 1.0, 1.0, 1.0, 1.0, 50.0, "test")  # 1 TFLOP/s, 50 GB/s
GPU = DevicePeaks("test gpu", "cuda", 1.0, 1.0, 1.0, 1.0, 50.0, "test")
PLAIN = TimeConstants(0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, "test", grouped_conv_efficiency=0.25)
MIB = 2**20


@pytest.fixture
def one_thread():  # noqa: ANN201
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def convs(work) -> list[OpCost]:  # noqa: ANN001
    with OpRecorder() as recorder:
        work()
    return [op for op in recorder.ops if op.conv is not None]


def test_the_recorder_keeps_each_convolutions_geometry_forward_and_backward(one_thread: None) -> None:
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    w = torch.randn(6, 4, 3, 3, requires_grad=True)
    (forward, backward) = convs(lambda: torch.nn.functional.conv2d(x, w, padding=1).sum().backward())
    # 5x5 outputs per image and channel; 4 input channels x 9 taps of multiply-adds per output; oneDNN (batch 2)
    assert forward.conv == ConvShape(25, 36, 1, 4, False) and forward.conv.kind is ConvKind.DENSE
    assert (backward.name, backward.conv) == ("convolution_backward", ConvShape(25, 36, 1, 4, False, True, True))
    frozen_input = torch.randn(2, 4, 5, 5)  # the input needs no gradient (a first layer): the weight's alone
    (_, weight_only) = convs(lambda: torch.nn.functional.conv2d(frozen_input, w, padding=1).sum().backward())
    assert (weight_only.conv.input_grad, weight_only.conv.weight_grad) == (False, True)
    # stride 2 halves each side: 3x3 outputs; groups: 2 of 4 channels is grouped, 4 of 4 depthwise
    (strided,) = convs(lambda: torch.nn.functional.conv2d(x.detach(), w.detach(), padding=1, stride=2))
    assert strided.conv.out_pixels == 9
    (grouped,) = convs(lambda: torch.nn.functional.conv2d(x.detach(), torch.randn(4, 2, 3, 3), groups=2))
    (depthwise,) = convs(lambda: torch.nn.functional.conv2d(x.detach(), torch.randn(4, 1, 3, 3), groups=4))
    (wide,) = convs(lambda: torch.nn.functional.conv2d(x.detach(), torch.randn(4, 1, 5, 5), groups=4))
    assert (grouped.op_class, grouped.conv.kind, grouped.conv.per_output) == (
        OpClass.GROUPED_CONV,
        ConvKind.GROUPED,
        18,
    )
    assert (depthwise.conv.kind, depthwise.conv.per_output, depthwise.conv.out_pixels) == (ConvKind.DEPTHWISE, 9, 9)
    assert (wide.conv.kind, wide.conv.taps, wide.conv.out_pixels) == (ConvKind.WIDE_DEPTHWISE, 25, 1)
    (pointwise,) = convs(lambda: torch.nn.functional.conv2d(torch.randn(16, 4, 2, 2), torch.randn(8, 4, 1, 1)))
    assert (pointwise.conv.kind, pointwise.conv.taps, grouped.conv.taps) == (ConvKind.POINTWISE, 1, 9)
    assert convs(lambda: x.detach() @ x.detach()) == []  # no other op has a geometry


@pytest.mark.parametrize(
    ("batch", "stride", "threads", "kind"),
    [(8, 1, 1, ConvKind.NATIVE), (15, 1, 1, ConvKind.NATIVE), (16, 1, 1, ConvKind.POINTWISE),
     (8, 2, 1, ConvKind.POINTWISE), (8, 1, 2, ConvKind.POINTWISE)],
)  # fmt: skip
def test_a_pointwise_convolution_takes_atens_own_kernel_below_batch_16_on_one_thread(
    batch: int, stride: int, threads: int, kind: ConvKind
) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        (forward,) = convs(lambda: torch.nn.functional.conv2d(torch.randn(batch, 8, 4, 4), torch.randn(16, 8, 1, 1),
                                                              stride=stride))  # fmt: skip
    finally:
        torch.set_num_threads(before)
    assert forward.conv.kind is kind


def test_atens_rule_for_its_own_kernel_by_hand() -> None:
    # (batch, kernel, unit stride, groups, input elements, float32, transposed, threads)
    assert native(8, [1, 1], True, 1, 10**6, True, False, 1)  # pointwise, batch < 16, one thread
    assert not native(8, [1, 1], True, 1, 10**6, False, False, 1)  # bfloat16: oneDNN
    assert not native(8, [3, 3], True, 1, 10**6, True, False, 1)
    assert native(1, [3, 3], True, 1, 20480, True, False, 4)  # one small image, kernel at most 3x3
    assert not native(1, [3, 3], True, 1, 20481, True, False, 4)
    assert not native(1, [5, 5], True, 1, 100, True, False, 4)  # wider than 3 both ways
    assert not native(1, [3, 3], True, 2, 100, True, False, 4)  # grouped
    assert native(8, [3, 3], True, 1, 10**6, True, True, 4)  # transposed


def test_a_table_and_a_backwards_two_gradients_by_hand() -> None:
    table = ConvTable(((1, 0.1), (4, 0.3), (64, 0.9)))
    assert (table.at(1), table.at(4), table.at(64)) == (0.1, 0.3, 0.9)  # the points
    assert (table.at(0), table.at(4096)) == (0.1, 0.9)  # flat beyond them
    assert table.at(2) == pytest.approx(0.2)  # half-way in log(pixels) between 1 and 4
    assert table.at(16) == pytest.approx(0.6)  # log(16 / 4) is half of log(64 / 4)
    tables = {(ConvKind.DENSE, P.FORWARD): ConvTable(((1, 0.8),)),
              (ConvKind.DENSE, P.INPUT_GRAD): ConvTable(((1, 0.4),)),
              (ConvKind.DENSE, P.WEIGHT_GRAD): ConvTable(((1, 0.2),))}  # fmt: skip
    shape = ConvShape(4, 36, 1, 4, False)
    # shares of the peak over the class constant's default (0.8 here): the forward reaches the class constant
    assert conv_shape_factor(shape, tables, 0.8) == 1.0
    assert conv_shape_factor(replace(shape, input_grad=True), tables, 0.8) == 0.5
    # both gradients, each the forward's FLOPs F: F / 0.4 + F / 0.2 = 7.5F, for 2F: a share of 0.267 of the peak
    assert conv_shape_factor(replace(shape, input_grad=True, weight_grad=True), tables, 0.8) == pytest.approx(
        2 / (1 / 0.4 + 1 / 0.2) / 0.8
    )
    assert conv_shape_factor(replace(shape, weight_grad=True), {}, 0.8) == 1.0  # a device kind without tables


def conv_op(flops: int, shape: ConvShape | None, op_class: OpClass = OpClass.CONV) -> OpCost:
    return OpCost("convolution", op_class, Phase.FORWARD, flops, 0, "float32", 1, 0, shape)


def test_a_cpu_prices_a_convolution_by_its_table_and_a_gpu_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = DEFAULT_CONSTANTS["cpu"]
    tables = {(kind, p): ConvTable(((1, cpu.conv_efficiency / 4), (64, cpu.conv_efficiency))) for kind in ConvKind
              for p in P}  # fmt: skip
    tables[(ConvKind.DEPTHWISE, P.FORWARD)] = ConvTable(((1, cpu.grouped_conv_efficiency / 8),))
    monkeypatch.setitem(CONV_TABLES, "cpu", tables)
    small = StepTrace([conv_op(10**9, ConvShape(1, 36, 1, 4, False))])
    # 1e9 FLOPs at 1 TFLOP/s x conv_efficiency 0.5 x a quarter of the default (a 1x1 output): 8 ms; without a
    # geometry: 2 ms; on a GPU: 2 ms
    assert TimeModel(CPU, PLAIN).predict(small).device_ms == pytest.approx(8.0)
    assert TimeModel(CPU, PLAIN).predict(StepTrace([conv_op(10**9, None)])).device_ms == pytest.approx(2.0)
    assert TimeModel(GPU, PLAIN).predict(small).device_ms == pytest.approx(2.0)
    # depthwise: grouped_conv_efficiency 0.25 x an eighth: 1e9 / 0.03125e12 s = 32 ms
    depthwise = StepTrace([conv_op(10**9, ConvShape(4, 9, 4, 4, False), OpClass.GROUPED_CONV)])
    assert TimeModel(CPU, PLAIN).predict(depthwise).device_ms == pytest.approx(32.0)
    # a share above 1 (class constant x table / default) stops at the peak
    assert TimeModel(CPU, replace(PLAIN, conv_efficiency=1.0)).predict(
        StepTrace([conv_op(10**9, ConvShape(64, 36, 1, 4, False))])
    ).device_ms == pytest.approx(1000 / 1000)
    monkeypatch.setitem(CONV_TABLES, "cpu", {key: ConvTable(((1, 3.0),)) for key in tables})
    assert TimeModel(CPU, PLAIN).predict(small).device_ms == pytest.approx(1.0)


def test_the_cpu_tables_cover_every_kind_and_pass_and_gpus_have_none() -> None:
    """What the single-op sweep found (benchmarks/bench_conv_shapes.py): every kind and pass measured, and the
    smallest outputs run furthest from the peak."""
    assert CONV_TABLES["cuda"] == {}
    assert set(CONV_TABLES["cpu"]) == {(kind, p) for kind in ConvKind for p in P}
    for key, table in CONV_TABLES["cpu"].items():
        pixels = [p for p, _ in table.points]
        assert pixels == sorted(set(pixels)) and all(0 < share <= 1.2 for _, share in table.points), key
        assert table.at(1) < max(share for _, share in table.points), key


def page_steps(page_ms_per_mib: float) -> list[MeasuredStep]:
    """CPU cells with a product, an output of 32-256 MiB whose pages fault and in-place work of 0-1.5 GB, timed by
    a model whose pages cost `page_ms_per_mib`."""
    truth = TimeModel(CPU, replace(DEFAULT_CONSTANTS["cpu"], page_fault_ms_per_mib=page_ms_per_mib))
    steps = []
    for index in range(8):
        fresh = (32 + 32 * index) * MIB
        trace = StepTrace([
            OpCost("mm", OpClass.GEMM, Phase.FORWARD, 10**10 * (1 + index % 3), 10**6, "float32", 1),
            OpCost("sqrt", OpClass.ELEMENTWISE, Phase.FORWARD, 0, 2 * fresh, "float32", 1, fresh),
            OpCost("add_", OpClass.ELEMENTWISE, Phase.FORWARD, 0, 500 * MIB * (index % 4), "float32", 1),
        ])  # fmt: skip
        steps.append(MeasuredStep(f"pages b1 z={index + 1}", trace, truth.predict(trace).step_ms))
    return steps


def test_calibration_fits_the_page_cost_among_the_constants() -> None:
    """Pages that cost twice the default: the calibration finds it (before, the page cost was fixed and the fit
    bent the other constants to absorb it)."""
    assert FITTED[-1] == "page_fault_ms_per_mib" and len(FITTED) == 15
    fitted = calibrate(page_steps(1.32), CPU)
    assert fitted.constants.page_fault_ms_per_mib == pytest.approx(1.32, rel=0.05)
    assert max(abs(r["error"]) for r in fitted.residuals) < 0.01
    # the default page cost is calibrated from, and a GPU's (none) stays none
    assert calibrate(page_steps(0.66), CPU).constants.page_fault_ms_per_mib == pytest.approx(0.66, rel=0.02)
    assert DEFAULT_CONSTANTS["cuda"].page_fault_ms_per_mib == 0.0
