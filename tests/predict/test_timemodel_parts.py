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
