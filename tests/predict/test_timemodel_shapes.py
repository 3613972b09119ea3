"""Max pooling priced by its work and strided convolutions by their factor on a CPU, and the CPU's defaults read
from the single-op sweep's output (issue 37, fourth pass): the work and stride the recorder keeps, their prices by
hand, a GPU's unchanged, and the convolution tables, pooling shares and strided factors as data (`cpu_shapes.json`,
written by benchmarks/bench_conv_shapes.py --write)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from layerprof.measure.instruments import (
    ConvKind,
    ConvShape,
    OpClass,
    OpCost,
    OpRecorder,
    Phase,
    PoolShape,
    StepTrace,
    pool_shape,
)
from layerprof.predict.timemodel import (
    CPU_SHAPES,
    CPU_SHAPES_FILE,
    DEFAULT_CONSTANTS,
    POOL_SHARES,
    STRIDED_FACTORS,
    ConvTable,
    CpuShapes,
    DevicePeaks,
    TimeModel,
    conv_shape_factor,
    faulted_bytes,
    optimizer_fault_bytes,
    pool_shape_factor,
)
from layerprof.predict.timemodel import ConvPass as P

CPU = DevicePeaks("test cpu", "cpu", 1.0, 1.0, 1.0, 1.0, 50.0, "test")  # 1 TFLOP/s, 50 GB/s, no cache levels
GPU = DevicePeaks("test gpu", "cuda", 1.0, 1.0, 1.0, 1.0, 50.0, "test")


def pools(work) -> list[OpCost]:  # noqa: ANN001
    with OpRecorder() as recorder:
        work()
    return [op for op in recorder.ops if op.pool is not None]


@pytest.mark.parametrize("kernel", [3, (3, 3)])
def test_the_recorder_keeps_each_max_poolings_work_forward_and_backward(kernel: int | tuple[int, int]) -> None:
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    forward, backward = pools(lambda: torch.nn.functional.max_pool2d(x, kernel, 2, 1).sum().backward())
    # 2 images x 3 channels x 4x4 outputs = 96; the forward reads the input (384 floats: 1536 bytes) and writes the
    # values (384 bytes) and int64 indices (768 bytes): 2688 bytes, 28 per output; each output visits 3x3 positions
    assert (forward.name, forward.op_class, forward.bytes_moved) == ("max_pool2d_with_indices", OpClass.REDUCTION, 2688)
    assert forward.pool == PoolShape(9, 28.0) and forward.pool.work(forward.bytes_moved) == 96 * 9
    # the backward reads the outputs' gradient (384), the input (1536), the indices (768), writes the input's
    # gradient (1536): 4224 bytes, 44 per output; one addition per output
    assert (backward.name, backward.bytes_moved) == ("max_pool2d_with_indices_backward", 4224)
    assert backward.pool == PoolShape(1, 44.0, backward=True) and backward.pool.work(backward.bytes_moved) == 96
    # the work follows the bytes (a trace scaled between two batch sizes scales both)
    assert forward.pool.work(2 * 2688) == 2 * 96 * 9
    assert pools(lambda: torch.nn.functional.avg_pool2d(x.detach(), 2)) == []  # max pooling only
    (two_by_two,) = pools(lambda: torch.nn.functional.max_pool2d(x.detach(), 2))
    assert two_by_two.pool.taps == 4


def pool_op(taps: int, outputs: int, bytes_per_output: float, backward: bool = False) -> OpCost:
    name = "max_pool2d_with_indices_backward" if backward else "max_pool2d_with_indices"
    phase = Phase.BACKWARD if backward else Phase.FORWARD
    nbytes = round(outputs * bytes_per_output)
    return OpCost(name, OpClass.REDUCTION, phase, 0, nbytes, "float32", 1, 0, None,
                  PoolShape(taps, bytes_per_output, backward))  # fmt: skip


def test_a_cpu_prices_max_pooling_by_its_work_and_a_gpu_by_its_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(POOL_SHARES, "cpu", {P.FORWARD: 0.001, P.INPUT_GRAD: 0.004})
    cpu = DEFAULT_CONSTANTS["cpu"]
    forward = StepTrace([pool_op(9, 10**6, 4.0)])  # 9e6 window visits, 4 MB moved
    # 9e6 visits at 1 TFLOP/s x 0.001 (the default reduction_efficiency scales the share by itself: x 1): 9 ms;
    # its bytes at the reductions' rate, 4e6 / (50e9 x 0.35): 0.23 ms, the smaller; no per-kernel cost on a CPU
    assert TimeModel(CPU, cpu).predict(forward).device_ms == pytest.approx(9.0)
    # the backward: 1e6 additions at 0.004 of the peak: 0.25 ms; here its bytes (20 MB / 17.5 GB/s: 1.14 ms) bound it
    assert TimeModel(CPU, cpu).predict(StepTrace([pool_op(1, 10**6, 20.0, True)])).device_ms == pytest.approx(
        20e6 / 17.5e9 * 1e3
    )
    assert TimeModel(CPU, cpu).predict(StepTrace([pool_op(1, 10**6, 4.0, True)])).device_ms == pytest.approx(0.25)
    # the reductions' constant scales pooling (a calibration moves it with its class): twice it, half the time
    assert TimeModel(CPU, replace(cpu, reduction_efficiency=0.7)).predict(forward).device_ms == pytest.approx(4.5)
    # a GPU prices it by its bytes as before: 4e6 / (50e9 x 0.7) s + 4 us per kernel
    gpu = DEFAULT_CONSTANTS["cuda"]
    assert TimeModel(GPU, gpu).predict(forward).device_ms == pytest.approx(4e6 / 35e9 * 1e3 + 0.004)
    # a CPU without pooling shares prices it by its bytes too: 4e6 / 17.5e9 s
    monkeypatch.setitem(POOL_SHARES, "cpu", {})
    assert TimeModel(CPU, cpu).predict(forward).device_ms == pytest.approx(4e6 / 17.5e9 * 1e3)


def test_pool_shape_factor_by_hand() -> None:
    shares = {P.FORWARD: 0.0035, P.INPUT_GRAD: 0.007}
    assert pool_shape_factor(PoolShape(9, 28.0), shares, 0.35) == pytest.approx(0.01)
    assert pool_shape_factor(PoolShape(1, 44.0, True), shares, 0.35) == pytest.approx(0.02)


def test_the_cpus_defaults_are_the_sweeps_committed_output() -> None:
    """cpu_shapes.json (bench_conv_shapes.py --write) covers every kind and pass and both pooling passes; the class
    constants' defaults are its best forward medians, so a re-run of the sweep is a change of data alone."""
    data = json.loads(CPU_SHAPES_FILE.read_text())
    assert set(data) == {"source", "conv_tables", "pool_shares", "strided_factors"}
    assert set(CPU_SHAPES.conv_tables) == {(kind, p) for kind in ConvKind for p in P}
    assert set(CPU_SHAPES.pool_shares) == {P.FORWARD, P.INPUT_GRAD}
    dense = max(share for _, share in data["conv_tables"]["dense/forward"])
    depthwise = max(share for _, share in data["conv_tables"]["depthwise/forward"])
    cpu = DEFAULT_CONSTANTS["cpu"]
    assert (cpu.conv_efficiency, cpu.grouped_conv_efficiency) == (round(dense, 2), round(depthwise, 2))
    # max pooling runs far below the peak on a CPU (one element at a time), and has no shares on a GPU
    assert all(0 < share < 0.05 for share in CPU_SHAPES.pool_shares.values())
    assert POOL_SHARES["cuda"] == {}
    # strided convolutions run below the unit-stride table at their output size, in every pass; GPUs: no factor
    assert set(CPU_SHAPES.strided_factors) == set(P) and all(0.3 < f < 1 for f in CPU_SHAPES.strided_factors.values())
    assert (STRIDED_FACTORS["cpu"], STRIDED_FACTORS["cuda"]) == (CPU_SHAPES.strided_factors, {})


def test_cpu_shapes_read_from_a_file_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "shapes.json"
    tables = {f"{kind.value}/{p.value}": [[1, 0.1], [16, 0.456]] for kind in ConvKind for p in P}
    tables["dense/forward"] = [[1, 0.2], [64, 0.874]]
    path.write_text(json.dumps({"source": "a test", "conv_tables": tables,
                                "pool_shares": {"forward": 0.003, "input_grad": 0.006},
                                "strided_factors": {"forward": 0.5}}))  # fmt: skip
    shapes = CpuShapes.read(path)
    assert shapes.conv_tables[(ConvKind.DENSE, P.FORWARD)].at(8) == pytest.approx(0.2 + 0.674 / 2)  # log-midpoint
    assert (shapes.conv_efficiency, shapes.grouped_conv_efficiency) == (0.87, 0.46)  # rounded as the sweep prints
    assert shapes.pool_shares == {P.FORWARD: 0.003, P.INPUT_GRAD: 0.006} and shapes.source == "a test"
    assert shapes.strided_factors == {P.FORWARD: 0.5}


def test_the_recorder_marks_strided_convolutions() -> None:
    x = torch.randn(2, 4, 8, 8)
    with OpRecorder() as recorder:
        torch.nn.functional.conv2d(x, torch.randn(6, 4, 3, 3), padding=1)
        torch.nn.functional.conv2d(x, torch.randn(6, 4, 2, 2), stride=2)  # ConvNeXt's downsampling
        torch.nn.functional.conv2d(x, torch.randn(6, 4, 3, 3), padding=2, dilation=2)  # dilated, unit stride
        torch.nn.functional.conv2d(x, torch.randn(6, 4, 3, 3), stride=(1, 2))  # strided along one side only
    assert [op.conv.strided for op in recorder.ops if op.conv] == [False, True, False, True]
    strided = [op.conv for op in recorder.ops if op.conv and op.conv.strided][0]
    assert (strided.out_pixels, strided.per_output, strided.kind) == (16, 16, ConvKind.DENSE)


def test_a_strided_convolution_takes_its_passs_factor_by_hand() -> None:
    tables = {(ConvKind.DENSE, P.FORWARD): ConvTable(((1, 0.8),)),
              (ConvKind.DENSE, P.INPUT_GRAD): ConvTable(((1, 0.4),)),
              (ConvKind.DENSE, P.WEIGHT_GRAD): ConvTable(((1, 0.2),))}  # fmt: skip
    factors = {P.FORWARD: 0.5, P.INPUT_GRAD: 0.25, P.WEIGHT_GRAD: 1.0}
    unit = ConvShape(4, 36, 1, 4, False)
    strided = replace(unit, strided=True)
    # shares over the class default 0.8: the forward 0.8 x 0.5 / 0.8; unit stride: no factor; no factors: none
    assert conv_shape_factor(strided, tables, 0.8, factors) == pytest.approx(0.5)
    assert conv_shape_factor(unit, tables, 0.8, factors) == 1.0
    assert conv_shape_factor(strided, tables, 0.8) == 1.0
    # both gradients: 0.4 x 0.25 = 0.1 and 0.2 x 1: F / 0.1 + F / 0.2 = 15F for 2F, a share of 0.133
    both = replace(strided, input_grad=True, weight_grad=True)
    assert conv_shape_factor(both, tables, 0.8, factors) == pytest.approx(2 / (1 / 0.1 + 1 / 0.2) / 0.8)
    # in a prediction on a CPU (the committed factors) and not on a GPU: a strided forward of 1e9 FLOPs at
    # 1 TFLOP/s takes 1 / (table share x factor) ms on the CPU, 1 / conv_efficiency ms on the GPU
    op = OpCost("convolution", OpClass.CONV, Phase.FORWARD, 10**9, 0, "float32", 1, 0, replace(strided, out_pixels=64))
    cpu, gpu = DEFAULT_CONSTANTS["cpu"], DEFAULT_CONSTANTS["cuda"]
    share = CPU_SHAPES.conv_tables[(ConvKind.DENSE, P.FORWARD)].at(64) * CPU_SHAPES.strided_factors[P.FORWARD]
    assert TimeModel(CPU, cpu).predict(StepTrace([op])).device_ms == pytest.approx(1 / share)
    assert TimeModel(GPU, gpu).predict(StepTrace([op])).device_ms == pytest.approx(1 / gpu.conv_efficiency + 0.004)


def test_the_optimizers_temporaries_fault_from_the_steps_largest_new_tensor_below_32_mib() -> None:
    """glibc's mmap threshold rises to the largest chunk freed below 32 MiB (and its heap is trimmed past twice it):
    an AdamW temporary faults where it is as large as the step's largest new tensor below 32 MiB, else it comes from
    the heap's free space (ResNet-34's 9 MiB temporaries fault, its 2.25 MiB ones do not: bench_adamw_pages.py)."""
    mib = 2**20

    def op(phase: Phase, fresh: int) -> OpCost:
        return OpCost("sqrt", OpClass.ELEMENTWISE, phase, 0, 2 * fresh, "float32", 1, fresh)

    # a 9 MiB gradient in the backward, a 40 MiB output (mmapped anyway: it does not raise the threshold)
    trace = StepTrace([op(Phase.BACKWARD, 9 * mib), op(Phase.FORWARD, 40 * mib), op(Phase.OPTIMIZER, int(2.25 * mib)),
                       op(Phase.OPTIMIZER, 9 * mib)])  # fmt: skip
    assert optimizer_fault_bytes(trace) == 9 * mib
    assert [faulted_bytes(o, 9 * mib) for o in trace.ops] == [0, 40 * mib, 0, 9 * mib]
    # the optimizer's own temporaries are new tensors of the step too: alone, the largest of them sets it
    alone = StepTrace([op(Phase.BACKWARD, mib), op(Phase.OPTIMIZER, 6 * mib), op(Phase.OPTIMIZER, 3 * mib)])
    assert optimizer_fault_bytes(alone) == 6 * mib
    # nothing larger than 1 MiB: the 2 MiB floor; the default threshold is that floor
    assert optimizer_fault_bytes(StepTrace([op(Phase.OPTIMIZER, mib)])) == 2 * mib
    assert faulted_bytes(op(Phase.OPTIMIZER, int(2.25 * mib))) == int(2.25 * mib)
    # in a prediction: the 40 MiB and the 9 MiB outputs' pages at 0.66 ms per MiB, not the 2.25 MiB one's
    cpu = DEFAULT_CONSTANTS["cpu"]
    without = TimeModel(CPU, replace(cpu, page_fault_ms_per_mib=0.0)).predict(trace).device_ms
    assert TimeModel(CPU, cpu).predict(trace).device_ms == pytest.approx(without + 49 * 0.66)


def test_pool_shape_reads_a_kernel_given_as_one_int_or_two() -> None:
    x, out, indices = torch.ones(1, 1, 6, 6), torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.long)
    assert pool_shape("max_pool2d_with_indices", (x, 3, 2), (out, indices), 200) == PoolShape(9, 50.0)
    assert pool_shape("max_pool2d_with_indices", (x, [3, 2], 2), (out, indices), 200) == PoolShape(6, 50.0)
    assert pool_shape("max_pool2d_with_indices_backward", (out, x, [3, 3]), x, 80) == PoolShape(1, 20.0, True)
    assert pool_shape("avg_pool2d", (x, [3, 3]), out, 200) is None


def test_max_pooling_in_bfloat16_takes_the_float32_peak_not_bfloat16s() -> None:
    """ATen's max pooling goes one element at a time in every dtype (on the AMD EPYC of the committed results a
    bfloat16 forward of 8x64x32x32 took 5.2 ms, float32 4.7 ms, while its bfloat16 matmuls run 66x below float32's):
    priced against the bfloat16 peak it was predicted at 323 ms. A bfloat16 convolution keeps bfloat16's peak."""
    slow_bf16 = DevicePeaks("test cpu", "cpu", 1.0, 1.0, 0.01, 0.01, 50.0, "test")  # 1 TFLOP/s float32, 10 GFLOP/s bf16
    cpu = DEFAULT_CONSTANTS["cpu"]
    forward = pool_op(9, 10**6, 4.0)
    expected = 9e6 / (1e12 * CPU_SHAPES.pool_shares[P.FORWARD]) * 1e3  # the work at the float32 peak x its share
    for dtype in ("float32", "bfloat16", "float16"):
        op = replace(forward, dtype=dtype)
        assert TimeModel(slow_bf16, cpu).predict(StepTrace([op])).device_ms == pytest.approx(expected), dtype
    dense = ConvShape(64, 576, 1, 64, False)
    conv = OpCost("convolution", OpClass.CONV, Phase.FORWARD, 10**9, 0, "bfloat16", 1, 0, dense)
    share = CPU_SHAPES.conv_tables[(ConvKind.DENSE, P.FORWARD)].at(64)
    assert TimeModel(slow_bf16, cpu).predict(StepTrace([conv])).device_ms == pytest.approx(1e9 / (1e10 * share) * 1e3)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data["conv_tables"].pop("dense/weight_grad"),
        lambda data: data["pool_shares"].pop("input_grad"),
        lambda data: data["conv_tables"].update({"dense/forward": [[64, 0.9], [4, 0.4]]}),
        lambda data: data["conv_tables"].update({"sparse/forward": [[1, 0.1]]}),
        lambda data: data.pop("source"),
    ],
)
def test_a_damaged_cpu_shapes_file_is_one_error_naming_it(tmp_path: Path, damage) -> None:  # noqa: ANN001
    """A table or pooling pass missing was a KeyError only when a cell first needed it (a GPU estimate never did);
    points out of order an AssertionError in `ConvTable.at`: now one error at reading, naming the file."""
    from layerprof.errors import LayerprofError

    data = json.loads(CPU_SHAPES_FILE.read_text())
    damage(data)
    path = tmp_path / "shapes.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LayerprofError, match="shapes.json: the CPU's convolution tables are unreadable"):
        CpuShapes.read(path)
    with pytest.raises(LayerprofError, match="No such file"):
        CpuShapes.read(tmp_path / "absent.json")
    path.write_text("{")
    with pytest.raises(LayerprofError, match="unreadable"):
        CpuShapes.read(path)


def test_a_channels_last_max_pooling_forward_is_priced_by_its_bytes() -> None:
    """ATen's channels-last max pooling forward runs vectorised across channels, ~17x faster than the element-at-a-
    time kernel the pooling shares measure (8x64x32x32, 3x3 at stride 2: 0.27 ms against 4.7 ms, AMD EPYC, busy):
    no work kept, so it is priced by its bytes as before; its backward (as fast in either layout) keeps its
    additions."""
    x = torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last).requires_grad_()
    forward, backward = _recorded(lambda: torch.nn.functional.max_pool2d(x, 3, 2, 1).sum().backward())
    assert (forward.name, forward.pool) == ("max_pool2d_with_indices", None)
    assert backward.pool == PoolShape(1, 44.0, backward=True)


def _recorded(work) -> list[OpCost]:  # noqa: ANN001
    with OpRecorder() as recorder:
        work()
    return [op for op in recorder.ops if op.name.startswith("max_pool2d")]
