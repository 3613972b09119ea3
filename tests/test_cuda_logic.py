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

from layerprof.cli import app
from layerprof.devices import MIB, cublas_workspace_bytes, cuda_block_bytes
from layerprof.errors import DeviceFailure, DeviceWarning, LayerprofError
from layerprof.measure import StepTimes, is_out_of_memory, is_sticky_cuda_error
from layerprof.nvml import handle_for_uuid, measure_process_memory, process_memory
from layerprof.profile import load_profile
from tests.test_cli import assert_one_line_error


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
    hopper, ampere = cublas_workspace_bytes((9, 0), {}), cublas_workspace_bytes((8, 0), {})
    assert hopper == 32 * MIB + MIB  # :4096:8 for cuBLAS, 1 MiB for cuBLASLt
    assert ampere == 4096 * 1024 * 2 + 16 * 1024 * 8 + MIB  # :4096:2:16:8
    assert cublas_workspace_bytes((9, 0), {"CUBLAS_WORKSPACE_CONFIG": ":16:8"}) == 16 * 1024 * 8 + MIB
    assert cublas_workspace_bytes((8, 0), {"CUBLASLT_WORKSPACE_SIZE": "4096"}) == ampere - MIB + 4 * MIB


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
    assert not profile.complete and [(row.trainable_layers, row.status) for row in profile.rows] == [(1, "ok")]
    assert DeviceFailure.exit_code == 1 and issubclass(DeviceFailure, LayerprofError)


def test_numeric_settings_are_recorded_set_and_compared(tmp_path: Path) -> None:
    from layerprof.check import UnusableInput, compare
    from layerprof.environment import apply_tf32, describe_environment, numeric_settings

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
    from tests.test_check import measured_like_profile

    current, baseline = measured_like_profile(), measured_like_profile()
    current.environment.numerics, baseline.environment.numerics = with_tf32.numerics, settings
    with pytest.raises(UnusableInput, match="different numeric settings: cudnn_conv_tf32"):
        compare(current, baseline)
    baseline.environment.numerics = dict(with_tf32.numerics)
    assert compare(current, baseline).exit_code == 0


def test_environment_records_the_variables_that_change_speed(monkeypatch: pytest.MonkeyPatch) -> None:
    from layerprof.environment import describe_environment

    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    environment = describe_environment(torch.device("cpu"))
    assert environment.variables["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert environment.variables["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert environment.to_dict()["numerics"]["float32_matmul_precision"] == torch.get_float32_matmul_precision()


def test_auto_warns_when_the_driver_shows_a_gpu_torch_cannot_use(monkeypatch: pytest.MonkeyPatch) -> None:
    import layerprof.environment as environment

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
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode != 0
    assert "pytest -m gpu needs a GPU torch can use" in done.stdout + done.stderr


def test_host_bound_is_launch_time_against_step_time() -> None:
    assert StepTimes([10.0, 10.0, 10.0], [9.5, 9.2]).host_bound is True
    assert StepTimes([10.0, 10.0, 10.0], [2.0, 2.5]).host_bound is False
    assert StepTimes([10.0], []).host_bound is None


def test_estimate_models_the_cuda_workspaces() -> None:
    from layerprof.estimate import estimate_model
    from layerprof.models import ModelOptions
    from layerprof.profile import SweepSettings

    example = str(Path(__file__).parent.parent / "examples" / "custom_model.py")
    options = ModelOptions(input_shape=(64,), num_classes=10)

    def estimate(target: str, gpu: str | None = None):
        settings = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(1, 8), target=target, target_gpu=gpu)
        return estimate_model(f"{example}:mlp", options, settings)

    hopper, l4, cpu = estimate("cuda"), estimate("cuda", "L4"), estimate("cpu")
    for z in (1, 8):
        assert hopper.row(2, z).memory_workspace_bytes == cublas_workspace_bytes((9, 0), {})
        assert l4.row(2, z).memory_workspace_bytes == cublas_workspace_bytes((8, 9), {})
        assert cpu.row(2, z).memory_workspace_bytes == 0
        row = hopper.row(2, z)
        assert row.peak_memory_bytes == row.tracked_peak_bytes + row.memory_workspace_bytes
    assert l4.environment.device_name == "estimate for L4" and l4.environment.total_memory_bytes == 23034 * MIB
