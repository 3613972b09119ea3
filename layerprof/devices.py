"""Facts about devices that several modules need: the GPUs layerprof knows and the CUDA allocator's rules.

Kept free of torch so that `ladder`, `fit` and `check` can use them without importing it.
"""

from __future__ import annotations

from layerprof.errors import LayerprofError

MIB = 2**20

# What a CUDA process holds beyond the allocator's reservation: the CUDA context and kernel images. About
# 300-600 MiB on current GPUs and drivers with lazy module loading; `ladder` and `fit` reserve 512 MiB.
CUDA_CONTEXT_RESERVE_BYTES = 512 * MIB

# Devices an estimate predicts for.
TARGETS = ("cuda", "cpu")

# The caching allocator rounds every request up to a multiple of 512 bytes.
CUDA_ALLOCATION_ROUNDING_BYTES = 512

# nvidia-smi's total memory (MiB) of common GPUs and MIG slices, in no particular order.
GPUS: dict[str, int] = {
    "1g.5gb": 4864,
    "1g.10gb": 9984,
    "T4": 15360,
    "2g.20gb": 19968,
    "L4": 23034,
    "A10": 23028,
    "RTX4090": 24564,
    "3g.40gb": 40192,
    "A100-40GB": 40960,
    "L40S": 46068,
    "A100-80GB": 81920,
    "H100": 81559,
    "H200": 143771,
    "B200": 183359,
}


def gpu_memory_bytes(name: str) -> int:
    """Total memory of a GPU in the table, by case-insensitive name."""
    for known, mib in GPUS.items():
        if known.lower() == name.lower():
            return mib * MIB
    raise LayerprofError(f"unknown --gpu {name!r}; known: {', '.join(GPUS)}")


def smallest_gpu_for(need_bytes: int) -> str | None:
    """The GPU in the table with the least memory that still holds `need_bytes`."""
    for name, mib in sorted(GPUS.items(), key=lambda item: item[1]):
        if need_bytes <= mib * MIB:
            return name
    return None
