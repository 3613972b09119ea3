"""Choosing the device, the numeric settings it runs with, and describing the machine a profile was measured on."""

from __future__ import annotations

import os
import platform
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

import layerprof
from layerprof.errors import DeviceWarning, LayerprofError
from layerprof.measure.nvml import driver_facts, gpus_the_driver_sees
from layerprof.profile import EnvironmentInfo, JsonDict

# Environment variables that change how fast or how much memory a CUDA step takes.
RECORDED_VARIABLES = (
    "PYTORCH_CUDA_ALLOC_CONF",
    "PYTORCH_ALLOC_CONF",
    "CUBLAS_WORKSPACE_CONFIG",
    "CUBLASLT_WORKSPACE_SIZE",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "CUDA_MODULE_LOADING",
    "OMP_NUM_THREADS",
)


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else CPU (with a warning when the driver shows a GPU torch cannot use);
    `cuda` without CUDA is an input error that says why."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        reason = cuda_unusable_reason()
        if reason is not None:
            warnings.warn(f"{reason}; measuring on the CPU instead", DeviceWarning, stacklevel=2)
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LayerprofError(f"unknown --device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LayerprofError(f"--device {name}: {cuda_unusable_reason() or 'CUDA is not available here'}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise LayerprofError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    elif device.type != "cpu":
        raise LayerprofError(f"--device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def cuda_unusable_reason() -> str | None:
    """Why torch cannot use a GPU here, or None where there is none to use or torch can use it."""
    if torch.cuda.is_available():
        return None
    gpus = gpus_the_driver_sees()
    build = torch.version.cuda
    if not gpus:
        if build is None:
            return f"torch {torch.__version__} is a CPU-only build and no NVIDIA driver answers"
        return None
    if build is None:
        return f"the NVIDIA driver shows {gpus} GPU(s) but torch {torch.__version__} is a CPU-only build"
    facts = driver_facts(None)
    driver = facts.get("driver_version", "?")
    supports = facts.get("cuda_driver_version", "?")
    return (
        f"the NVIDIA driver shows {gpus} GPU(s) but torch {torch.__version__} (built for CUDA {build}) cannot use "
        f"them: driver {driver} supports CUDA up to {supports} (a CUDA 13 wheel needs an R580+ driver)"
    )


# ---------------------------------------------------------------- numeric settings


def apply_tf32(enabled: bool | None) -> None:
    """--tf32 / --no-tf32: TensorFloat-32 for float32 matmuls and cuDNN convolutions together; None keeps
    PyTorch's defaults (matmuls in full float32, convolutions in TF32)."""
    if enabled is None:
        return
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled


def numeric_settings() -> JsonDict:
    """The settings that change float32 results and speed several-fold: recorded, and compared by `check`."""
    precision = torch.get_float32_matmul_precision()
    return {
        "float32_matmul_precision": precision,
        "matmul_tf32": precision != "highest",
        "cudnn_conv_tf32": _cudnn_conv_tf32(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled()),
    }


def _cudnn_conv_tf32() -> bool:
    try:
        return bool(torch.backends.cudnn.allow_tf32)
    except RuntimeError:  # torch >= 2.9 refuses the old flag once the new API was used
        return bool(torch.backends.cudnn.conv.fp32_precision == "tf32")  # type: ignore[attr-defined]


# ---------------------------------------------------------------- threads, CPUs and other work


@dataclass(frozen=True)
class ProcessSettings:
    """--threads, --cpus and --tf32: settings of the whole process that a sweep needs while it plans and runs.

    A library call must not leave them behind (a caller's own training would run on one thread, or in TF32, after
    `plan_profile(..., threads=1)`; a test suite would predict differently in another order), so they are set
    only inside `applied()` and put back as they were on leaving it."""

    threads: int | None = None
    cpus: tuple[int, ...] | None = None
    tf32: bool | None = None
    compile_cache_entries: int = 0  # --compile: room in dynamo's caches for this many compiled graphs per function

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Set what is given (checked: a bad value raises LayerprofError), and restore all of them as they were
        after, whatever ran inside changed (nothing given: only the restoring, as the test suite uses it per
        test). Dynamo's cache limits are raised and restored only where `compile_cache_entries` is given, so that
        nothing imports torch._dynamo for an eager sweep."""
        threads = torch.get_num_threads()
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        matmul, conv = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
        limits = dynamo_cache_limits() if self.compile_cache_entries else {}
        try:
            apply_tf32(self.tf32)
            apply_threads(self.threads, self.cpus)
            set_dynamo_cache_limits({name: max(value, self.compile_cache_entries) for name, value in limits.items()})
            yield
        finally:
            torch.set_num_threads(threads)
            if affinity is not None and os.sched_getaffinity(0) != affinity:
                os.sched_setaffinity(0, affinity)
            torch.set_float32_matmul_precision(matmul)
            torch.backends.cudnn.allow_tf32 = conv
            set_dynamo_cache_limits(limits)


# Dynamo's limits on the graphs it keeps per function (the names differ between torch releases). Once one is reached,
# torch runs the function eagerly, silently.
DYNAMO_CACHE_LIMITS = (
    "cache_size_limit",
    "recompile_limit",
    "accumulated_cache_size_limit",
    "accumulated_recompile_limit",
)


def dynamo_cache_limits() -> dict[str, int]:
    """Dynamo's cache limits as they are now, by name (those this torch has)."""
    import torch._dynamo

    config = torch._dynamo.config
    return {name: getattr(config, name) for name in DYNAMO_CACHE_LIMITS if hasattr(config, name)}


def set_dynamo_cache_limits(limits: dict[str, int]) -> None:
    """Set dynamo's cache limits (nothing given: nothing imported, nothing set)."""
    if not limits:
        return
    import torch._dynamo

    for name, value in limits.items():
        setattr(torch._dynamo.config, name, value)


def apply_threads(threads: int | None, cpus: tuple[int, ...] | None) -> None:
    """--threads (torch's intra-op threads) and --cpus (the CPUs this process may run on)."""
    if cpus:
        if not hasattr(os, "sched_setaffinity"):
            raise LayerprofError("--cpus needs Linux (os.sched_setaffinity); leave it out here")
        available = os.cpu_count() or 1
        outside = [cpu for cpu in cpus if cpu >= available]
        if outside:
            raise LayerprofError(f"--cpus {outside[0]} does not exist; this machine has CPUs 0..{available - 1}")
        try:
            os.sched_setaffinity(0, cpus)
        except OSError as error:  # CPUs that exist but that this process may not use (taskset, a container)
            allowed = ",".join(map(str, sorted(os.sched_getaffinity(0))))
            raise LayerprofError(
                f"--cpus {','.join(map(str, cpus))}: {error.strerror or error}; this process may run on CPUs {allowed}"
            ) from None
    if threads is not None:
        if threads < 1:
            raise LayerprofError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


# Other work this busy when a sweep starts is worth a warning: its step times will carry it.
BUSY_CPU_SHARE = 0.25


def cpu_busy_share(seconds: float = 0.3) -> float | None:
    """The share of the machine's CPU time other processes used over `seconds` (this one sleeps meanwhile)."""

    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat", encoding="utf-8") as handle:
                fields = [int(value) for value in handle.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    before = sample()
    time.sleep(seconds)
    after = sample()
    if before is None or after is None or after[0] == before[0]:
        return None
    return 1 - (after[1] - before[1]) / (after[0] - before[0])


def busy_machine_reason(device: torch.device) -> str | None:
    """Why this machine is visibly busy (other processes on the CPUs or the GPU), or None."""
    if device.type == "cuda":
        from layerprof.measure.nvml import other_gpu_processes

        others = other_gpu_processes(gpu_uuid(device))
        if others:
            return f"{others} other process(es) use the GPU; their work lands in the step times"
        return None
    share = cpu_busy_share()
    if share is not None and share >= BUSY_CPU_SHARE:
        return f"other work kept the CPUs {share:.0%} busy as the sweep started; its step times will carry that"
    return None


# ---------------------------------------------------------------- the machine


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it."""
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


def gpu_uuid(device: torch.device) -> str | None:
    """`GPU-...` or `MIG-...` as NVML names the device, or None where torch cannot say."""
    uuid = getattr(torch.cuda.get_device_properties(device), "uuid", None)
    if uuid is None:
        return None
    text = str(uuid)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def describe_environment(device: torch.device) -> EnvironmentInfo:
    """The machine and software a profile was measured with (device, driver, library versions, numerics)."""
    info = EnvironmentInfo(
        device_kind=device.type,
        device_name=cpu_name(),
        total_memory_bytes=_cpu_memory_bytes(),
        torch_version=torch.__version__,
        layerprof_version=layerprof.__version__,
        python_version=platform.python_version(),
        platform=platform.platform(),
        cpu_name=cpu_name(),
        cpu_count=os.cpu_count(),
        cpu_affinity=sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        torch_threads=torch.get_num_threads(),
        numerics=numeric_settings(),
        variables={name: os.environ[name] for name in RECORDED_VARIABLES if name in os.environ},
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.device_name = props.name
        info.total_memory_bytes = int(props.total_memory)
        info.cuda_version = torch.version.cuda
        info.cudnn_version = torch.backends.cudnn.version()
        info.compute_capability = f"{props.major}.{props.minor}"
        info.gpu_uuid = gpu_uuid(device)
        facts = driver_facts(info.gpu_uuid)
        info.driver_version = facts.get("driver_version")
        info.cuda_driver_version = facts.get("cuda_driver_version")
        info.mig_enabled = facts.get("mig_enabled")
    return info


def device_slug(environment: EnvironmentInfo) -> str:
    """`cpu`, or the GPU's name made file-safe (`nvidia-h100-80gb-hbm3`)."""
    if environment.device_kind != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", environment.device_name.lower()).strip("-") or "cuda"
