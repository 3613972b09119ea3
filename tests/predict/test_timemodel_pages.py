"""New pages of large fresh outputs on a CPU (issue 37): which outputs the recorder calls new, which of them the time
model says fault their pages in every step (FRESH_PAGES_BYTES), and what they add to a prediction, with
hand-worked figures."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest
import torch

from layerprof.measure.instruments import OpClass, OpCost, OpRecorder, Phase, StepTrace
from layerprof.predict.timemodel import (
    DEFAULT_CONSTANTS,
    FRESH_PAGES_BYTES,
    DevicePeaks,
    TimeConstants,
    TimeModel,
    faulted_bytes,
)

MIB = 2**20
CPU = DevicePeaks("test cpu", "cpu", 1.0, 1.0, 1.0, 1.0, 50.0, "test")
GPU = DevicePeaks("test gpu", "cuda", 1.0, 1.0, 1.0, 1.0, 50.0, "test")
# elementwise at half of 50 GB/s, no host costs: only the bytes and the pages are priced
PLAIN = TimeConstants(0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, "test", elementwise_efficiency=0.5)


def recorded(work) -> list[OpCost]:  # noqa: ANN001
    with OpRecorder() as recorder:
        work()
    return [op for op in recorder.ops if op.kernels]


def test_the_recorder_calls_new_only_outputs_that_alias_no_input() -> None:
    x, out = torch.ones(1000), torch.empty(1000)  # 4,000 bytes each
    (sqrt,) = recorded(lambda: torch.sqrt(x))
    assert sqrt.fresh_bytes == 4000
    (inplace,) = recorded(lambda: x.clone().add_(1.0))[1:]  # the clone is new, the in-place add is not
    assert inplace.name == "add_" and inplace.fresh_bytes == 0
    (into,) = recorded(lambda: torch.sqrt(x, out=out))
    assert into.fresh_bytes == 0
    # two new outputs (var and mean of 10 rows): the larger; a list of new outputs (foreach): the largest
    (var_mean,) = recorded(lambda: torch.var_mean(torch.ones(10, 100), dim=0))[-1:]
    assert var_mean.fresh_bytes == 400
    (foreach,) = recorded(lambda: torch._foreach_sqrt([torch.ones(10), torch.ones(30)]))[-1:]
    assert foreach.fresh_bytes == 120


@pytest.mark.parametrize(
    ("phase", "fresh", "faulted"),
    [(Phase.FORWARD, 32 * MIB, 32 * MIB), (Phase.FORWARD, 32 * MIB - 1, 0), (Phase.BACKWARD, 64 * MIB, 64 * MIB),
     (Phase.RECOMPUTE, 31 * MIB, 0), (Phase.OPTIMIZER, 2 * MIB, 2 * MIB), (Phase.OPTIMIZER, 2 * MIB - 1, 0)],
)  # fmt: skip
def test_large_fresh_outputs_and_the_optimizers_temporaries_fault(phase: Phase, fresh: int, faulted: int) -> None:
    """glibc mmaps every allocation from 32 MiB; the optimizer's temporaries from 2 MiB (its heap top trimmed)."""
    assert FRESH_PAGES_BYTES[phase] == (2 * MIB if phase is Phase.OPTIMIZER else 32 * MIB)
    assert faulted_bytes(OpCost("sqrt", OpClass.ELEMENTWISE, phase, 0, 0, "float32", 1, fresh)) == faulted


def test_faulted_pages_add_their_measured_cost_on_a_cpu_only() -> None:
    # a 64 MiB read + write at half of 50 GB/s: 67,108,864 / 25e9 s = 2.684 ms; its 32 MiB new output faults at
    # 0.66 ms per MiB: 21.12 ms more
    trace = StepTrace([OpCost("sqrt", OpClass.ELEMENTWISE, Phase.FORWARD, 0, 64 * MIB, "float32", 1, 32 * MIB)])
    without = TimeModel(CPU, PLAIN).predict(trace)
    faulting = TimeModel(CPU, replace(PLAIN, page_fault_ms_per_mib=0.66)).predict(trace)
    assert without.device_ms == pytest.approx(2.68435456)
    assert faulting.device_ms == pytest.approx(2.68435456 + 21.12)
    assert TimeModel(CPU, replace(PLAIN, page_fault_ms_per_mib=0.66)).op_device_ms(trace) == pytest.approx(
        [2.68435456 + 21.12]
    )
    # the GPUs' defaults price no pages (their caching allocator keeps its blocks); the CPU's the measured rate
    assert DEFAULT_CONSTANTS["cuda"].page_fault_ms_per_mib == 0.0
    assert DEFAULT_CONSTANTS["cpu"].page_fault_ms_per_mib == 0.66
    gpu = TimeModel.default(GPU).predict(trace)
    assert gpu.device_ms == pytest.approx(TimeModel(GPU, replace(DEFAULT_CONSTANTS["cuda"])).predict(trace).device_ms)
    small = StepTrace([OpCost("sqrt", OpClass.ELEMENTWISE, Phase.FORWARD, 0, 64 * MIB, "float32", 1, 16 * MIB)])
    assert TimeModel(CPU, replace(PLAIN, page_fault_ms_per_mib=0.66)).predict(small).device_ms == pytest.approx(
        2.68435456
    )


def test_a_saved_time_model_without_the_page_cost_loads_with_its_kinds_default() -> None:
    saved = TimeModel.default(CPU).to_dict()
    del saved["constants"]["page_fault_ms_per_mib"]  # as a time model saved before it was priced
    assert TimeModel.from_dict(saved).constants.page_fault_ms_per_mib == 0.66
    gpu = TimeModel.default(GPU).to_dict()
    del gpu["constants"]["page_fault_ms_per_mib"]
    assert TimeModel.from_dict(gpu).constants.page_fault_ms_per_mib == 0.0
    assert "page_fault_ms_per_mib" in asdict(TimeModel.default(CPU).constants)


def test_a_trace_between_two_batch_sizes_has_its_fresh_bytes_on_the_line() -> None:
    """Composed fits price a batch nobody traced from two that were: its new outputs grow with the batch too."""
    from layerprof.predict.compose import trace_at_batch

    def at(batch: int) -> StepTrace:
        return StepTrace([OpCost("mm", OpClass.GEMM, Phase.FORWARD, batch, batch * 10, "float32", 1, batch * MIB)])

    (middle,) = trace_at_batch({(8, 1): at(8), (16, 1): at(16)}, 1, 12).ops
    assert (middle.flops, middle.bytes_moved, middle.fresh_bytes) == (12, 120, 12 * MIB)


def test_the_view_matmul_returns_is_no_kernel_and_no_new_output() -> None:
    """A batched matmul's result comes back through `_unsafe_view` (a view whose schema does not say so): it must
    neither move bytes nor fault pages (a language model's 98 MiB logits were priced twice)."""
    x, w = torch.ones(2, 3, 4), torch.ones(4, 5)
    with OpRecorder() as recorder:
        torch.matmul(x, w)
    views = [op for op in recorder.ops if op.name == "_unsafe_view"]
    assert views and all(op.kernels == 0 and op.bytes_moved == 0 and op.fresh_bytes == 0 for op in views)
    (product,) = [op for op in recorder.ops if op.kernels]
    assert product.name == "mm" and product.fresh_bytes == 2 * 3 * 5 * 4
