"""FLOPs, the live-tensor tracker, the stopping rule, and cells that do not depend on each other."""

from __future__ import annotations

import statistics

import pytest
import torch

from layerprof.measure.cells import CellContext, run_cell
from layerprof.measure.instruments import TimingStats, median_confidence_interval, time_window
from layerprof.profile import MemoryCategory, SweepSettings
from layerprof.sources.models import LoadedModel
from layerprof.sources.workloads import Workload
from tests.conftest import linear_stack

WIDTH, DEPTH, BATCH = 256, 4, 4
WEIGHT_BYTES = WIDTH * WIDTH * 4


def stack_model() -> LoadedModel:
    workload = Workload(family="tensor-input", input_shape=(WIDTH,))
    return LoadedModel("stack", "user", "stack", linear_stack(WIDTH, DEPTH), workload, (), {})


def settings(*zs: int) -> SweepSettings:
    return SweepSettings(batch_sizes=(BATCH,), trainable_layer_counts=zs, warmup_steps=1, min_steps=1, max_steps=2)


@pytest.fixture(scope="module")
def stack_rows() -> dict[int, object]:
    loaded = stack_model()
    layers = loaded.split()
    cpu = torch.device("cpu")
    return {z: run_cell(CellContext(loaded, layers, settings(z), cpu), BATCH, z)[0] for z in range(1, DEPTH + 1)}


def test_linear_stack_flops_match_the_analytic_count(stack_rows: dict) -> None:
    matmul = 2 * BATCH * WIDTH * WIDTH  # FLOPs of one (B x d) @ (d x d)
    for z, row in stack_rows.items():
        assert row.forward_flops == DEPTH * matmul
        # a weight gradient for each trainable layer, an input gradient for each one above the first trainable
        assert row.backward_flops == (2 * z - 1) * matmul
        assert row.flops == row.forward_flops + row.backward_flops


def _conv_flops(layer: torch.nn.Module, input_requires_grad: bool) -> tuple[int, int]:
    """Forward and backward FLOPs of one layer on a 2x8x10x10 input."""
    from layerprof.measure.instruments import flop_counter

    x = torch.randn(2, 8, 10, 10, requires_grad=input_requires_grad)
    with flop_counter() as forward:
        out = layer(x)
    with flop_counter() as backward:
        out.sum().backward()
    return int(forward.get_total_flops()), int(backward.get_total_flops())


def test_depthwise_and_grouped_convolution_flops_match_the_analytic_count() -> None:
    # 2 * N * H_out * W_out * C_out * (C_in / groups) * k * k, for N=2, 10x10 outputs, 3x3 kernels
    depthwise = 2 * 2 * 100 * 8 * 1 * 9  # 8 -> 8 channels, groups=8: 28,800
    grouped = 2 * 2 * 100 * 16 * 2 * 9  # 8 -> 16 channels, groups=4: 115,200
    dense = 2 * 2 * 100 * 16 * 8 * 9  # 8 -> 16 channels, groups=1: 460,800
    for layer, forward in (
        (torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), depthwise),
        (torch.nn.Conv2d(8, 16, 3, padding=1, groups=4, bias=True), grouped),
        (torch.nn.ConvTranspose2d(8, 16, 3, padding=1, groups=4, bias=False), grouped),
        (torch.nn.Conv2d(8, 16, 3, padding=1, bias=False), dense),
    ):
        # the input gradient and the weight gradient each cost one forward; the first layer has no input gradient
        assert _conv_flops(layer, input_requires_grad=True) == (forward, 2 * forward), layer
        assert _conv_flops(layer, input_requires_grad=False) == (forward, forward), layer
    assert (depthwise, grouped) == (28_800, 115_200)


def test_convolution_stack_flops_per_z_count_groups() -> None:
    """A 1x1 stem, a depthwise and a grouped convolution (MobileNet/EfficientNet's pattern) through a cell."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(4, 8, 1, bias=False),  # 2*2*100*8*4 = 12,800
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),  # 28,800
        torch.nn.Conv2d(8, 16, 3, padding=1, groups=4, bias=False),  # 115,200
    )
    workload = Workload(family="tensor-input", input_shape=(4, 10, 10))
    loaded = LoadedModel("convs", "user", "convs", model, workload, (), {})
    layers = loaded.split()
    rows = {z: run_cell(CellContext(loaded, layers, settings(z), torch.device("cpu")), 2, z)[0] for z in (1, 2, 3)}
    assert {row.forward_flops for row in rows.values()} == {156_800}
    assert rows[1].backward_flops == 115_200  # the grouped layer's weight gradient
    assert rows[2].backward_flops == 28_800 + 2 * 115_200  # + the depthwise weight gradient, grouped input gradient
    assert rows[3].backward_flops == 12_800 + 2 * 28_800 + 2 * 115_200


def test_backward_flops_rise_with_z(stack_rows: dict) -> None:
    backward = [stack_rows[z].backward_flops for z in sorted(stack_rows)]
    assert backward == sorted(backward) and len(set(backward)) == len(backward)


def test_tracker_categories_match_adamw_arithmetic(stack_rows: dict) -> None:
    for z, row in stack_rows.items():
        assert row.memory_source == "cpu-tensor-tracker"
        assert row.memory_parameters_bytes == DEPTH * WEIGHT_BYTES  # frozen weights stay in memory
        # AdamW: exp_avg and exp_avg_sq per trainable weight, plus a 4-byte step counter each
        assert row.memory_optimizer_state_bytes == 2 * z * WEIGHT_BYTES + 4 * z
        assert row.optimizer_state_bytes == row.memory_optimizer_state_bytes
        assert row.memory_gradients_bytes == z * WEIGHT_BYTES  # the peak falls in the optimizer step
        assert row.memory_inputs_bytes == BATCH * WIDTH * 4


def test_tracker_peak_matches_analytic_figure_within_optimizer_temporaries(stack_rows: dict) -> None:
    # parameters + gradients + Adam state + the batch must all be live in the optimizer step; on top the
    # single-tensor AdamW keeps at most three weight-sized temporaries. Stated tolerance: 3 weights.
    for z, row in stack_rows.items():
        analytic = DEPTH * WEIGHT_BYTES + 3 * z * WEIGHT_BYTES + 4 * z + BATCH * WIDTH * 4
        assert analytic <= row.peak_memory_bytes <= analytic + 3 * WEIGHT_BYTES
        assert row.peak_memory_bytes == sum(row.memory(category) for category in MemoryCategory)
        # the peak falls in the optimizer step: its temporaries, not the forward's activations
        assert 0 < row.memory_optimizer_temporaries_bytes <= 3 * WEIGHT_BYTES
        assert row.peak_activations_bytes >= BATCH * WIDTH * 4 * (DEPTH - 1)  # the forward saved its outputs


def test_tracker_peak_is_monotone_in_z(stack_rows: dict) -> None:
    peaks = [stack_rows[z].peak_memory_bytes for z in sorted(stack_rows)]
    assert peaks == sorted(peaks)


def test_cell_figures_do_not_depend_on_the_cells_before() -> None:
    loaded = stack_model()
    layers = loaded.split()
    device = torch.device("cpu")
    forward = {z: run_cell(CellContext(loaded, layers, settings(z), device), BATCH, z)[0] for z in (1, 3, 4)}
    backward = {z: run_cell(CellContext(loaded, layers, settings(z), device), BATCH, z)[0] for z in (4, 3, 1)}
    for z in forward:
        for field in ("peak_memory_bytes", "memory_gradients_bytes", "optimizer_state_bytes", "flops"):
            assert getattr(forward[z], field) == getattr(backward[z], field), (z, field)
    assert all(p.grad is None for p in loaded.model.parameters())


def test_resnet_tracker_peak_monotone_and_batchnorm_batch_one_is_an_error_cell() -> None:
    from layerprof.sources.models import build_model

    loaded = build_model("paper-resnet18-cifar100")
    layers = loaded.split()
    device = torch.device("cpu")
    peaks = [run_cell(CellContext(loaded, layers, settings(z), device), 2, z)[0].peak_memory_bytes for z in (1, 6, 11)]
    assert peaks == sorted(peaks) and peaks[0] < peaks[-1]
    row, _ = run_cell(CellContext(loaded, layers, settings(11), device), 1, 11)
    assert row.status == "error"
    assert "Expected more than 1 value per channel" in row.message
    assert "\n" not in row.message


def test_median_confidence_interval_uses_order_statistics() -> None:
    samples = [float(v) for v in range(1, 101)]
    low, high = median_confidence_interval(samples)
    # n = 100: ranks floor(50 - 9.8) = 40 and ceil(51 + 9.8) = 61 (1-based)
    assert (low, high) == (40.0, 61.0)
    assert median_confidence_interval([5.0]) == (5.0, 5.0)


class ScriptedClock:
    """Stands in for `time` inside layerprof.measure.instruments: each step lasts the next scripted number of ms."""

    def __init__(self, durations_ms: list[float]) -> None:
        self.now = 0.0
        self.durations = iter(durations_ms)
        self.in_step = False

    def perf_counter(self) -> float:
        if self.in_step:
            self.now += next(self.durations) / 1000
        self.in_step = not self.in_step
        return self.now


def test_a_cpu_window_times_each_step_and_has_no_host_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import layerprof.measure.instruments as measure

    calls = []
    monkeypatch.setattr(measure, "time", ScriptedClock([5.0, 1.0, 3.0] * 10))
    times = time_window(lambda: calls.append(1), torch.device("cpu"), 5)
    assert times.step_ms == pytest.approx([5.0, 1.0, 3.0, 5.0, 1.0]) and len(calls) == 5
    assert times.host_ms == [] and times.host_bound is None  # the CPU has no separate device to wait for


def test_timing_stats_summary() -> None:
    stats = TimingStats.from_samples([4.0, 1.0, 3.0, 2.0, 5.0])
    assert stats.median_ms == 3.0 and stats.count == 5
    assert stats.mean_ms == 3.0 and stats.std_ms == pytest.approx(statistics.stdev([1, 2, 3, 4, 5]))
    assert stats.p10_ms == pytest.approx(1.4) and stats.p90_ms == pytest.approx(4.6)


# ---------------------------------------------------------------- CUDA timing windows on a scripted GPU


class ScriptedGpu:
    """A GPU on a scripted clock, as strict as CUDA: work queued by the host runs after what is queued before it;
    an event completes when the queue reaches it; a stream or event synchronise moves the host's clock to it; and
    `elapsed_time` refuses events not created with timing, not recorded, or not yet completed."""

    def __init__(self) -> None:
        self.clock_s = 0.0
        self.queue_ends_s = 0.0

    def launch(self, host_s: float, device_s: float) -> None:
        self.clock_s += host_s
        self.queue_ends_s = max(self.queue_ends_s, self.clock_s) + device_s

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from types import SimpleNamespace

        import layerprof.measure.instruments as measure

        gpu = self

        class Event:
            def __init__(self, enable_timing: bool = False) -> None:
                self.timing = enable_timing
                self.at_s: float | None = None

            def record(self, stream: object = None) -> None:
                self.at_s = max(gpu.clock_s, gpu.queue_ends_s)

            def synchronize(self) -> None:
                if self.at_s is not None:
                    gpu.clock_s = max(gpu.clock_s, self.at_s)

            def elapsed_time(self, other: Event) -> float:
                for event in (self, other):
                    if not event.timing or event.at_s is None or event.at_s > gpu.clock_s:
                        raise RuntimeError("CUDA error: device not ready")
                return (other.at_s - self.at_s) * 1000.0

        def synchronize_stream() -> None:
            gpu.clock_s = max(gpu.clock_s, gpu.queue_ends_s)

        monkeypatch.setattr(measure.time, "perf_counter", lambda: gpu.clock_s)
        monkeypatch.setattr(measure.torch.cuda, "Event", Event)
        monkeypatch.setattr(
            measure.torch.cuda, "current_stream", lambda device=None: SimpleNamespace(synchronize=synchronize_stream)
        )


def test_a_cuda_window_waits_for_the_queue_before_it_and_times_each_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from layerprof.measure.instruments import time_window

    gpu = ScriptedGpu()
    gpu.install(monkeypatch)
    gpu.launch(0.0, 0.050)  # 50 ms of earlier work still queued (a warm-up step)
    host_s, device_s = iter([0.001, 0.002, 0.003]), iter([0.005, 0.007, 0.009])
    times = time_window(lambda: gpu.launch(next(host_s), next(device_s)), torch.device("cuda"), 3)
    # the window starts on an idle queue at 50 ms: the first step waits for its own 1 ms launch
    assert times.step_ms == pytest.approx([6.0, 7.0, 9.0])
    assert times.host_ms == pytest.approx([1.0])  # the first step's launch, not the second's (2 ms)
    assert gpu.clock_s == pytest.approx(0.072)  # the host waited for the last step: 50 + 1 + 5 + 7 + 9 ms


def test_host_bound_starts_at_nine_tenths_of_the_step() -> None:
    from layerprof.measure.instruments import StepTimes

    assert StepTimes([20.0, 20.0], [18.0]).host_bound is True  # exactly 0.9 of the step
    assert StepTimes([20.0, 20.0], [17.9]).host_bound is False


def test_the_reference_workload_is_eight_384_products_timed_three_times(monkeypatch: pytest.MonkeyPatch) -> None:
    import layerprof.measure.instruments as measure

    shapes = []
    real_mm = torch.mm

    def counted_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        shapes.append((tuple(a.shape), tuple(b.shape)))
        return real_mm(a, b)

    monkeypatch.setattr(measure.torch, "mm", counted_mm)
    monkeypatch.setattr(measure, "time", ScriptedClock([3.0, 1.0, 2.0, 100.0]))
    assert measure.reference_workload_ms(torch.device("cpu")) == 2.0  # the median of 3, 1 and 2 ms
    assert shapes == [((384, 384), (384, 384))] * 32  # one untimed run and three timed ones, 8 products each


# ---------------------------------------------------------------- the tracker and the recorder on hand-sized steps


def test_the_tracker_counts_a_bias_free_linear_step_by_category() -> None:
    from layerprof.measure.instruments import LiveTensorTracker

    model = torch.nn.Linear(4, 3, bias=False)  # 12 float32 weights: 48 bytes
    x = torch.ones(2, 4)  # 32 bytes
    tracker = LiveTensorTracker()
    tracker.register(model.parameters(), MemoryCategory.PARAMETERS)
    tracker.register([x], MemoryCategory.INPUTS)
    tracker.watch_gradients(model.parameters())
    with tracker:
        model(x).sum().backward()
    assert tracker.live[MemoryCategory.GRADIENTS] == 48 and tracker.category_peaks[MemoryCategory.GRADIENTS] == 48
    assert tracker.at_peak[MemoryCategory.PARAMETERS] == 48 and tracker.at_peak[MemoryCategory.INPUTS] == 32
    assert tracker.live[MemoryCategory.ACTIVATIONS] == 0  # every temporary was freed
    # the gradient hook is gone with the tracker: a later (timed) step runs without it
    assert not model.weight._post_accumulate_grad_hooks


def test_an_empty_step_peaks_at_nothing_and_the_first_peak_keeps_its_split() -> None:
    from layerprof.measure.instruments import LiveTensorTracker

    assert LiveTensorTracker().peak == 0
    tracker = LiveTensorTracker()
    first = torch.ones(25)  # 100 bytes
    tracker.register([first], MemoryCategory.INPUTS)
    del first  # released: back to 0 bytes live
    tracker.register([torch.ones(25)], MemoryCategory.PARAMETERS)  # the same 100 bytes again: no new peak
    assert tracker.peak == 100 and tracker.at_peak[MemoryCategory.INPUTS] == 100
    assert tracker.at_peak[MemoryCategory.PARAMETERS] == 0


@pytest.mark.parametrize(
    ("name", "op_class"),
    [
        ("mm", "gemm"), ("addmm", "gemm"), ("bmm", "gemm"), ("convolution", "conv"), ("convolution_backward", "conv"),
        ("_scaled_dot_product_flash_attention", "attention"), ("_flash_attention_forward", "attention"),
        ("_efficient_attention_forward", "attention"), ("_scaled_dot_product_efficient_attention", "attention"),
        ("add", "elementwise"), ("native_layer_norm", "norm"), ("embedding", "movement"),
    ],
)  # fmt: skip
def test_operations_are_classed_by_what_bounds_their_kernel(name: str, op_class: str) -> None:
    from layerprof.measure.instruments import op_class as classify

    assert classify(name).value == op_class


def test_the_recorder_leaves_nothing_behind_and_records_each_ops_compute_dtype() -> None:
    from layerprof.measure.instruments import OpRecorder

    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    recorder = OpRecorder()
    with recorder:
        torch.zeros(4, dtype=torch.bfloat16)  # no tensor input: the dtype it makes
        torch.ones(2, 4).to(torch.bfloat16)  # a cast computes in its input's dtype
        model(torch.ones(2, 4)).t()
    calls = recorder.trace.module_calls
    assert calls == 2  # the Sequential and its Linear
    model(torch.ones(2, 4))  # after the recorder: not counted
    assert recorder.trace.module_calls == calls
    by_name = {op.name: op for op in recorder.ops}
    assert by_name["zeros"].dtype == "bfloat16"
    assert by_name["_to_copy"].dtype == "float32"
    assert (by_name["t"].kernels, by_name["t"].bytes_moved) == (0, 0)  # a view launches and moves nothing
    assert by_name["addmm"].bytes_moved == 4 * (4 + 2 * 4 + 4 * 4 + 2 * 4)  # bias, input, weight, output
    assert by_name["addmm"].kernels == 1


def test_a_foreach_op_within_one_chunk_launches_one_kernel() -> None:
    from layerprof.measure.instruments import OpRecorder

    recorder = OpRecorder()
    with recorder:
        torch._foreach_add_([torch.zeros(2) for _ in range(3)], 1.0)  # 3 tensors: under 110 a kernel
        torch._foreach_add_([torch.zeros(2) for _ in range(64)], [torch.ones(2) for _ in range(64)])  # 64 a kernel
        torch._foreach_add_([torch.zeros(2) for _ in range(65)], [torch.ones(2) for _ in range(65)])
    assert [op.kernels for op in recorder.ops if op.name == "_foreach_add_"] == [1, 1, 2]


def test_the_allocator_peaks_come_from_its_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    from layerprof.measure.instruments import cuda_peaks, reset_cuda_peaks

    calls = []
    stats = {"allocated_bytes.all.peak": 3072, "reserved_bytes.all.peak": 4096, "num_alloc_retries": 5}
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("synchronize"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "memory_stats", lambda device=None: dict(stats))
    device = torch.device("cuda")
    assert reset_cuda_peaks(device) == 5 and calls == ["synchronize", "reset"]
    stats["num_alloc_retries"] = 7
    peaks = cuda_peaks(device, retries_before=5)
    assert (peaks.allocated_bytes, peaks.reserved_bytes, peaks.requested_bytes, peaks.alloc_retries) == (
        3072, 4096, None, 2,
    )  # fmt: skip
    assert calls == ["synchronize", "reset", "synchronize"]  # the peaks wait for the queued work
    stats["requested_bytes.all.peak"] = 3000
    assert cuda_peaks(device).requested_bytes == 3000 and cuda_peaks(device).alloc_retries == 7


def test_the_cuda_reference_workload_is_eight_4096_products(monkeypatch: pytest.MonkeyPatch) -> None:
    import layerprof.measure.instruments as measure

    gpu = ScriptedGpu()
    gpu.install(monkeypatch)
    made, products = [], []
    monkeypatch.setattr(measure.torch, "ones", lambda *size, device=None: made.append((size, device.type)) or "a")
    monkeypatch.setattr(measure.torch, "mm", lambda a, b: products.append(1) or gpu.launch(0.0, 0.001))
    assert measure.reference_workload_ms(torch.device("cuda")) == pytest.approx(8.0)  # 8 products of 1 ms
    assert made == [((4096, 4096), "cuda")] and len(products) == 32


def test_a_fresh_allocator_without_statistics_has_retried_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from layerprof.measure.instruments import cuda_peaks, reset_cuda_peaks

    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "memory_stats", lambda device=None: {})  # before the first allocation
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 512)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 2048)
    device = torch.device("cuda")
    assert reset_cuda_peaks(device) == 0
    peaks = cuda_peaks(device)
    assert (peaks.allocated_bytes, peaks.reserved_bytes, peaks.requested_bytes, peaks.alloc_retries) == (
        512, 2048, None, 0,
    )  # fmt: skip


def test_an_operations_tensors_are_pytrees_tensor_leaves_in_the_same_order() -> None:
    """`op_tensors` (the recorder's and the tracker's walk of each aten op's arguments and results) finds what
    pytree's flatten finds, in its order: the first float tensor names an op's dtype, the first input of a gather
    is the table it reads rows of."""
    from torch.utils._pytree import tree_flatten

    from layerprof.measure.instruments import op_tensors

    a, b, c, d = (torch.zeros(n) for n in range(1, 5))
    index = torch.zeros(2, dtype=torch.long)
    values = [
        a,
        ((a, 3, [b, None, (c,)]), {"out": d, "alpha": 1.0}),
        ([index, a], {}),
        torch.Size([2, 3]),
        (1, "x", None),
        {"second": b, "first": {"inner": [c, a]}},
    ]
    for value in values:
        expected = [leaf for leaf in tree_flatten(value)[0] if isinstance(leaf, torch.Tensor)]
        found = op_tensors(value)
        assert len(found) == len(expected) and all(x is y for x, y in zip(found, expected, strict=True)), value
    assert [t.numel() for t in op_tensors(values[1])] == [1, 2, 3, 4]


def test_a_fake_tensors_device_is_answered_above_the_fake_mode_and_nothing_is_recorded() -> None:
    """prim.device (72% of a fake step's dispatches: autograd and the optimizer asking) is answered by the recorder
    and the tracker as FakeTensorMode answers it, without passing it down: no operation, no allocation."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from layerprof.measure.instruments import LiveTensorTracker, OpRecorder

    with FakeTensorMode():
        weight = torch.zeros(4, 4, requires_grad=True)
        tracker, recorder = LiveTensorTracker(), OpRecorder()
        with tracker, recorder:
            asked = torch.ops.prim.device.default(weight)
            (weight * 2).sum().backward()  # autograd asks for devices too
    assert asked == torch.device("cpu") and weight.grad is not None and weight.grad.device == torch.device("cpu")
    assert "device" not in {op.name for op in recorder.ops}
    assert [op.name for op in recorder.ops][:2] == ["mul", "sum"]
