"""Choosing the device and describing the machine a profile was measured on."""

from __future__ import annotations

import os
import platform
import re
from typing import Any

import torch

import layerprof
from layerprof.errors import LayerprofError


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


def describe_environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device_kind": device.type,
        "torch_version": torch.__version__,
        "layerprof_version": layerprof.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu_name": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.update(
            device_name=props.name,
            total_memory_bytes=int(props.total_memory),
            cuda_version=torch.version.cuda,
            cudnn_version=torch.backends.cudnn.version(),
            compute_capability=f"{props.major}.{props.minor}",
        )
        info.update(_nvml_facts(index))
    else:
        info.update(device_name=info["cpu_name"], total_memory_bytes=_cpu_memory_bytes())
    return info


def _nvml_facts(index: int) -> dict[str, Any]:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            facts: dict[str, Any] = {"driver_version": pynvml.nvmlSystemGetDriverVersion()}
            try:
                current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
                facts["mig_enabled"] = bool(current)
            except pynvml.NVMLError:
                facts["mig_enabled"] = False
            return facts
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - NVML is optional information
        return {}


def device_slug(environment: dict[str, Any]) -> str:
    """`cpu`, or the GPU's name made file-safe (`nvidia-h100-80gb-hbm3`)."""
    if environment.get("device_kind") != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", str(environment.get("device_name", "cuda")).lower()).strip("-") or "cuda"
