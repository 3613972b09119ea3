"""devices.py part by part (issue 40's mutation survivors): the table's builders field by field, a MIG slice's share
and float32 peak, the memory edge of `cheapest_gpu_for` and `smallest_gpu_for`, the allocator's
roundup_power2_divisions as PyTorch parses and applies it (c10/cuda/CUDAAllocatorConfig.cpp, CUDACachingAllocator.cpp),
and a malformed CUBLASLT_WORKSPACE_SIZE."""

from __future__ import annotations

import pytest

from layerprof import devices
from layerprof.devices import (
    GPU_KINDS,
    MIB,
    AllocatorConfig,
    GpuKind,
    PriceBook,
    cheapest_gpu_for,
    cublas_workspace_sizes,
    smallest_gpu_for,
)

KIB = 1024
GIB = 1024 * MIB


def test_a_sku_is_built_field_by_field() -> None:
    h100 = devices._gpu("H100", 81559, (9, 0), 989, 67, 494.5, 3350, "H100", ("H100 80GB HBM3",), "sheet", l2=50)
    assert h100 == GpuKind(
        "H100",
        81559,
        (9, 0),
        989,
        "H100",
        fp32_tflops=67,
        tf32_tflops=494.5,
        memory_gbps=3350,
        fp16_tflops=989,  # bfloat16's where no float16 figure is given
        device_names=("H100 80GB HBM3",),
        source="sheet; L2: NVIDIA H100 Tensor Core GPU Architecture whitepaper (H100 SXM5 and PCIe: 50 MB L2; H200, "
        "H100 NVL and GH200 carry the same GH100 configuration)",
        l2_mib=50,
    )
    t4 = devices._gpu("T4", 15360, (7, 5), 8.1, 8.1, 8.1, 320, "T4", ("Tesla T4",), "T4 sheet", fp16=65)
    assert (t4.fp16_tflops, t4.bf16_tflops, t4.source, t4.l2_mib) == (65, 8.1, "T4 sheet", 0.0)  # no L2: source alone


def test_a_mig_slice_takes_its_share_of_the_sms_and_its_eighths_of_the_memory() -> None:
    h100 = GPU_KINDS["H100"]
    slice_ = devices._mig("H100-2g.20gb", h100, 19968, 32 / 132, 2)
    assert slice_ == GpuKind(
        "H100-2g.20gb",
        19968,
        (9, 0),
        pytest.approx(989 * 32 / 132),
        mig_of="H100",
        fp32_tflops=pytest.approx(67 * 32 / 132),
        tf32_tflops=pytest.approx(494.5 * 32 / 132),
        memory_gbps=837.5,  # 3350 GB/s x 2/8
        fp16_tflops=pytest.approx(989 * 32 / 132),
        source=f"{h100.source}; NVIDIA MIG user guide (profiles, memory slices)",
        l2_mib=12.5,  # 50 MiB x 2/8
    )
    assert GPU_KINDS["H100-2g.20gb"] == slice_


def test_a_slice_without_a_profile_in_its_name_counts_a_whole_gpu_and_float32_peaks_without_tf32() -> None:
    odd = GpuKind("H100-custom", 100, (9, 0), 1.0, mig_of="H100")
    assert (odd.share_of_gpu, odd.mig_profile) == (1.0, "custom")
    h100 = GPU_KINDS["H100"]
    assert (h100.peak_tflops("float32"), h100.peak_tflops("float32", True), h100.peak_tflops("float16")) == (
        67,
        494.5,
        989,
    )


def test_a_need_of_exactly_a_gpus_memory_fits_that_gpu() -> None:
    assert smallest_gpu_for(4864 * MIB) == "1g.5gb"
    assert smallest_gpu_for(4864 * MIB + 1) == "1g.10gb"
    gpu, price = cheapest_gpu_for(19968 * MIB, PriceBook())  # type: ignore[misc]
    assert (gpu.name, price.usd_per_hour) == ("H100-1g.20gb", pytest.approx(3.9492 / 7))  # 1/7 of an H100
    gpu, price = cheapest_gpu_for(19968 * MIB + 1, PriceBook())  # type: ignore[misc]
    assert (gpu.name, price.usd_per_hour) == ("L4", 0.7992)


@pytest.mark.parametrize(
    ("value", "divisions"),
    [
        ("4", (4,) * 16),  # one figure: every interval, sixteen of them (1 MiB .. 32 GiB and above)
        ("[256:4]", (4,) * 9 + (0,) * 7),  # the first entry fills the intervals below it; the rest stay unset
        ("[256:1,512:2,>:8]", (1,) * 9 + (2,) + (8,) * 6),
        ("[>:4]", (0,) + (4,) * 15),  # `>` first: from the interval after the first, as PyTorch's last_index 0
        ("[>:4,2048:1]", (1,) * 12 + (4,) * 4),  # an entry after `>` is still read
        ("[1:4]", (4,) + (0,) * 15),  # 1 MiB: the first interval
        ("[65536:4]", (4,) * 16),  # 64 GiB and above: the last interval
        ("[16384:1,32768:8]", (1,) * 15 + (8,)),
    ],
)
def test_roundup_divisions_are_read_per_interval_as_pytorch_reads_them(value: str, divisions: tuple) -> None:
    assert AllocatorConfig.parse(f"roundup_power2_divisions:{value}").roundup_divisions == divisions


def test_settings_without_roundup_divisions_parse_to_the_default() -> None:
    assert AllocatorConfig().roundup_divisions == (0,) * 16
    assert AllocatorConfig.parse("expandable_segments:True") == AllocatorConfig(expandable_segments=True)


@pytest.mark.parametrize(
    ("conf", "requested", "rounded"),
    [
        ("roundup_power2_divisions:[1:4,2:1]", 1200 * KIB, 1280 * KIB),  # 1-2 MiB in quarters
        ("roundup_power2_divisions:[1:1,2:4]", 1200 * KIB, 1200 * KIB),  # that interval plain
        ("roundup_power2_divisions:4", 1200 * KIB + 1, 1280 * KIB),  # an odd size
        ("roundup_power2_divisions:4", 2 * MIB - 1, 2 * MIB),
        ("roundup_power2_divisions:4", 1280 * KIB, 1280 * KIB),  # on a cut: kept
        ("roundup_power2_divisions:4", 600, 1024),  # at most 512 x 4: plain 512-byte rounding
        ("roundup_power2_divisions:4", 600 * KIB, 640 * KIB),  # below 1 MiB: the first interval's divisions
        ("roundup_power2_divisions:[16384:1,32768:8]", 40 * GIB + 1, 44 * GIB),  # 32-64 GiB in eighths
        ("roundup_power2_divisions:[16384:1,32768:8]", 100 * GIB + 1, 104 * GIB),  # above 64 GiB: the last
    ],
)
def test_a_request_is_rounded_to_its_intervals_next_division(conf: str, requested: int, rounded: int) -> None:
    assert AllocatorConfig.parse(conf).rounded_bytes(requested) == rounded


def test_a_malformed_cublaslt_workspace_size_is_its_default() -> None:
    ampere = 4096 * KIB * 2 + 16 * KIB * 8
    assert cublas_workspace_sizes((8, 0), {"CUBLASLT_WORKSPACE_SIZE": "big"}) == (ampere, 1024 * KIB)
    assert cublas_workspace_sizes((8, 0), {"CUBLASLT_WORKSPACE_SIZE": "2048"}) == (ampere, 2048 * KIB)
