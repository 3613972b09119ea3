"""Facts about devices that several modules need: the GPUs layerprof knows and the CUDA allocator's rules.

Kept free of torch so that `ladder`, `fit` and `check` can use them without importing it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from layerprof.errors import LayerprofError

MIB = 2**20

# What a CUDA process holds beyond the allocator's reservation: the CUDA context and kernel images. About
# 300-600 MiB on current GPUs and drivers with lazy module loading; `ladder` and `fit` reserve 512 MiB.
CUDA_CONTEXT_RESERVE_BYTES = 512 * MIB

# Devices an estimate predicts for.
TARGETS = ("cuda", "cpu")


@dataclass(frozen=True)
class GpuKind:
    name: str
    memory_mib: int  # nvidia-smi's total memory
    compute_capability: tuple[int, int]
    bf16_tflops: float  # dense peak of the tensor cores (float16 where bfloat16 is missing)
    ray_accelerator: str | None = None  # Ray's accelerator_type for nodes of this GPU, where Ray names it
    mig_of: str | None = None  # a MIG slice: the GPU it is cut from


# Common GPUs and MIG slices, in no particular order. The A100 slices keep their short names (1g.5gb, ...);
# H100 slices are named H100-<profile>. A slice's peak is its share of the GPU's SMs (A100: g/7; H100 SXM5:
# 16, 32, 60, 64 of 132 SMs for 1g, 2g, 3g, 4g), its memory NVIDIA's MIG table's share of the GPU's.
GPU_KINDS: dict[str, GpuKind] = {
    gpu.name: gpu
    for gpu in (
        GpuKind("1g.5gb", 4864, (8, 0), 312 / 7, mig_of="A100-40GB"),
        GpuKind("1g.10gb", 9984, (8, 0), 312 / 7, mig_of="A100-80GB"),
        GpuKind("T4", 15360, (7, 5), 65, "T4"),
        GpuKind("2g.20gb", 19968, (8, 0), 2 * 312 / 7, mig_of="A100-80GB"),
        GpuKind("L4", 23034, (8, 9), 121, "L4"),
        GpuKind("A10", 23028, (8, 6), 125, "A10"),
        GpuKind("RTX4090", 24564, (8, 9), 165, "GeForce-RTX-4090"),
        GpuKind("3g.40gb", 40192, (8, 0), 3 * 312 / 7, mig_of="A100-80GB"),
        GpuKind("A100-40GB", 40960, (8, 0), 312, "A100"),
        GpuKind("L40S", 46068, (8, 9), 362, "L40S"),
        GpuKind("A100-80GB", 81920, (8, 0), 312, "A100"),
        GpuKind("H100", 81559, (9, 0), 989, "H100"),
        GpuKind("H100-1g.10gb", 9984, (9, 0), 989 * 16 / 132, mig_of="H100"),
        GpuKind("H100-1g.20gb", 19968, (9, 0), 989 * 16 / 132, mig_of="H100"),
        GpuKind("H100-2g.20gb", 19968, (9, 0), 989 * 32 / 132, mig_of="H100"),
        GpuKind("H100-3g.40gb", 40192, (9, 0), 989 * 60 / 132, mig_of="H100"),
        GpuKind("H100-4g.40gb", 40192, (9, 0), 989 * 64 / 132, mig_of="H100"),
        GpuKind("H100-7g.80gb", 80640, (9, 0), 989, mig_of="H100"),
        GpuKind("H200", 143771, (9, 0), 989, "H200"),
        GpuKind("B200", 183359, (10, 0), 2250, "B200"),
    )
}
GPUS: dict[str, int] = {name: gpu.memory_mib for name, gpu in GPU_KINDS.items()}


def kind_of_device(device_name: str, total_memory_bytes: int | None = None) -> GpuKind | None:
    """The table's GPU for a CUDA device name as torch and NVML report it ("NVIDIA H100 80GB HBM3",
    "NVIDIA A100-SXM4-40GB", "NVIDIA H100 80GB HBM3 MIG 1g.10gb"), or None."""
    name = device_name.upper().replace("NVIDIA", "").replace("GEFORCE", "").replace(" ", "")
    mig = re.search(r"MIG(\d+G\.\d+GB)", name)
    for gpu in sorted(GPU_KINDS.values(), key=lambda g: -len(g.name)):
        base = (gpu.mig_of or gpu.name).upper().replace("-40GB", "").replace("-80GB", "")
        if base not in name or bool(mig) != bool(gpu.mig_of):
            continue
        if mig and not gpu.name.upper().endswith(mig.group(1)):
            continue
        large = gpu.memory_mib > 50_000  # A100: 40 or 80 GB by the memory torch reports
        if (
            gpu.name.startswith("A100")
            and total_memory_bytes is not None
            and large != (total_memory_bytes > 50_000 * MIB)
        ):
            continue
        return gpu
    return None


def find_gpu(name: str) -> GpuKind | None:
    """A GPU in the table by case-insensitive name, or None."""
    return next((gpu for known, gpu in GPU_KINDS.items() if known.lower() == name.strip().lower()), None)


def gpu_kind(name: str) -> GpuKind:
    """A GPU in the table, by case-insensitive name; an unknown one is an input error."""
    gpu = find_gpu(name)
    if gpu is None:
        raise LayerprofError(f"unknown --gpu {name!r}; known: {', '.join(GPU_KINDS)}")
    return gpu


def gpu_memory_bytes(name: str) -> int:
    """Total memory of a GPU in the table, by case-insensitive name."""
    return gpu_kind(name).memory_mib * MIB


def smallest_gpu_for(need_bytes: int) -> str | None:
    """The GPU in the table with the least memory that still holds `need_bytes`."""
    for name, mib in sorted(GPUS.items(), key=lambda item: item[1]):
        if need_bytes <= mib * MIB:
            return name
    return None


# ---------------------------------------------------------------- the CUDA caching allocator's block rules
# c10/cuda/CUDACachingAllocator.cpp: every request is rounded up to 512 bytes; requests up to 1 MiB come from
# 2 MiB segments of the small pool, larger ones from 20 MiB segments (below 10 MiB) or from segments rounded
# up to 2 MiB. A block from the large pool is split only when more than 1 MiB would remain, so a tensor of
# 11.5 MiB holds a whole 12 MiB block. `torch.cuda.max_memory_allocated` counts blocks, not requests.

CUDA_MIN_BLOCK_BYTES = 512
CUDA_SMALL_REQUEST_BYTES = 1 * MIB
CUDA_LARGE_SEGMENT_MIN_BYTES = 10 * MIB
CUDA_LARGE_ROUNDING_BYTES = 2 * MIB


def cuda_block_bytes(requested_bytes: int) -> int:
    """The block the caching allocator hands out for a fresh request of `requested_bytes`."""
    if requested_bytes <= 0:
        return 0
    size = -(-requested_bytes // CUDA_MIN_BLOCK_BYTES) * CUDA_MIN_BLOCK_BYTES
    if size < CUDA_LARGE_SEGMENT_MIN_BYTES:
        return size  # small pool, or a 20 MiB segment with far more than 1 MiB left over: split
    segment = -(-size // CUDA_LARGE_ROUNDING_BYTES) * CUDA_LARGE_ROUNDING_BYTES
    return segment if segment - size <= CUDA_SMALL_REQUEST_BYTES else size


# ---------------------------------------------------------------- cuBLAS / cuBLASLt workspaces
# aten/src/ATen/cuda/CublasHandlePool.cpp: each (handle, stream) gets a cuBLAS workspace from the caching
# allocator on its first matrix product and keeps it: CUBLAS_WORKSPACE_CONFIG's total, by default
# :4096:8 (32 MiB) on Hopper (sm90) and :4096:2:16:8 (8 MiB + 128 KiB) elsewhere; cuBLASLt, which Linear
# layers with a bias use, gets its own CUBLASLT_WORKSPACE_SIZE KiB (default 1024).


def cublas_workspace_bytes(compute_capability: tuple[int, int] | None, environ: dict[str, str] | None = None) -> int:
    """The persistent matmul workspaces one training process holds on one stream."""
    environ = dict(os.environ) if environ is None else environ
    config = environ.get("CUBLAS_WORKSPACE_CONFIG")
    pairs = re.findall(r":([0-9]+):([0-9]+)", config or "")
    if pairs:
        cublas = sum(int(size) * 1024 * int(count) for size, count in pairs)
    elif compute_capability == (9, 0):
        cublas = 4096 * 1024 * 8
    else:
        cublas = 4096 * 1024 * 2 + 16 * 1024 * 8
    try:
        cublas_lt = int(environ.get("CUBLASLT_WORKSPACE_SIZE", "1024")) * 1024
    except ValueError:
        cublas_lt = 1024 * 1024
    return cuda_block_bytes(cublas) + cuda_block_bytes(cublas_lt)
