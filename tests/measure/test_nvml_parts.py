"""measure/nvml.py part by part (issue 40's mutation survivors), on a stand-in pynvml: NVML shut down after use,
this process's and the device's memory with where each came from, the other processes on the device, and the
driver's facts."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import pytest
import torch

from layerprof.measure import nvml

UUID = "GPU-6a3c2f10-1b2c-4d5e-8f90-123456789abc"
MIG = "MIG-0b1c2d3e-1b2c-4d5e-8f90-123456789abc"
MIB = 2**20


class FakePynvml:
    """Stands in for the pynvml module: one GPU and one MIG slice, their processes (pid, used bytes), the calls."""

    def __init__(self, processes: list[tuple[int, int | None]], memory_fails: bool = False) -> None:
        self.processes = processes
        self.memory_fails = memory_fails
        self.calls: list[str] = []

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        self.calls.append("init")

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.calls.append("shutdown")

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:  # noqa: N802
        if uuid not in (UUID, MIG):
            raise RuntimeError("NVMLError_NotFound")
        return uuid

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list:  # noqa: N802
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self.processes]

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> SimpleNamespace:  # noqa: N802
        if self.memory_fails:
            raise RuntimeError("NVMLError_NotSupported")
        return SimpleNamespace(used=300 * MIB)

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return 1

    def nvmlSystemGetDriverVersion(self) -> bytes:  # noqa: N802
        return b"550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:  # noqa: N802
        return 12040

    def nvmlDeviceGetMigMode(self, handle: str) -> tuple[int, int]:  # noqa: N802
        if handle == MIG:
            raise RuntimeError("NVMLError_NotSupported")  # as on a MIG slice's own handle
        return 0, 0


def installed(monkeypatch: pytest.MonkeyPatch, fake: FakePynvml) -> FakePynvml:
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


def test_nvml_is_shut_down_after_use_and_says_why_it_cannot_be_used(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = installed(monkeypatch, FakePynvml([]))
    with nvml.nvml() as pynvml:
        assert pynvml is fake and fake.calls == ["init"]
    assert fake.calls == ["init", "shutdown"]
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed
    with pytest.raises(RuntimeError, match="^NVML unavailable: nvidia-ml-py is not installed$"), nvml.nvml():
        pass
    assert nvml.gpus_the_driver_sees() is None


def test_a_process_without_a_figure_on_a_whole_gpu_is_the_drivers_doing(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = installed(monkeypatch, FakePynvml([(os.getpid(), None)]))
    assert nvml.process_memory(fake, UUID) == (None, "NVML lists this process but not reported by the driver")
    memory = nvml.measure_process_memory(UUID)
    assert (memory.process_bytes, memory.note) == (None, "NVML lists this process but not reported by the driver")
    assert nvml.measure_process_memory(MIG, mig=True).note == (
        "NVML lists this process but per-process memory is not reported for MIG slices"
    )


def test_the_devices_memory_comes_from_nvml_else_from_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = installed(monkeypatch, FakePynvml([(os.getpid(), 100 * MIB)]))
    memory = nvml.measure_process_memory(UUID)
    assert memory == nvml.ProcessMemory(100 * MIB, None, 300 * MIB, "nvml-device")
    fake.memory_fails = True
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (1000 * MIB, 1250 * MIB))  # (free, total)
    memory = nvml.measure_process_memory(UUID)
    assert (memory.device_used_bytes, memory.device_used_source) == (250 * MIB, "cuda-mem-get-info")


def test_the_other_processes_on_the_device_leave_this_one_out(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, FakePynvml([(os.getpid(), 1), (1, 2), (2, 3)]))
    assert (nvml.other_gpu_processes(UUID), nvml.other_gpu_processes(None)) == (2, 0)
    assert nvml.other_gpu_processes("GPU-unknown") == 0  # NVML knows no such device: nothing to warn about
    assert nvml.gpus_the_driver_sees() == 1


def test_the_drivers_facts_and_mig_from_the_device_or_its_uuid(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, FakePynvml([]))
    facts = {"driver_version": "550.54.15", "cuda_driver_version": "12.4"}
    assert nvml.driver_facts(None) == facts
    assert nvml.driver_facts(UUID) == {**facts, "mig_enabled": False}
    assert nvml.driver_facts(MIG) == {**facts, "mig_enabled": True}  # no MIG mode on a slice's handle: its UUID
