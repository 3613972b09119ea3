"""The time model's parts one at a time, each with hand-worked figures: the cache levels read from sysfs and
measured, the usable CPUs, calibration's bookkeeping (its numerics, residuals and their JSON round trip),
recomputation dispatched in backward, and the --against refusal. Written for the mutants `make mutate` left alive
in layerprof/predict/timemodel.py."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import layerprof.predict.timemodel as timemodel
from layerprof.errors import LayerprofError
from layerprof.measure.instruments import OpClass, OpCost, Phase, StepTrace
from layerprof.predict.timemodel import (
    DevicePeaks,
    MeasuredStep,
    Numerics,
    TimeConstants,
    TimeModel,
    calibrate,
    check_predictions,
    cpu_cache_sizes,
)

CPU = DevicePeaks("test cpu", "cpu", 1.0, 1.0, 1.0, 1.0, 50.0, "test")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512K\n", 512 * 2**10), ("32768K", 32 * 2**20), ("1M", 2**20), ("2G", 2 * 2**30), ("48KB", 48 * 2**10),
     ("64", 64)],
)  # fmt: skip
def test_sysfs_cache_sizes_are_read_in_bytes(text: str, expected: int) -> None:
    assert timemodel._cache_bytes(text) == expected


def test_cache_levels_skip_unreadable_entries_empty_levels_and_instruction_caches(tmp_path: Path) -> None:
    """An entry that cannot be read is skipped, not the end of the list; a level of size 0 is no level."""
    entries = {
        "index0": ("1", "Data", "32K"),
        "index1": None,  # a folder with nothing readable in it
        "index2": ("2", "Instruction", "64K"),
        "index3": ("2", "Unified", "1M"),
        "index4": ("3", "Unified", "0K"),
        "index5": ("4", "Data", "1"),
    }
    for name, fields in entries.items():
        folder = tmp_path / name
        folder.mkdir()
        if fields is not None:
            for file, value in zip(("level", "type", "size"), fields, strict=True):
                (folder / file).write_text(value + "\n")
    assert cpu_cache_sizes(tmp_path) == [("L2", 2**20), ("L4", 1)]


def test_a_cache_level_rate_is_its_copies_less_their_per_call_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    """L2 of 512 KiB over an L1 of 32 KiB: copies of sqrt(512 KiB x 32 KiB) / 8 = 16,384 floats, 2**28 / (2 x
    16,384 x 4) = 2,048 times: 2**28 bytes read and written; 0.5 s for them less 0.1 s for as many tiny copies."""
    timed: list[bool] = []

    def best_seconds(work: Callable[[], object]) -> float:
        defaults = getattr(work, "__defaults__", None)
        if defaults:  # the copies themselves: run them once and check they copied
            work()
            timed.append(bool(torch.all(defaults[1] == 1)) and defaults[1].numel() == 16_384)
            return 0.5
        return 0.1

    monkeypatch.setattr(timemodel, "_best_seconds", best_seconds)
    assert timemodel._cache_gbps(512 * 2**10, 32 * 2**10) == pytest.approx(2**28 / 0.4 / 1e9)
    assert timed == [True]
    # a level so small that its middle size is under 256 floats still copies 256 of them
    monkeypatch.setattr(timemodel, "_best_seconds", lambda work: 0.2 if getattr(work, "__defaults__", None) else 0.1)
    assert timemodel._cache_gbps(1024, 1024, enough_bytes=2**20) == pytest.approx(2 * 256 * 4 * 512 / 0.1 / 1e9)


def test_cpu_peaks_measure_each_level_over_the_one_below(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []

    def cache_gbps(level_bytes: int, below_bytes: int) -> float:
        calls.append((level_bytes, below_bytes))
        return 100.0 / len(calls)

    monkeypatch.setattr(timemodel, "cpu_cache_sizes", lambda: [("L2", 2**19), ("L3", 2**25)])
    monkeypatch.setattr(timemodel, "_cache_gbps", cache_gbps)
    monkeypatch.setattr(timemodel, "_matmul_tflops", lambda dtype: 0.1)
    monkeypatch.setattr(timemodel, "_copy_gbps", lambda: 20.0)
    monkeypatch.setattr("layerprof.measure.environment.cpu_busy_share", lambda: 0.0)
    peaks = timemodel.cpu_peaks(1, tmp_path / "peaks.json")
    assert calls == [(2**19, timemodel.L1_BYTES), (2**25, 2**19)]
    assert peaks.caches == (("L2", 2**19, 100.0), ("L3", 2**25, 50.0)) and peaks.memory_gbps == 20.0


def test_usable_cpus_are_this_process_s_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    if hasattr(os, "sched_getaffinity"):
        mine = os.sched_getaffinity(0)
        one = {min(mine)}
        os.sched_setaffinity(0, one)
        try:
            assert timemodel._usable_cpus() == 1
        finally:
            os.sched_setaffinity(0, mine)
    monkeypatch.setattr(timemodel, "os", SimpleNamespace(cpu_count=lambda: 6))  # no affinity (not Linux)
    assert timemodel._usable_cpus() == 6  # the CPUs there are
    monkeypatch.setattr(timemodel, "os", SimpleNamespace(cpu_count=lambda: None))
    assert timemodel._usable_cpus() == 1  # or one, where even that is unknown


def _steps() -> list[MeasuredStep]:
    steps = []
    for index in range(4):
        ops = [OpCost("mm", OpClass.GEMM, Phase.FORWARD, 10**9 * (index + 1), 10**6, "float32", 1)]
        ops += [OpCost("add", OpClass.ELEMENTWISE, Phase.BACKWARD, 0, 10**7, "float32", 1)] * (index + 2)
        steps.append(MeasuredStep(f"mlp b{index} z=1", StepTrace(ops, module_calls=3), 3.123456789 * (index + 1)))
    return steps


def test_calibration_keeps_its_numerics_and_writes_one_rounded_residual_per_cell() -> None:
    numerics = Numerics(tf32_matmul=True, tf32_conv=False)
    model = calibrate(_steps(), CPU, numerics)
    assert model.numerics == numerics
    first = model.residuals[0]
    assert list(first) == ["cell", "measured_ms", "predicted_ms", "error"]
    assert first["cell"] == "mlp b0 z=1" and first["measured_ms"] == 3.1235
    predicted = model.predict(_steps()[0].trace).step_ms
    assert first["predicted_ms"] == round(predicted, 4) and first["error"] == round(predicted / 3.123456789 - 1, 4)
    assert calibrate(_steps(), CPU).numerics == Numerics()  # none given: PyTorch's defaults


def test_a_saved_model_keeps_its_residuals() -> None:
    model = calibrate(_steps(), CPU)
    loaded = TimeModel.from_dict(model.to_dict())
    assert loaded.residuals == model.residuals and len(loaded.residuals) == 4


def test_a_checkpointed_layer_s_recompute_is_dispatched_in_backward() -> None:
    """Host: forward ops at 10 us, backward ones (recomputed forward ops among them) at 20 us."""
    constants = TimeConstants(0.5, 0.5, 0.5, 0.5, 0.0, 10.0, 20.0, 30.0, 0.0, "test")
    ops = [OpCost("mm", OpClass.GEMM, phase, 0, 0, "float32", 1) for phase in
           (Phase.FORWARD, Phase.BACKWARD, Phase.RECOMPUTE, Phase.RECOMPUTE, Phase.OPTIMIZER)]  # fmt: skip
    host_ms = TimeModel(CPU, constants).predict(StepTrace(ops)).host_ms
    assert host_ms == pytest.approx((10 + 3 * 20 + 30) / 1000)


def test_against_a_profile_of_another_model_is_refused() -> None:
    from layerprof.profile import Row
    from tests.conftest import bare_profile

    estimate = bare_profile([Row(2, 1, "ok", predicted_step_time_ms=10.0)], 1)
    estimate.settings = replace(estimate.settings, mode="estimate")
    measured = bare_profile([Row(2, 1, "ok", step_time_ms=12.0)], 1)
    measured.model = replace(measured.model, spec="another-model")
    with pytest.raises(LayerprofError, match="the estimate is of .* the measured profile of 'another-model'"):
        check_predictions(estimate, measured)


# ---------------------------------------------------------------- hand-worked figures, part by part (issue 40)

PEAKS = DevicePeaks("test", "cpu", 1.0, 2.0, 4.0, 8.0, 100.0, "test")  # TFLOP/s: fp32, tf32, bf16, fp16; GB/s
CONSTANTS = TimeConstants(
    0.5, 0.5, 0.5, 0.5, 10.0, 20.0, 40.0, 80.0, 30.0, "test", elementwise_efficiency=0.25, page_fault_ms_per_mib=0.5
)


def _step(module_calls: int = 2) -> StepTrace:
    """A forward product of 1 GFLOP (2 ms at 0.5 x 1 TFLOP/s; its 10 MB at 0.5 x 100 GB/s: 0.2 ms) in 2 kernels, a
    backward addition of 100 MB (at 0.25 x 100 GB/s: 4 ms), a view in the optimizer (no kernel, dispatched)."""
    return StepTrace(
        [
            OpCost("mm", OpClass.GEMM, Phase.FORWARD, 10**9, 10**7, "float32", 2),
            OpCost("add", OpClass.ELEMENTWISE, Phase.BACKWARD, 0, 10**8, "float32", 1),
            OpCost("view", OpClass.MOVEMENT, Phase.OPTIMIZER, 0, 0, "float32", 0),
        ],
        module_calls=module_calls,
    )


def test_a_cpu_step_adds_device_and_host_time_a_gpu_step_takes_the_slower() -> None:
    """Device: 2 ms + 2 x 10 us, 4 ms + 10 us = 6.03 ms; host: 20 + 40 + 80 us and 2 module calls x 30 us = 0.2 ms."""
    cpu = TimeModel(PEAKS, CONSTANTS).predict(_step())
    assert (cpu.step_ms, cpu.device_ms, cpu.host_ms) == pytest.approx((6.23, 6.03, 0.2))
    assert cpu.host_bound is False
    gpu = TimeModel(replace(PEAKS, kind="cuda"), CONSTANTS).predict(_step())
    assert (gpu.step_ms, gpu.device_ms, gpu.host_ms, gpu.host_bound) == pytest.approx((6.03, 6.03, 0.2, False))
    launched = TimeModel(replace(PEAKS, kind="cuda"), CONSTANTS).predict(_step(module_calls=1000))  # host 30.14 ms
    assert (launched.step_ms, launched.host_bound) == pytest.approx((30.14, True))
    empty = TimeModel(replace(PEAKS, kind="cuda"), CONSTANTS).predict(StepTrace())  # 0 ms each: not host-bound
    assert (empty.step_ms, empty.host_bound) == (0.0, False)


def test_each_launched_operation_s_device_time_and_tf32_products() -> None:
    assert TimeModel(PEAKS, CONSTANTS).op_device_ms(_step()) == pytest.approx([2.02, 4.01])
    tf32 = TimeModel(PEAKS, CONSTANTS, Numerics(tf32_matmul=True)).op_device_ms(_step())  # 2 TFLOP/s: 1 ms
    assert tf32 == pytest.approx([1.02, 4.01])


def test_peaks_by_dtype_and_tf32_setting() -> None:
    assert [PEAKS.tflops("float32", OpClass.GEMM, m, c) for m, c in ((False, True), (True, False))] == [1.0, 2.0]
    assert [PEAKS.tflops("float32", k, False, True) for k in (OpClass.CONV, OpClass.GROUPED_CONV)] == [2.0, 2.0]
    assert PEAKS.tflops("float32", OpClass.CONV, True, False) == 1.0
    assert [PEAKS.tflops(d, OpClass.GEMM, True, True) for d in ("float16", "bfloat16", "float64")] == [8.0, 4.0, 1.0]


def test_bytes_move_at_the_smallest_cache_level_they_fit_on_a_cpu_only() -> None:
    peaks = replace(PEAKS, caches=[["L2", "1000", "500"], ("L3", 10_000, 200.0)])  # as JSON gives them
    assert peaks.caches == (("L2", 1000, 500.0), ("L3", 10_000, 200.0))
    assert [peaks.gbps_for(n) for n in (1000, 1001, 10_000, 10_001)] == [500.0, 200.0, 200.0, 100.0]
    assert replace(peaks, kind="cuda").gbps_for(10) == 100.0
    # an addition of 1,000 bytes at 0.25 x 500 GB/s: 8 ns, and its kernel's 10 us
    add = StepTrace([OpCost("add", OpClass.ELEMENTWISE, Phase.FORWARD, 0, 1000, "float32", 1)])
    assert TimeModel(peaks, CONSTANTS).op_device_ms(add) == pytest.approx([1000 / 125e9 * 1e3 + 0.01])


def test_a_gpu_s_peaks_and_its_l2_at_twice_the_memory_rate() -> None:
    from layerprof.devices import GpuKind

    gpu = GpuKind("X1", 1000, (9, 0), 4.0, fp32_tflops=1.0, tf32_tflops=2.0, memory_gbps=100.0, fp16_tflops=8.0,
                  source="sheet", l2_mib=1.5)  # fmt: skip
    peaks = DevicePeaks.of_gpu(gpu)
    assert peaks == DevicePeaks("X1", "cuda", 1.0, 2.0, 4.0, 8.0, 100.0, "X1: sheet", (("L2", 1572864, 200.0),))
    assert DevicePeaks.of_gpu(replace(gpu, l2_mib=0.0)).caches == ()


def test_a_conv_table_is_flat_beyond_its_ends_and_straight_in_log_pixels_between() -> None:
    table = timemodel.ConvTable(((4, 0.1), (16, 0.3), (64, 0.9)))
    assert [table.at(p) for p in (1, 4, 16, 64, 100)] == pytest.approx([0.1, 0.1, 0.3, 0.9, 0.9])
    assert [table.at(p) for p in (8, 32)] == pytest.approx([0.2, 0.6])


def _shapes_json(path: Path, **changes: object) -> Path:
    from layerprof.measure.instruments import ConvKind

    tables: dict[str, object] = {f"{k.value}/{p.value}": [[1, 0.1]] for k in ConvKind for p in timemodel.ConvPass}
    tables["dense/forward"] = [[1, 0.123], [4, 0.456]]
    tables["depthwise/forward"] = [[1, 0.234], [9, 0.111]]
    data = {"source": "sweep", "conv_tables": tables, "pool_shares": {"forward": 0.01, "input_grad": 0.02}}
    data.update(changes)
    path.write_text(__import__("json").dumps(data))
    return path


def test_cpu_shapes_read_and_their_class_defaults(tmp_path: Path) -> None:
    from layerprof.measure.instruments import ConvKind

    P = timemodel.ConvPass
    shapes = timemodel.CpuShapes.read(_shapes_json(tmp_path / "s.json", strided_factors={"forward": 0.5}))
    assert shapes.source == "sweep" and shapes.pool_shares == {P.FORWARD: 0.01, P.INPUT_GRAD: 0.02}
    assert shapes.conv_tables[(ConvKind.DENSE, P.FORWARD)].points == ((1, 0.123), (4, 0.456))
    assert shapes.strided_factors == {P.FORWARD: 0.5}
    assert (shapes.conv_efficiency, shapes.grouped_conv_efficiency) == (0.46, 0.23)  # the best, to 2 places
    assert timemodel.CpuShapes.read(_shapes_json(tmp_path / "t.json")).strided_factors == {}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"conv_tables": {"dense/forward": [[4, 0.1], [1, 0.2]]}}, "dense/forward: no points, or not in order"),
        ({"conv_tables": {"dense/forward": [[1, 0.1], [1, 0.2]]}}, "dense/forward: no points, or not in order"),
        ({"conv_tables": {"dense/forward": []}}, "dense/forward: no points"),
        ({"conv_tables": {"dense/forward": [[1, 0.1]]}}, r"missing dense/input_grad, dense/weight_grad, pointwise/"),
        ({"pool_shares": {"forward": 0.01}}, r"\(missing pool_shares input_grad\)"),
    ],
)
def test_cpu_shapes_refused_name_the_file_and_what_is_wrong(tmp_path: Path, changes: dict, message: str) -> None:
    path = _shapes_json(tmp_path / "s.json", **changes)
    with pytest.raises(LayerprofError, match=message):
        timemodel.CpuShapes.read(path)


def test_a_convolution_s_share_by_pass_stride_and_its_gradients_harmonic_mean() -> None:
    from layerprof.measure.instruments import ConvKind, ConvShape

    P = timemodel.ConvPass
    tables = {(ConvKind.DENSE, p): timemodel.ConvTable(((1, s),)) for p, s in
              ((P.FORWARD, 0.4), (P.INPUT_GRAD, 0.2), (P.WEIGHT_GRAD, 0.6))}  # fmt: skip
    dense = ConvShape(1, 27, 1, 3, False)  # 3x3 over 3 channels
    factor = timemodel.conv_shape_factor
    assert factor(dense, tables, 0.5) == pytest.approx(0.8)
    assert factor(replace(dense, input_grad=True), tables, 0.5) == pytest.approx(0.4)
    assert factor(replace(dense, weight_grad=True), tables, 0.5) == pytest.approx(1.2)
    both = replace(dense, input_grad=True, weight_grad=True)  # 2 / (1/0.2 + 1/0.6) = 0.3
    assert factor(both, tables, 0.5) == pytest.approx(0.6)
    strided = {P.FORWARD: 0.5, P.INPUT_GRAD: 0.25}
    assert factor(replace(dense, strided=True), tables, 0.5, strided) == pytest.approx(0.4)
    assert factor(replace(both, strided=True), tables, 0.5, strided) == pytest.approx(2 / (1 / 0.05 + 1 / 0.6) / 0.5)
    assert factor(replace(dense, strided=True), tables, 0.5) == pytest.approx(0.8)  # no factors given
    assert factor(dense, tables, 0.5, strided) == pytest.approx(0.8)  # not strided
    assert factor(dense, {}, 0.5) == 1.0
    zero = {(ConvKind.DENSE, P.FORWARD): timemodel.ConvTable(((1, 0.0),))}
    assert factor(dense, zero, 0.5) == pytest.approx(2e-9)  # a share of 0 counts as 1e-9


def test_which_fresh_outputs_fault_their_pages() -> None:
    mib = 2**20

    def op(phase: Phase, fresh: int) -> OpCost:
        return OpCost("add", OpClass.ELEMENTWISE, phase, 0, 0, "float32", 1, fresh_bytes=fresh)

    trace = StepTrace([op(Phase.FORWARD, 32 * mib), op(Phase.BACKWARD, 32 * mib - 1), op(Phase.FORWARD, 5 * mib)])
    assert timemodel.optimizer_fault_bytes(trace) == 32 * mib - 1  # the largest below 32 MiB
    assert timemodel.optimizer_fault_bytes(StepTrace([op(Phase.FORWARD, mib)])) == 2 * mib  # never below 2 MiB
    assert timemodel.optimizer_fault_bytes(StepTrace()) == 2 * mib
    faulted = timemodel.faulted_bytes
    assert [faulted(op(p, 32 * mib)) for p in (Phase.FORWARD, Phase.BACKWARD, Phase.RECOMPUTE)] == [32 * mib] * 3
    assert faulted(op(Phase.FORWARD, 32 * mib - 1)) == 0
    assert faulted(op(Phase.FORWARD, 4 * mib), 2 * mib) == 0  # the optimizer's threshold is the optimizer's only
    assert faulted(op(Phase.OPTIMIZER, 2 * mib)) == 2 * mib and faulted(op(Phase.OPTIMIZER, 2 * mib - 1)) == 0
    assert faulted(op(Phase.OPTIMIZER, 3 * mib), 4 * mib) == 0 and faulted(op(Phase.OPTIMIZER, 4 * mib), 4 * mib) > 0
    # 64 MiB faulted at 0.5 ms a MiB: 32 ms on top of the addition's 64 MiB at 25 GB/s and its kernel
    step = StepTrace([op(Phase.FORWARD, 64 * mib)])
    step.ops[0] = replace(step.ops[0], bytes_moved=64 * mib)
    assert TimeModel(PEAKS, CONSTANTS).op_device_ms(step) == pytest.approx([32 + 64 * mib / 25e9 * 1e3 + 0.01])


def test_a_cpu_s_max_pooling_is_priced_by_its_work_at_the_float32_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    """9 window visits per output of 8 bytes moved: 4 MB move 4.5e6 visits; at 0.0045 of 1 TFLOP/s (the forward's
    share 0.0045 over the reductions' CPU default 0.35, times this model's 0.35): 1 ms (its bytes: 0.11 ms)."""
    from layerprof.measure.instruments import PoolShape

    P = timemodel.ConvPass
    monkeypatch.setitem(timemodel.POOL_SHARES, "cpu", {P.FORWARD: 0.0045, P.INPUT_GRAD: 0.009})
    constants = replace(CONSTANTS, reduction_efficiency=0.35)
    pool = OpCost("max_pool2d_with_indices", OpClass.REDUCTION, Phase.FORWARD, 0, 4 * 10**6, "bfloat16", 1,
                  pool=PoolShape(9, 8.0))  # fmt: skip
    back = replace(pool, pool=PoolShape(1, 8.0, backward=True))  # 5e5 additions at 0.009: 0.11 ms, its bytes 0.114
    ms = TimeModel(PEAKS, constants).op_device_ms(StepTrace([pool, back]))
    assert ms == pytest.approx([1.01, 4e6 / (0.35 * 100e9) * 1e3 + 0.01])
    assert timemodel.pool_shape_factor(PoolShape(9, 8.0), {P.FORWARD: 0.01, P.INPUT_GRAD: 0.04}, 0.5) == 0.02
    assert timemodel.pool_shape_factor(back.pool, {P.FORWARD: 0.01, P.INPUT_GRAD: 0.04}, 0.5) == 0.08
    gpu = TimeModel(replace(PEAKS, kind="cuda"), constants).op_device_ms(StepTrace([pool]))  # by its bytes there
    assert gpu == pytest.approx([4e6 / (0.35 * 100e9) * 1e3 + 0.01])


def test_a_cpu_s_convolution_reaches_its_table_s_share(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dense forward whose table says 0.45 of the peak, under the CPU's default conv constant: 0.9 GFLOP at 0.45 x
    2 TFLOP/s (TF32 convolutions by default): 1 ms; elsewhere the class constant alone (0.5): 0.9 ms."""
    from layerprof.measure.instruments import ConvKind, ConvShape

    P = timemodel.ConvPass
    monkeypatch.setitem(timemodel.CONV_TABLES, "cpu", {(ConvKind.DENSE, P.FORWARD): timemodel.ConvTable(((1, 0.45),))})
    constants = replace(CONSTANTS, conv_efficiency=timemodel.DEFAULT_CONSTANTS["cpu"].conv_efficiency)
    conv = OpCost("convolution", OpClass.CONV, Phase.FORWARD, 9 * 10**8, 0, "float32", 1,
                  conv=ConvShape(1, 27, 1, 3, False))  # fmt: skip
    assert TimeModel(PEAKS, constants).op_device_ms(StepTrace([conv])) == pytest.approx([1.01])
    assert TimeModel(replace(PEAKS, kind="cuda"), CONSTANTS).op_device_ms(StepTrace([conv])) == pytest.approx([0.91])


def test_constants_missing_take_the_shared_ones_and_given_ones_stay() -> None:
    constants = TimeConstants(0.7, 0.5, 0.5, 0.6, 4.0, 7.5, 12.0, 53.0, 48.0, norm_efficiency=0.1,
                              grouped_conv_efficiency=0.2)  # fmt: skip
    assert (constants.norm_efficiency, constants.elementwise_efficiency, constants.grouped_conv_efficiency) == (
        0.1, 0.6, 0.2)  # fmt: skip
    assert TimeConstants(0.7, 0.5, 0.5, 0.6, 4.0, 7.5, 12.0, 53.0, 48.0).grouped_conv_efficiency == 0.5


def test_numerics_from_a_profile_and_a_default_model_s() -> None:
    assert Numerics.of({"matmul_tf32": True, "cudnn_conv_tf32": False}) == Numerics(True, False)
    assert Numerics.of({}) == Numerics(False, True)
    assert TimeModel.default(PEAKS).numerics == Numerics()
    assert TimeModel.default(PEAKS, Numerics(True, False)).numerics == Numerics(True, False)
    assert TimeModel.default(PEAKS).constants == timemodel.DEFAULT_CONSTANTS["cpu"]


def test_a_saved_model_s_keys_and_one_saved_before_the_class_constants() -> None:
    model = TimeModel(PEAKS, CONSTANTS, Numerics(True, False), [{"cell": "a", "measured_ms": 1.0,
                      "predicted_ms": 1.0, "error": 0.0}])  # fmt: skip
    saved = model.to_dict()
    assert list(saved) == ["peaks", "constants", "numerics", "residuals"]
    assert TimeModel.from_dict(saved) == model
    old = {"peaks": saved["peaks"], "constants": {k: v for k, v in saved["constants"].items()
           if k in timemodel.FITTED[:9] or k == "source"}}  # fmt: skip
    loaded = TimeModel.from_dict(old)
    assert loaded.numerics == Numerics() and loaded.residuals == []
    assert (loaded.constants.norm_efficiency, loaded.constants.page_fault_ms_per_mib) == (0.14, 0.66)  # the CPU's
    old["peaks"] = {**saved["peaks"], "kind": "cuda"}
    gpu = TimeModel.from_dict(old).constants
    assert (gpu.norm_efficiency, gpu.grouped_conv_efficiency, gpu.page_fault_ms_per_mib) == (0.7, 0.5, 0.0)
    with pytest.raises(LayerprofError, match="^my.json: a damaged time model"):
        TimeModel.from_dict({"peaks": saved["peaks"]}, "my.json")


def _gpu_cells(efficiency: float, host_scale: float = 1.0) -> list[MeasuredStep]:
    """Device-bound cells of one product each (a GFLOP per unit of size) measured at `efficiency` of 1 TFLOP/s,
    with launch times `host_scale` x what CONSTANTS' host costs give."""
    cells = []
    for size in (1, 2, 3):
        trace = StepTrace([OpCost("mm", OpClass.GEMM, Phase.FORWARD, size * 10**9, 0, "float32", 1)], module_calls=1)
        host = TimeModel(replace(PEAKS, kind="cuda"), CONSTANTS).predict(trace).host_ms
        cells.append(MeasuredStep(f"mlp b{size} z=1", trace, size / efficiency, host * host_scale))
    return cells


def test_calibration_moves_a_constant_towards_the_data_as_far_as_its_prior_lets_it() -> None:
    """The product's efficiency measured at 0.25 against a start of 0.5: log-space least squares with the prior's
    weight 0.01 / 1.5^2 per constant settles at 0.5 x 0.5^(1 / (1 + 0.01 / 1.5^2)) per cell... for 3 cells, 3 x
    the data's weight: 0.5 x 0.5^(3 / (3 + 0.01 / 2.25)). Kernel time is 1e-6 us: the data cannot see it."""
    start = replace(CONSTANTS, kernel_us=1e-6)
    model = calibrate(_gpu_cells(0.25), replace(PEAKS, kind="cuda"), start=start)
    expected = 0.5 * 0.5 ** (3 / (3 + 0.01 / 1.5**2))
    assert model.constants.gemm_efficiency == pytest.approx(expected, rel=1e-5)
    assert model.constants.forward_dispatch_us == pytest.approx(20.0, rel=1e-5)  # launches as the start says
    assert model.constants.source == "calibrated on 3 cells of mlp"
    assert [r["cell"] for r in model.residuals] == ["mlp b1 z=1", "mlp b2 z=1", "mlp b3 z=1"]


def test_a_gpu_calibration_fits_the_host_costs_to_the_launch_times() -> None:
    """Launches measured at twice the start's host time: the host's four costs double between them (the device, far
    slower, still bounds every step)."""
    model = calibrate(_gpu_cells(0.5, host_scale=2.0), replace(PEAKS, kind="cuda"), start=CONSTANTS)
    host = TimeModel(replace(PEAKS, kind="cuda"), CONSTANTS).predict(_gpu_cells(0.5)[0].trace).host_ms
    assert model.predict(_gpu_cells(0.5)[0].trace).host_ms == pytest.approx(2 * host, rel=0.01)


def test_a_cpu_calibration_adds_host_to_device_time() -> None:
    """Cells measured as the start's constants predict them on a CPU (device + host, the host a third of it): the
    fit stays where it starts. Combined as a GPU's (the slower one only), it would have to move."""
    cells = []
    for size in (1, 2, 3, 4):
        ops = [OpCost("mm", OpClass.GEMM, Phase.FORWARD, size * 10**8, 0, "float32", 1)]
        ops += [OpCost("add", OpClass.ELEMENTWISE, Phase.BACKWARD, 0, 10**7, "float32", 1)] * (5 - size)
        trace = StepTrace(ops, module_calls=size)
        cells.append(MeasuredStep(f"net b{size} z=1", trace, TimeModel(PEAKS, CONSTANTS).predict(trace).step_ms))
    model = calibrate(cells, PEAKS, start=CONSTANTS)
    assert model.constants.as_vector() == pytest.approx(CONSTANTS.as_vector(), rel=1e-4)
    assert [r["error"] for r in model.residuals] == [0.0] * 4


def test_a_calibration_keeps_efficiencies_at_most_1_and_other_constants_as_fitted() -> None:
    """A start above the peak for a class the cells do not run stays there in the fit: the model caps it at 1."""
    start = replace(CONSTANTS, attention_efficiency=2.0, kernel_us=5.0)
    model = calibrate(_gpu_cells(0.5), replace(PEAKS, kind="cuda"), start=start)
    assert model.constants.attention_efficiency == 1.0
    assert model.constants.kernel_us == pytest.approx(5.0, rel=1e-3)


@pytest.mark.parametrize("busy", [0.0, 0.25, None])  # 0.25: BUSY_CPU_SHARE itself; None: unknown (no /proc/stat)
def test_cpu_peaks_measured_on_a_quiet_machine_at_the_threads_asked_are_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busy: float | None
) -> None:
    from layerprof.measure.environment import BUSY_CPU_SHARE

    assert BUSY_CPU_SHARE == 0.25
    threads: list[int] = []
    monkeypatch.setattr(timemodel, "cpu_cache_sizes", lambda: [])
    monkeypatch.setattr(timemodel, "_matmul_tflops", lambda dtype: threads.append(torch.get_num_threads()) or 0.1)
    monkeypatch.setattr(timemodel, "_copy_gbps", lambda: 20.0)
    monkeypatch.setattr("layerprof.measure.environment.cpu_busy_share", lambda: busy)
    monkeypatch.setattr("layerprof.measure.environment.cpu_name", lambda: "Test CPU")
    cache = tmp_path / "not yet" / "peaks.json"
    before = torch.get_num_threads()
    try:
        first = timemodel.cpu_peaks(before + 2, cache)
        assert torch.get_num_threads() == before  # put back
    finally:
        torch.set_num_threads(before)
    assert threads == [before + 2] * 3 and first.name == "Test CPU"
    assert "not cached" not in first.source and f"|{before + 2}|" in next(iter(__import__("json").loads(
        cache.read_text())))  # fmt: skip
    assert timemodel.cpu_peaks(before + 2, cache) == first and len(threads) == 3  # from the cache
    monkeypatch.setattr("layerprof.measure.environment.cpu_name", lambda: "")
    assert timemodel._cpu_name() == "cpu"


def test_best_seconds_is_the_shortest_timed_run_over_the_threads_that_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs of 3, 2 and 5 s of CPU time (after one untimed) over min(4 threads, 3 usable CPUs): 2/3 s."""
    calls: list[int] = []
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    monkeypatch.setattr(timemodel, "_usable_cpus", lambda: 3)
    clock = iter([0.0, 3.0, 10.0, 12.0, 20.0, 25.0] * 2)
    monkeypatch.setattr(timemodel, "time", SimpleNamespace(process_time=lambda: next(clock)))
    assert timemodel._best_seconds(lambda: calls.append(1)) == pytest.approx(2 / 3)
    assert len(calls) == 4
    monkeypatch.setattr(timemodel, "_usable_cpus", lambda: 1)  # one CPU: the time as it is
    assert timemodel._best_seconds(lambda: calls.append(1)) == pytest.approx(2.0)


def test_matmul_peak_at_the_first_size_slow_enough_else_the_largest(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []

    def best_seconds(work: Callable[[], object]) -> float:
        sizes.append(work.__defaults__[0].shape[0])  # type: ignore[attr-defined]
        return {128: 0.01, 256: 0.01, 512: 0.05}.get(sizes[-1], 1.0)

    monkeypatch.setattr(timemodel, "_best_seconds", best_seconds)
    assert timemodel._matmul_tflops(torch.float32) == pytest.approx(2 * 512**3 / 0.05 / 1e12)  # 50 ms: enough
    assert sizes == [128, 256, 512]
    monkeypatch.setattr(timemodel, "_best_seconds", lambda work: 0.01)
    assert timemodel._matmul_tflops(torch.float32, largest=300) == pytest.approx(2 * 300**3 / 0.01 / 1e12)


def test_memory_rate_of_a_copy_of_the_size_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """1 MB: 2**18 floats read and written (2 MiB) in 1 ms: 2.097152 GB/s."""

    def best_seconds(work: Callable[[], object]) -> float:
        target = work()
        assert isinstance(target, torch.Tensor) and target.numel() == 2**18 and bool(torch.all(target == 1))
        return 0.001

    monkeypatch.setattr(timemodel, "_best_seconds", best_seconds)
    assert timemodel._copy_gbps(1) == pytest.approx(2.097152)


def test_a_cache_level_s_per_call_cost_is_that_of_copies_of_1_kib(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []

    def best_seconds(work: Callable[[], object]) -> float:
        if not getattr(work, "__defaults__", None):  # the tiny copies: the tensors the lambda holds
            sizes.extend(c.cell_contents.numel() for c in work.__closure__ or () if isinstance(c.cell_contents,
                         torch.Tensor))  # fmt: skip
            return 0.1
        return 0.2

    monkeypatch.setattr(timemodel, "_best_seconds", best_seconds)
    timemodel._cache_gbps(2**20, 2**15, enough_bytes=2**20)
    assert sizes == [256, 256]


def test_a_cache_level_copies_once_at_least_and_a_rate_with_no_time_left_is_finite(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """256 floats read and written (2,048 bytes), once, in 0.2 s less 0.1 s; the same time for both: over 1e-9 s."""
    monkeypatch.setattr(timemodel, "_best_seconds", lambda work: 0.2 if getattr(work, "__defaults__", None) else 0.1)
    assert timemodel._cache_gbps(1024, 1024, enough_bytes=1) == pytest.approx(2048 / 0.1 / 1e9)
    monkeypatch.setattr(timemodel, "_best_seconds", lambda work: 0.1)
    assert timemodel._cache_gbps(1024, 1024, enough_bytes=1) == pytest.approx(2048.0)


def test_an_efficiency_above_1_reaches_the_peak_only() -> None:
    """A product at efficiency 2 (a constant no calibration writes, but a saved file may hold): 1 GFLOP at the peak."""
    assert TimeModel(PEAKS, replace(CONSTANTS, gemm_efficiency=2.0)).op_device_ms(_step())[0] == pytest.approx(1.02)
    # and an addition at elementwise efficiency 2: its 100 MB at the full 100 GB/s, 1 ms
    assert TimeModel(PEAKS, replace(CONSTANTS, elementwise_efficiency=2.0)).op_device_ms(_step())[1] == pytest.approx(
        1.01
    )


def test_a_cpu_calibration_ignores_launch_times_and_rounds_its_residuals_to_4_places() -> None:
    """Cells measured as the start predicts them, with launch times 3x the host's: a CPU has no launch to fit."""
    cells = []
    for size in (1, 2, 3):
        trace = StepTrace([OpCost("mm", OpClass.GEMM, Phase.FORWARD, size * 10**8, 0, "float32", 1)], module_calls=2)
        predicted = TimeModel(PEAKS, CONSTANTS).predict(trace)
        cells.append(MeasuredStep(f"net b{size} z=1", trace, predicted.step_ms, 3 * predicted.host_ms))
    model = calibrate(cells, PEAKS, start=CONSTANTS)
    assert model.constants.as_vector() == pytest.approx(CONSTANTS.as_vector(), rel=1e-4)
    # 0.1 GFLOP at 0.5 TFLOP/s: 0.2 ms, a 10 us kernel, 20 us + 2 x 30 us of host: 0.29 ms
    assert model.residuals[0] == {"cell": "net b1 z=1", "measured_ms": 0.29, "predicted_ms": 0.29, "error": 0.0}
    odd = [replace(cell, step_ms=cell.step_ms * 1.000123456) for cell in cells]
    residual = calibrate(odd, PEAKS, start=CONSTANTS).residuals[2]
    assert (
        len(str(residual["measured_ms"]).split(".")[1]) <= 4 and len(str(residual["predicted_ms"]).split(".")[1]) <= 4
    )


def test_prediction_checks_compare_each_measured_cell_and_its_ratio_to_full_training() -> None:
    from layerprof.profile import Row
    from tests.conftest import bare_profile

    estimate = bare_profile([Row(4, z, "ok", predicted_step_time_ms=10.0 * z) for z in (3, 1, 2)], 3)
    estimate.settings = replace(estimate.settings, mode="estimate")
    measured = bare_profile(
        [Row(4, 1, "ok", step_time_ms=8.0), Row(4, 2, "oom"), Row(4, 3, "ok", step_time_ms=40.0)], 3
    )
    checks = check_predictions(estimate, measured)
    assert [(c.trainable_layers, c.measured_ms, c.predicted_ms) for c in checks] == [(1, 8.0, 10.0), (3, 40.0, 30.0)]
    assert (checks[0].measured_vs_full, checks[0].predicted_vs_full) == pytest.approx((0.2, 1 / 3))
    # 30 / 40 - 1 below the measurement; full training's ratios are both 1; (1/3) / 0.2 - 1 for z = 1
    assert (checks[1].error, checks[1].ratio_error, checks[0].ratio_error) == pytest.approx((-0.25, 0.0, 2 / 3))
    assert (checks[0].error, checks[0].ratio_error) == pytest.approx((0.25, 2 / 3))
    assert (checks[1].error, checks[1].ratio_error) == pytest.approx((-0.25, 0.0))
    assert replace(checks[0], measured_vs_full=None).ratio_error is None
    assert replace(checks[0], predicted_vs_full=None).ratio_error is None
    assert timemodel._vs_full(3.0, 4.0) == 0.75 and timemodel._vs_full(3.0, None) is None
    with pytest.raises(LayerprofError, match="no cell is both predicted and measured"):
        check_predictions(estimate, bare_profile([Row(8, 2, "ok", step_time_ms=8.0)], 3))  # another batch size
    with pytest.raises(LayerprofError, match="holds no predicted step times"):
        check_predictions(measured, measured)
    with pytest.raises(LayerprofError, match="needs a measured profile"):
        check_predictions(estimate, estimate)
