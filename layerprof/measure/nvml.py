"""What NVML says about the GPU a process uses, found by the device's UUID.

torch's device index is not NVML's index: CUDA_VISIBLE_DEVICES renumbers devices, CUDA's default
CUDA_DEVICE_ORDER=FASTEST_FIRST can order them differently from NVML's PCI order, and a MIG slice is a device
of its own. The UUID (`GPU-...`, or `MIG-...` for a slice) names the same device to both. In a container NVML
reports host process ids, so the process may not be found by `os.getpid()`; every missing figure says why,
and the device's used memory is offered as a named alternative.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from layerprof.profile import JsonDict


@dataclass
class ProcessMemory:
    """What NVML says this process holds on the device, with the device's total use."""

    process_bytes: int | None  # this process, CUDA context included
    note: str | None  # why process_bytes is missing
    device_used_bytes: int | None  # the whole device, every process
    device_used_source: str | None  # "nvml-device" | "cuda-mem-get-info"


class NvmlProcess(Protocol):
    """One process pynvml lists on a device."""

    pid: int
    usedGpuMemory: int | None  # pynvml's name


class NvmlMemory(Protocol):
    """pynvml's memory figures of a device."""

    used: int


class Nvml(Protocol):
    """The part of pynvml (nvidia-ml-py, which has no type information) layerprof calls; a handle is opaque."""

    nvmlInit: Callable[[], None]
    nvmlShutdown: Callable[[], None]
    nvmlDeviceGetCount: Callable[[], int]
    nvmlDeviceGetHandleByUUID: Callable[[str], object]
    nvmlDeviceGetComputeRunningProcesses: Callable[[object], list[NvmlProcess]]
    nvmlDeviceGetMemoryInfo: Callable[[object], NvmlMemory]
    nvmlDeviceGetMigMode: Callable[[object], tuple[int, int]]  # (current, pending)
    nvmlSystemGetDriverVersion: Callable[[], str | bytes]
    nvmlSystemGetCudaDriverVersion: Callable[[], int]


@contextmanager
def nvml() -> Iterator[Nvml]:
    """pynvml, initialised; raises RuntimeError with the reason where NVML cannot be used."""
    try:
        import pynvml
    except ImportError:
        raise RuntimeError("NVML unavailable: nvidia-ml-py is not installed") from None
    try:
        pynvml.nvmlInit()
    except Exception as error:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, NoPermission...
        raise RuntimeError(f"NVML unavailable: {error}") from None
    try:
        yield pynvml
    finally:
        pynvml.nvmlShutdown()


def handle_for_uuid(pynvml: Nvml, uuid: str) -> object:
    """The NVML handle of a torch device's UUID; torch gives it bare or with its `GPU-` / `MIG-` prefix."""
    bare = uuid.removeprefix("GPU-").removeprefix("MIG-")
    candidates = [uuid] if uuid.startswith(("GPU-", "MIG-")) else []
    candidates += [f"GPU-{bare}", f"MIG-{bare}"]
    last: Exception | None = None
    for candidate in dict.fromkeys(candidates):
        try:
            return pynvml.nvmlDeviceGetHandleByUUID(candidate)
        except Exception as error:  # noqa: BLE001 - NVMLError_NotFound: try the next spelling
            last = error
    raise RuntimeError(f"NVML knows no device with UUID {uuid} ({last})")


def process_memory(
    pynvml: Nvml, handle: object, pid: int | None = None, mig: bool = False
) -> tuple[int | None, str | None]:
    """(bytes NVML attributes to the process, or None and why)."""
    pid = os.getpid() if pid is None else pid
    try:
        processes = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except Exception as error:  # noqa: BLE001 - NVMLError_NoPermission, NotSupported
        return None, f"NVML cannot list processes: {error}"
    for process in processes:
        if process.pid != pid:
            continue
        used = process.usedGpuMemory  # pynvml gives None for NVML_VALUE_NOT_AVAILABLE
        if used is None:
            reason = "per-process memory is not reported for MIG slices" if mig else "not reported by the driver"
            return None, f"NVML lists this process but {reason}"
        return int(used), None
    if processes:
        return None, (
            f"NVML lists {len(processes)} process(es) on the device but not pid {pid} "
            "(a container's pid namespace hides the host pid)"
        )
    return None, "NVML lists no process on the device (a container or MIG slice hides them)"


def device_used_bytes(pynvml: Nvml, handle: object) -> int | None:
    """Memory in use on the whole device per NVML, or None where NVML cannot say."""
    try:
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception:  # noqa: BLE001
        return None


def measure_process_memory(uuid: str | None, mig: bool = False) -> ProcessMemory:
    """NVML's figure for this process on the device with `uuid`, why it is missing, and the device's used
    memory from NVML or, failing that, from `torch.cuda.mem_get_info` (which works in containers and MIG)."""
    note: str | None = None
    process: int | None = None
    used: int | None = None
    source: str | None = None
    try:
        if uuid is None:
            raise RuntimeError("the device's UUID is unknown (torch too old to report it)")
        with nvml() as pynvml:
            handle = handle_for_uuid(pynvml, uuid)
            process, note = process_memory(pynvml, handle, mig=mig)
            used = device_used_bytes(pynvml, handle)
            source = "nvml-device" if used is not None else None
    except RuntimeError as error:
        note = str(error)
    if used is None:
        used, source = _mem_get_info_used()
    return ProcessMemory(process, note, used, source)


def _mem_get_info_used() -> tuple[int | None, str | None]:
    try:
        import torch

        free, total = torch.cuda.mem_get_info()
        return int(total - free), "cuda-mem-get-info"
    except Exception:  # noqa: BLE001
        return None, None


def other_gpu_processes(uuid: str | None) -> int:
    """How many other processes NVML sees computing on the device (0 where it cannot say)."""
    if uuid is None:
        return 0
    try:
        with nvml() as pynvml:
            processes = pynvml.nvmlDeviceGetComputeRunningProcesses(handle_for_uuid(pynvml, uuid))
            return sum(1 for process in processes if process.pid != os.getpid())
    except Exception:  # noqa: BLE001 - NVML missing, no permission: nothing to warn about
        return 0


def gpus_the_driver_sees() -> int | None:
    """How many GPUs NVML lists, or None where NVML cannot be used (no driver, no library)."""
    try:
        with nvml() as pynvml:
            return int(pynvml.nvmlDeviceGetCount())
    except RuntimeError:
        return None


def driver_facts(uuid: str | None) -> JsonDict:
    """Driver version, the newest CUDA it supports, and whether MIG is on, for the device with `uuid`."""
    facts: JsonDict = {}
    try:
        with nvml() as pynvml:
            facts["driver_version"] = _text(pynvml.nvmlSystemGetDriverVersion())
            try:
                version = int(pynvml.nvmlSystemGetCudaDriverVersion())
                facts["cuda_driver_version"] = f"{version // 1000}.{version % 1000 // 10}"
            except Exception:  # noqa: BLE001
                pass
            if uuid is not None:
                handle = handle_for_uuid(pynvml, uuid)
                try:
                    current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
                    facts["mig_enabled"] = bool(current)
                except Exception:  # noqa: BLE001 - NotSupported on GPUs without MIG, and on MIG handles
                    facts["mig_enabled"] = uuid.startswith("MIG-")
    except RuntimeError:
        pass
    return facts


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
