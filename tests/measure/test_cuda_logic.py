"""The CUDA path's logic that runs without a GPU: allocator blocks, workspaces, NVML lookup by UUID, failure
classes, numeric settings, the device choice, and `pytest -m gpu` refusing to pass by skipping."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.devices import MIB, AllocatorConfig, MatmulThreads, cublas_workspace_bytes, cuda_block_bytes
from layerprof.errors import DeviceFailure, DeviceWarning, LayerprofError
from layerprof.measure.instruments import StepTimes, is_out_of_memory, is_sticky_cuda_error
from layerprof.measure.nvml import handle_for_uuid, measure_process_memory, process_memory
from layerprof.profile import load_profile
from tests.cli.test_cli import assert_one_line_error


@pytest.mark.parametrize(
    ("requested", "block"),
    [
        (0, 0),
        (1, 512),
        (512, 512),
        (513, 1024),
        (MIB, MIB),  # the small pool's largest request
        (5 * MIB + 7, 5 * MIB + 512),  # from a 20 MiB segment: far more than 1 MiB left, split
        (int(10.9 * MIB), -(-int(10.9 * MIB) // 512) * 512),  # 12 MiB segment, 1.1 MiB left: split
        (11 * MIB, 12 * MIB),  # exactly 1 MiB would remain: the whole block
        (int(11.5 * MIB), 12 * MIB),
        (int(19.6 * MIB), 20 * MIB),
        (int(21.5 * MIB), 22 * MIB),
        (32 * MIB, 32 * MIB),
    ],
)
def test_cuda_block_rules(requested: int, block: int) -> None:
    assert cuda_block_bytes(requested) == block


def test_cublas_workspaces_follow_the_architecture_and_the_environment() -> None:
    one_thread = MatmulThreads(forward=True, forward_lt=True)
    hopper, ampere = cublas_workspace_bytes((9, 0), {}), cublas_workspace_bytes((8, 0), {})
    assert hopper == 32 * MIB + MIB  # :4096:8 for cuBLAS, 1 MiB for cuBLASLt
    assert ampere == 4096 * 1024 * 2 + 16 * 1024 * 8 + MIB  # :4096:2:16:8
    # cuBLASLt's workspace is capped at cuBLAS's: 128 KiB each
    assert cublas_workspace_bytes((9, 0), {"CUBLAS_WORKSPACE_CONFIG": ":16:8"}) == 2 * 128 * 1024
    assert cublas_workspace_bytes((8, 0), {"CUBLASLT_WORKSPACE_SIZE": "4096"}) == ampere - MIB + 4 * MIB
    assert cublas_workspace_bytes((9, 0), {"CUBLASLT_WORKSPACE_SIZE": "65536"}) == 64 * MIB  # capped at 32 MiB
    assert cublas_workspace_bytes((9, 0), {"TORCH_CUBLASLT_UNIFIED_WORKSPACE": "1"}) == 32 * MIB  # shared
    assert cublas_workspace_bytes((9, 0), {}, one_thread) == hopper
    # autograd's backward thread has its own handle and so its own workspaces; plain products need no cuBLASLt
    both = MatmulThreads(forward=True, forward_lt=True, backward=True)
    assert cublas_workspace_bytes((9, 0), {}, both) == 32 * MIB + MIB + 32 * MIB
    assert cublas_workspace_bytes((9, 0), {}, MatmulThreads(backward=True)) == 32 * MIB
    assert cublas_workspace_bytes((9, 0), {}, MatmulThreads(forward=True)) == 32 * MIB
    assert cublas_workspace_bytes((9, 0), {}, MatmulThreads()) == 0
    # the workspaces are allocator blocks too: 8 MiB + 128 KiB comes from a 20 MiB segment and is split off
    assert cublas_workspace_bytes((8, 9), {}, MatmulThreads(forward=True)) == 8 * MIB + 128 * 1024


@pytest.mark.parametrize(
    ("conf", "requested", "block"),
    [
        ("expandable_segments:True", 11 * MIB, 11 * MIB),  # split whatever remains: no whole 12 MiB block
        ("expandable_segments:True", 5 * MIB + 7, 5 * MIB + 512),
        ("expandable_segments:False", 11 * MIB, 12 * MIB),
        ("max_split_size_mb:64", 5 * MIB, 5 * MIB),  # below max_split_size: split off a 20 MiB segment
        ("max_split_size_mb:128", 100 * MIB + 1, 100 * MIB + 512),  # 2 MiB-rounded segment, 1.99 MiB left: split
        ("max_split_size_mb:64", 100 * MIB + 1, 102 * MIB),  # the same request at or above it: never split
        ("max_split_size_mb:64,expandable_segments:False", 101 * MIB, 102 * MIB),
        ("max_split_size_mb:64", 64 * MIB + 512, 66 * MIB),
        ("roundup_power2_divisions:4", 1200 * 1024, 1280 * 1024),  # 1 MiB..2 MiB in quarters
        ("roundup_power2_divisions:4", 2 * MIB, 2 * MIB),  # a power of two stays
        ("roundup_power2_divisions:4", 1000, 1024),  # at most 512 * divisions: plain rounding
        ("roundup_power2_divisions:[256:1,512:2,>:8]", 5 * MIB + 1, 5 * MIB + 512),  # one division here: plain
        ("roundup_power2_divisions:[256:1,512:2,>:8]", 600 * MIB, 768 * MIB),  # 512..1024 MiB in halves
        ("roundup_power2_divisions:[256:1,512:2,>:8]", 1100 * MIB, 1152 * MIB),  # above: eighths
        ("garbage_collection_threshold:0.6", 11 * MIB, 12 * MIB),  # settings of reuse change no fresh block
        ("", 11 * MIB, 12 * MIB),
    ],
)
def test_allocator_settings_change_the_blocks(conf: str, requested: int, block: int) -> None:
    config = AllocatorConfig.from_environment({"PYTORCH_CUDA_ALLOC_CONF": conf})
    assert config.block_bytes(requested) == block
    assert AllocatorConfig.from_environment({"PYTORCH_ALLOC_CONF": conf}).block_bytes(requested) == block


def test_a_malformed_allocator_setting_is_an_input_error() -> None:
    with pytest.raises(LayerprofError, match="cannot read max_split_size_mb:lots"):
        AllocatorConfig.parse("max_split_size_mb:lots")


class FakeNvml:
    """Stands in for pynvml: devices by UUID, each with its compute processes (pid, used bytes)."""

    def __init__(self, processes: dict[str, list[tuple[int, int | None]]] | None = None, fail: bool = False):
        self.processes = processes or {}
        self.fail = fail

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:  # noqa: N802 - pynvml's name
        if uuid not in self.processes:
            raise RuntimeError("NVMLError_NotFound")
        return uuid

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list:  # noqa: N802
        if self.fail:
            raise RuntimeError("NVMLError_NoPermission")
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self.processes[handle]]


UUID = "6a3c2f10-1b2c-4d5e-8f90-123456789abc"


def test_nvml_handle_is_found_by_uuid_in_any_spelling() -> None:
    gpu = FakeNvml({f"GPU-{UUID}": []})
    assert handle_for_uuid(gpu, UUID) == f"GPU-{UUID}"  # torch's bare UUID
    assert handle_for_uuid(gpu, f"GPU-{UUID}") == f"GPU-{UUID}"
    mig = FakeNvml({f"MIG-{UUID}": []})
    assert handle_for_uuid(mig, UUID) == f"MIG-{UUID}"  # a MIG slice's UUID
    with pytest.raises(RuntimeError, match=f"no device with UUID {UUID}"):
        handle_for_uuid(FakeNvml({"GPU-other": []}), UUID)


def test_process_memory_says_why_it_is_missing() -> None:
    handle = f"GPU-{UUID}"
    assert process_memory(FakeNvml({handle: [(11, 5), (42, 7 * MIB)]}), handle, pid=42) == (7 * MIB, None)
    bytes_, note = process_memory(FakeNvml({handle: [(11, 5)]}), handle, pid=42)
    assert bytes_ is None and "not pid 42" in note and "pid namespace" in note
    bytes_, note = process_memory(FakeNvml({handle: [(42, None)]}), handle, pid=42, mig=True)
    assert bytes_ is None and "MIG" in note
    bytes_, note = process_memory(FakeNvml({handle: []}), handle, pid=42)
    assert bytes_ is None and "no process" in note
    bytes_, note = process_memory(FakeNvml({handle: []}, fail=True), handle, pid=42)
    assert bytes_ is None and "NoPermission" in note


def test_without_a_uuid_or_nvml_the_reason_is_recorded() -> None:
    missing = measure_process_memory(None)
    assert missing.process_bytes is None and "UUID is unknown" in missing.note


@pytest.mark.parametrize(
    ("message", "oom", "sticky"),
    [
        ("CUDA out of memory. Tried to allocate 2.00 GiB", True, False),
        ("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`", True, False),
        ("cuDNN error: CUDNN_STATUS_ALLOC_FAILED", True, False),
        ("CUDA error: an illegal memory access was encountered", False, True),
        ("CUDA error: device-side assert triggered", False, True),
        ("CUDA error: unspecified launch failure", False, True),
        ("Expected more than 1 value per channel when training", False, False),
    ],
)
def test_failures_are_classified(message: str, oom: bool, sticky: bool) -> None:
    assert is_out_of_memory(RuntimeError(message)) == oom
    assert is_sticky_cuda_error(RuntimeError(message)) == sticky


STICKY_FACTORY = """
import torch
from torch import nn
from layerprof import CustomWorkload

def make():
    model = nn.Sequential(*(nn.Linear(8, 8) for _ in range(3)))

    def make_batch(batch_size, device):
        return torch.randn(batch_size, 8, device=device)

    def loss(model, batch):
        if sum(p.requires_grad for p in model.parameters()) >= 4:  # z >= 2
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return model(batch).pow(2).mean()

    return CustomWorkload(model=model, make_batch=make_batch, loss=loss)
"""


def test_a_sticky_device_error_stops_the_sweep_and_keeps_the_rows(tmp_path: Path) -> None:
    factory = tmp_path / "sticky.py"
    factory.write_text(textwrap.dedent(STICKY_FACTORY))
    out = tmp_path / "sticky.json"
    args = ["profile", f"{factory}:make", "--batch-sizes", "2", "--warmup", "1", "--min-steps", "1", "--steps", "1"]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert_one_line_error(result, "the GPU cannot run anything more", "batch 2, z=2", exit_code=1)
    profile = load_profile(out)
    # the cell the error hit and those after it are left unfinished: the same command in a new process resumes
    assert not profile.complete and [(row.trainable_layers, row.status) for row in profile.rows][0] == (1, "ok")
    assert profile.unfinished_cells() == [(2, z) for z in range(2, profile.layer_count + 1)]
    assert DeviceFailure.exit_code == 1 and issubclass(DeviceFailure, LayerprofError)


def test_numeric_settings_are_recorded_set_and_compared(tmp_path: Path) -> None:
    from layerprof.measure.environment import apply_tf32, describe_environment, numeric_settings
    from layerprof.outputs.check import UnusableInput, compare

    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    try:
        apply_tf32(True)
        assert numeric_settings()["matmul_tf32"] and numeric_settings()["cudnn_conv_tf32"]
        with_tf32 = describe_environment(torch.device("cpu"))
        apply_tf32(False)
        settings = numeric_settings()
        assert settings["float32_matmul_precision"] == "highest" and not settings["cudnn_conv_tf32"]
        apply_tf32(None)  # PyTorch's defaults stay as they are
        assert numeric_settings() == settings
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]
    from tests.outputs.test_check import measured_like_profile

    current, baseline = measured_like_profile(), measured_like_profile()
    current.environment.numerics, baseline.environment.numerics = with_tf32.numerics, settings
    with pytest.raises(UnusableInput, match="different numeric settings: cudnn_conv_tf32"):
        compare(current, baseline)
    baseline.environment.numerics = dict(with_tf32.numerics)
    assert compare(current, baseline).exit_code == 0


def test_environment_records_the_variables_that_change_speed(monkeypatch: pytest.MonkeyPatch) -> None:
    from layerprof.measure.environment import describe_environment

    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    environment = describe_environment(torch.device("cpu"))
    assert environment.variables["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert environment.variables["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert environment.to_dict()["numerics"]["float32_matmul_precision"] == torch.get_float32_matmul_precision()


def test_auto_warns_when_the_driver_shows_a_gpu_torch_cannot_use(monkeypatch: pytest.MonkeyPatch) -> None:
    import layerprof.measure.environment as environment

    monkeypatch.setattr(environment.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(environment.torch.version, "cuda", "13.0")
    monkeypatch.setattr(environment, "gpus_the_driver_sees", lambda: 1)
    monkeypatch.setattr(
        environment, "driver_facts", lambda _uuid: {"driver_version": "550.54", "cuda_driver_version": "12.4"}
    )
    with pytest.warns(DeviceWarning, match="cannot use them: driver 550.54 supports CUDA up to 12.4"):
        assert environment.resolve_device("auto").type == "cpu"
    with pytest.raises(LayerprofError, match="--device cuda: the NVIDIA driver shows 1 GPU"):
        environment.resolve_device("cuda")
    monkeypatch.setattr(environment, "gpus_the_driver_sees", lambda: None)  # no driver at all: no warning
    assert environment.cuda_unusable_reason() is None


def test_pytest_m_gpu_fails_where_torch_cannot_use_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("needs CUDA to be missing")  # never reached on a CPU machine; see DECLARED_SKIP_REASONS
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests/measure/test_gpu.py"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode != 0
    assert "pytest -m gpu needs a GPU torch can use" in done.stdout + done.stderr


def test_host_bound_is_launch_time_against_step_time() -> None:
    assert StepTimes([10.0, 10.0, 10.0], [9.5, 9.2]).host_bound is True
    assert StepTimes([10.0, 10.0, 10.0], [2.0, 2.5]).host_bound is False
    assert StepTimes([10.0], []).host_bound is None


def test_estimate_models_the_cuda_workspaces_per_thread() -> None:
    from layerprof.predict.estimate import estimate_model
    from layerprof.profile import SweepSettings
    from layerprof.sources.models import ModelOptions

    example = str(Path(__file__).parents[2] / "examples" / "custom_model.py")
    options = ModelOptions(input_shape=(64,), num_classes=10)

    def estimate(target: str, gpu: str | None = None):
        settings = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(1, 8), target=target, target_gpu=gpu)
        return estimate_model(f"{example}:mlp", options, settings)

    hopper, l4, cpu = estimate("cuda"), estimate("cuda", "L4"), estimate("cpu")
    for z in (1, 8):
        # Linear layers with a bias: cuBLAS + cuBLASLt on the forward's thread; the weights' gradients are
        # plain products on autograd's thread, which holds a cuBLAS workspace of its own
        assert hopper.row(2, z).memory_workspace_bytes == 32 * MIB + MIB + 32 * MIB
        assert l4.row(2, z).memory_workspace_bytes == 2 * (8 * MIB + 128 * 1024) + MIB
        assert cpu.row(2, z).memory_workspace_bytes == 0
        row = hopper.row(2, z)
        assert row.peak_memory_bytes == row.tracked_peak_bytes + row.memory_workspace_bytes
    assert l4.environment.device_name == "estimate for L4" and l4.environment.total_memory_bytes == 23034 * MIB


NORM_HEAD = """
import torch
from torch import nn

def make():
    return nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16), nn.LayerNorm(16))
"""


def test_a_backward_without_matrix_products_holds_no_second_workspace(tmp_path: Path) -> None:
    from layerprof.predict.estimate import estimate_model
    from layerprof.profile import SweepSettings
    from layerprof.sources.models import ModelOptions

    factory = tmp_path / "norm_head.py"
    factory.write_text(NORM_HEAD)
    settings = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(1, 2), target="cuda")
    profile = estimate_model(f"{factory}:make", ModelOptions(input_shape=(16,)), settings)
    assert profile.row(2, 1).memory_workspace_bytes == 32 * MIB + MIB  # only the LayerNorm trains
    assert profile.row(2, 2).memory_workspace_bytes == 32 * MIB + MIB + 32 * MIB


def test_the_estimate_follows_the_allocator_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from layerprof.predict.estimate import allocation_size_for

    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "")
    assert allocation_size_for("cuda")(11 * MIB) == 12 * MIB
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    assert allocation_size_for("cuda")(11 * MIB) == 11 * MIB
    assert allocation_size_for("cpu")(11 * MIB) == 11 * MIB


# ---------------------------------------------------------------- CUDA timing and clean-up with faked CUDA calls


class FakeDevice:
    """A GPU on a scripted clock: work queued by the host runs after what is queued before it; synchronising
    advances the host's clock to the end of the queue. Events read the queue's clock."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock  # the host's perf_counter, in seconds
        self.queue_ends = 0.0

    def launch(self, host_s: float, device_s: float) -> None:
        self.clock[0] += host_s
        self.queue_ends = max(self.queue_ends, self.clock[0]) + device_s

    def synchronize(self) -> None:
        self.clock[0] = max(self.clock[0], self.queue_ends)


def fake_cuda(monkeypatch: pytest.MonkeyPatch, gpu: FakeDevice) -> None:
    import layerprof.measure.instruments as measure

    class Event:
        def __init__(self, enable_timing: bool = False) -> None:
            self.at: float | None = None

        def record(self, stream=None) -> None:  # noqa: ANN001
            self.at = max(gpu.clock[0], gpu.queue_ends)

        def synchronize(self) -> None:
            gpu.synchronize()

        def elapsed_time(self, other: Event) -> float:
            return (other.at - self.at) * 1000.0

    monkeypatch.setattr(measure.time, "perf_counter", lambda: gpu.clock[0])
    monkeypatch.setattr(measure.torch.cuda, "Event", Event)
    monkeypatch.setattr(
        measure.torch.cuda, "current_stream", lambda device=None: SimpleNamespace(synchronize=gpu.synchronize)
    )


def test_step_times_come_from_consecutive_events(monkeypatch: pytest.MonkeyPatch) -> None:
    from layerprof.measure.instruments import time_window

    gpu = FakeDevice([0.0])
    fake_cuda(monkeypatch, gpu)
    device_seconds = iter([0.005, 0.007, 0.009])
    times = time_window(lambda: gpu.launch(0.001, next(device_seconds)), torch.device("cuda"), 3)
    # launched onto an idle queue, the first step also waits for its own launch
    assert times.step_ms == pytest.approx([6.0, 7.0, 9.0])
    assert times.host_ms == pytest.approx([1.0])  # the first step's launch

    def probe() -> float:  # an untimed step that reports its launch and leaves the GPU busy
        gpu.launch(0.001, 0.005)
        return 0.25

    probed = time_window(lambda: gpu.launch(0.001, 0.005), torch.device("cuda"), 2, launch_ms=probe)
    assert probed.host_ms == [0.25] and probed.step_ms == pytest.approx([5.0, 5.0])


def test_a_gradient_scalers_synchronisation_is_not_host_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """16-mixed: the scaler reads its scale back on every step, so the host waits for the GPU inside the step. The
    launch time leaves that wait out; the step is GPU-bound, not host-bound."""
    from layerprof.measure.cells import Cell
    from layerprof.measure.instruments import HOST_BOUND_SHARE, time_window

    gpu = FakeDevice([0.0])
    fake_cuda(monkeypatch, gpu)

    class Loss:
        def backward(self) -> None:
            gpu.launch(0.002, 0.200)

    class Scaler:  # torch.amp.GradScaler's shape: step() reads found_inf on the host
        def scale(self, loss: Loss) -> Loss:
            return loss

        def step(self, optimizer) -> None:  # noqa: ANN001
            gpu.synchronize()
            gpu.launch(0.001, 0.010)

        def update(self) -> None:
            pass

    def loss(model, batch) -> Loss:  # noqa: ANN001
        gpu.launch(0.002, 0.100)
        return Loss()

    optimizer = SimpleNamespace(zero_grad=lambda set_to_none=True: None)
    cell = Cell(None, SimpleNamespace(loss=loss), [], optimizer, None, None, scaler=Scaler())
    assert cell.launch_ms(gpu.synchronize) == pytest.approx(5.0)  # 2 + 2 + 1 ms of launching
    times = time_window(cell.step, torch.device("cuda"), 5, launch_ms=lambda: cell.launch_ms(gpu.synchronize))
    assert times.step_ms[1:] == pytest.approx([311.0] * 4)  # 310 ms of GPU work and 1 ms it waits for the update
    assert times.host_bound is False and times.host_ms[0] < HOST_BOUND_SHARE * 311.0
    naive = time_window(cell.step, torch.device("cuda"), 5)  # the first step's wall time includes the wait
    assert naive.host_bound is True


OOM_FACTORY = """
import weakref
import torch
from torch import nn
from layerprof import CustomWorkload

ALIVE = []
ARMED = []  # set once the model is split: the split's traced forward must not fail

def make():
    model = nn.Sequential(*(nn.Linear(8, 8) for _ in range(3)))

    def make_batch(batch_size, device):
        return torch.randn(batch_size, 8, device=device)

    def loss(model, batch):
        held = torch.empty(1000)  # the step's tensors: alive while the traceback is
        ALIVE.append(weakref.ref(held))
        if ARMED and sum(p.requires_grad for p in model.parameters()) >= 4:  # z >= 2
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return model(batch).pow(2).mean()

    return CustomWorkload(model=model, make_batch=make_batch, loss=loss)
"""


def test_the_cache_is_emptied_once_a_failed_steps_tensors_are_gone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import layerprof.measure.cells as cells
    import layerprof.measure.jobs as jobs
    from layerprof.profile import SweepSettings
    from layerprof.sources.models import ModelOptions, build_model

    factory = tmp_path / "oom_factory.py"
    factory.write_text(OOM_FACTORY)
    loaded = build_model(f"{factory}:make", ModelOptions())
    factory_globals = loaded.workload.custom.loss.__globals__  # the factory module's names
    layers = loaded.split()
    factory_globals["ARMED"].append(True)
    seen: list[bool] = []
    alive = factory_globals["ALIVE"]
    monkeypatch.setattr(cells, "release_cached_memory", lambda device: seen.append(alive[-1]() is not None))
    settings = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(2,), warmup_steps=1, min_steps=1, max_steps=1)
    row, visit, _ = jobs.first_visit(cells.CellContext(loaded, layers, settings, torch.device("cpu")), 2, 2)
    assert row.status == "oom" and visit is None
    assert seen[-1] is False  # the last release ran after the failed step's tensors were freed


@pytest.mark.parametrize(
    "message",
    [
        "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        "cuDNN error: CUDNN_STATUS_NOT_ENOUGH_WORKSPACE",
        "CUDNN_BACKEND_API_FAILED: CUDNN_STATUS_ALLOC_FAILED",
        "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate",
    ],
)
def test_a_library_allocation_failure_is_an_oom_cell_and_skips_larger_z(message: str) -> None:
    """cuBLAS and cuDNN allocate their workspaces themselves: their failures are out-of-memory cells, and the
    larger z at that batch size are skipped, as after torch's own OutOfMemoryError."""
    import layerprof.measure.jobs as jobs
    from layerprof.profile import SweepSettings
    from layerprof.sources.models import LoadedModel
    from layerprof.sources.workloads import Workload
    from tests.conftest import linear_stack

    model = linear_stack(8, 4)
    armed: list[bool] = []  # once split: tracing the split's forward must not fail

    def loss(module, batch):  # noqa: ANN001, ANN202
        if armed and sum(p.requires_grad for p in module.parameters()) >= 2:  # z >= 2
            raise RuntimeError(message)
        return module(batch[0]).pow(2).mean()

    workload = Workload("custom", custom=SimpleNamespace(loss=loss, make_batch=lambda b, d: (torch.randn(b, 8),),
                                                         items_per_sample=1, item_name="samples"))  # fmt: skip
    loaded = LoadedModel("stack", "user", "stack", model, workload, (), {})
    layers = loaded.split()
    armed.append(True)
    settings = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(1, 2, 3), warmup_steps=1, min_steps=3,
                             max_steps=3, steps_per_visit=3)  # fmt: skip
    profile = jobs.profile_model(loaded, layers, settings, torch.device("cpu"))
    assert [(row.trainable_layers, row.status) for row in profile.rows] == [(1, "ok"), (2, "oom"), (3, "skipped")]
    assert profile.row(2, 2).message == f"RuntimeError: {message}"
    assert not is_out_of_memory(ValueError("out of memory"))  # only runtime errors carry allocation failures


def test_a_sticky_cuda_error_in_a_later_round_stops_the_sweep_and_keeps_every_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import layerprof.measure.cells as cells
    import layerprof.measure.jobs as jobs
    from layerprof.measure.instruments import StepTimes
    from layerprof.profile import SweepSettings
    from layerprof.sources.models import LoadedModel
    from layerprof.sources.workloads import Workload
    from tests.measure.test_rounds import COST_MS, Staircase

    model = Staircase()
    loaded = LoadedModel("staircase", "user", "staircase", model, Workload("tensor-input", input_shape=(4,)), (), {})
    visits_of: dict[int, int] = {}

    def fake_window(step, device, count):  # noqa: ANN001, ANN202
        z = sum(1 for layer in model.layers if layer.weight.requires_grad)
        visits_of[z] = visits_of.get(z, 0) + 1
        if z == 3 and visits_of[z] == 2:  # its first timed round
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return StepTimes([COST_MS[z]] * count)

    monkeypatch.setattr(cells, "time_window", fake_window)
    monkeypatch.setattr(jobs, "reference_workload_ms", lambda device: 2.0)
    saved: list = []
    settings = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(1, 2, 3, 4), warmup_steps=1, min_steps=10,
                             max_steps=30)  # fmt: skip
    with pytest.raises(DeviceFailure, match=r"cannot run anything more in this process \(RuntimeError: CUDA error: "
                                            r"an illegal memory access was encountered\) at batch 2, z=3"):  # fmt: skip
        jobs.profile_model(loaded, loaded.split(), settings, torch.device("cpu"), save=saved.append)
    profile = saved[-1]
    assert not profile.complete
    # every cell was still settling when the GPU failed: figures kept, marked unfinished so a resume re-measures them
    assert [(row.trainable_layers, row.status, row.step_time_ms) for row in profile.rows] == [
        (z, "unfinished", COST_MS[z]) for z in (1, 2, 3, 4)
    ]


def test_the_workspace_is_what_the_allocator_holds_beyond_the_steps_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA the workspace category is the allocator's current allocation (not its peak, not its reservation)
    minus the storage of every tensor alive at the step's start: parameters, buffers, optimizer state, batch."""
    import layerprof.measure.cells as cells
    from layerprof.profile import SweepSettings
    from layerprof.sources.models import LoadedModel
    from layerprof.sources.workloads import Workload
    from tests.conftest import linear_stack

    model = linear_stack(16, 3, bias=True)
    loaded = LoadedModel("stack", "user", "stack", model, Workload("tensor-input", input_shape=(16,)), (), {})
    settings = SweepSettings(batch_sizes=(4,), trainable_layer_counts=(2,))
    cpu = torch.device("cpu")
    with cells.prepared_cell(cells.CellContext(loaded, loaded.split(), settings, cpu), 4, 2) as cell:
        cell.step()  # the optimizer state exists from the first step on
        storages = {
            id(t.untyped_storage()): t.untyped_storage().nbytes()
            for t in [*model.parameters(), *model.buffers(), *cells.optimizer_state_tensors(cell.optimizer),
                      *cells.tensors_in(cell.batch)]
        }  # fmt: skip
        held = sum(storages.values())
        monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: held + 65 * MIB)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: held + 900 * MIB)
        monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: held + 980 * MIB)
        cells.instrumented_step(cell, torch.device("cuda"))
        assert cell.row.memory_workspace_bytes == 65 * MIB
        cells.instrumented_step(cell, cpu)
        assert cell.row.memory_workspace_bytes == 0


CONVOLUTIONS_AND_PLAIN_PRODUCTS = """
from torch import nn

def convolutions():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))

def plain():
    return nn.Sequential(nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False))
"""


def test_cublas_workspaces_are_added_only_where_a_matrix_product_ran(tmp_path: Path) -> None:
    """Convolutions only (cuDNN, not cuBLAS): no workspace. Linear layers without a bias run plain products (mm),
    forward and backward: two cuBLAS workspaces and no cuBLASLt one."""
    from layerprof.predict.estimate import estimate_model
    from layerprof.profile import SweepSettings
    from layerprof.sources.models import ModelOptions

    factory = tmp_path / "factories.py"
    factory.write_text(CONVOLUTIONS_AND_PLAIN_PRODUCTS)
    settings = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(1, 2), target="cuda")
    convolutions = estimate_model(f"{factory}:convolutions", ModelOptions(input_shape=(3, 8, 8)), settings)
    plain = estimate_model(f"{factory}:plain", ModelOptions(input_shape=(8,)), settings)
    for z in (1, 2):
        row = convolutions.row(2, z)
        assert row.memory_workspace_bytes == 0 and row.peak_memory_bytes == row.tracked_peak_bytes
        assert plain.row(2, z).memory_workspace_bytes == 32 * MIB + 32 * MIB
