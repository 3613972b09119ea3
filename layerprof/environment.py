"""Choosing the device and describing the machine a profile was measured on."""

from __future__ import annotations

import os
import platform
import re

import torch

import layerprof
from layerprof.errors import LayerprofError
from layerprof.profile import EnvironmentInfo


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else CPU; `cuda` without CUDA is an input error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LayerprofError(f"unknown --device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LayerprofError("--device cuda, but CUDA is not available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise LayerprofError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type != "cpu":
        raise LayerprofError(f"--device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def describe_environment(device: torch.device) -> EnvironmentInfo:
    info = EnvironmentInfo(
        device_kind=device.type,
        device_name=_cpu_name(),
        total_memory_bytes=_cpu_memory_bytes(),
        torch_version=torch.__version__,
        layerprof_version=layerprof.__version__,
        python_version=platform.python_version(),
        platform=platform.platform(),
        cpu_name=_cpu_name(),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
    )
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.device_name = props.name
        info.total_memory_bytes = int(props.total_memory)
        info.cuda_version = torch.version.cuda
        info.cudnn_version = torch.backends.cudnn.version()
        info.compute_capability = f"{props.major}.{props.minor}"
        info.driver_version, info.mig_enabled = _nvml_facts(index)
    return info


def _nvml_facts(index: int) -> tuple[str | None, bool | None]:
    """(driver version, MIG enabled) from NVML, or (None, None) where NVML cannot say."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            driver = pynvml.nvmlSystemGetDriverVersion()
            try:
                current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
                mig = bool(current)
            except pynvml.NVMLError:
                mig = False
            return driver, mig
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - NVML is optional information
        return None, None


def device_slug(environment: EnvironmentInfo) -> str:
    """`cpu`, or the GPU's name made file-safe (`nvidia-h100-80gb-hbm3`)."""
    if environment.device_kind != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", environment.device_name.lower()).strip("-") or "cuda"
