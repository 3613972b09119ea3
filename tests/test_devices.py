"""The GPU table: one entry per SKU with its source, device names matched exactly (never a near neighbour), the
aliases of the SXM boards, and the refusal to predict for a device the table does not list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.devices import (
    GPU_ALIASES,
    GPU_KINDS,
    find_gpu,
    gpu_kind,
    kind_of_device,
    peak_tflops,
    smallest_gpu_for,
)
from layerprof.errors import LayerprofError
from layerprof.fidelity.plan import plan_cluster
from layerprof.measure.cluster import parse_inventory
from layerprof.profile import Row, load_profile, save_profile
from tests.cli.test_cli import assert_one_line_error
from tests.conftest import bare_profile

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize(
    ("device_name", "kind"),
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 PCIe", "H100-PCIe"),
        ("NVIDIA H100 NVL", "H100-NVL"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA H200 NVL", "H200-NVL"),
        ("NVIDIA GH200 480GB", "GH200-96GB"),
        ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA A100-SXM-80GB", "A100-80GB"),
        ("NVIDIA A100-PCIE-40GB", "A100-40GB-PCIe"),
        ("NVIDIA A100 80GB PCIe", "A100-80GB-PCIe"),
        ("NVIDIA A10", "A10"),
        ("NVIDIA A10G", "A10G"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA L40", "L40"),
        ("NVIDIA L40S", "L40S"),
        ("Tesla T4", "T4"),
        ("NVIDIA GeForce RTX 4090", "RTX4090"),
        ("NVIDIA RTX 6000 Ada Generation", "RTX6000-Ada"),
        ("NVIDIA B200", "B200"),
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "H100-1g.10gb"),
        ("NVIDIA H100 80GB HBM3 MIG 3g.40gb", "H100-3g.40gb"),
        ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", "1g.5gb"),
        ("NVIDIA A100-SXM4-80GB MIG 1g.10gb", "1g.10gb"),
        ("NVIDIA A100-SXM4-80GB MIG 3g.40gb", "3g.40gb"),
        ("  nvidia   h100 pcie ", "H100-PCIe"),  # case and spaces do not make another name
    ],
)
def test_a_device_name_finds_exactly_its_sku(device_name: str, kind: str) -> None:
    found = kind_of_device(device_name)
    assert found is not None and found.name == kind


@pytest.mark.parametrize(
    "device_name",
    [
        "NVIDIA H100",  # which board?
        "NVIDIA H800",
        "NVIDIA H100 80GB HBM3e",
        "NVIDIA GH200 144G HBM3e",  # not listed: refused, not priced as the 96 GB one
        "NVIDIA A100",
        "NVIDIA A10M",
        "NVIDIA L40G",
        "NVIDIA RTX 6000",
        "NVIDIA H100 80GB HBM3 MIG 1g.10gb+me",  # a profile the table does not list
        "NVIDIA A100 80GB PCIe MIG 1g.10gb",  # the SXM board's slice is not the PCIe board's
        "NVIDIA H100 PCIe MIG 1g.10gb",
        "AMD Instinct MI300X",
        "Intel(R) Xeon(R) Processor",
        "",
    ],
)
def test_a_near_name_has_no_kind(device_name: str) -> None:
    assert kind_of_device(device_name) is None


def test_every_sku_names_its_source_and_its_device_names_lead_back_to_it() -> None:
    seen: dict[str, str] = {}
    for gpu in GPU_KINDS.values():
        assert gpu.source, gpu.name
        assert bool(gpu.device_names) != bool(gpu.mig_of), gpu.name  # boards have names, slices their board's
        for device in gpu.device_names:
            assert device not in seen, (device, seen.get(device), gpu.name)
            seen[device] = gpu.name
            assert kind_of_device(f"NVIDIA {device}") is gpu
    assert len(seen) >= 21


def test_the_skus_differ_where_their_datasheets_do() -> None:
    """The issue's examples: the PCIe H100 runs at 76% of the SXM's bf16 peak with 60% of its bandwidth; the
    GH200 holds 96 GB, not the H200's 141; the A100 80GB PCIe has 1,935 GB/s, not 2,039; A10G is not A10."""
    h100, pcie, nvl = GPU_KINDS["H100"], GPU_KINDS["H100-PCIe"], GPU_KINDS["H100-NVL"]
    assert (pcie.fp32_tflops, pcie.tf32_tflops, pcie.bf16_tflops, pcie.memory_gbps) == (51, 378, 756.5, 2000)
    assert (nvl.fp32_tflops, nvl.tf32_tflops, nvl.bf16_tflops, nvl.memory_gbps, nvl.memory_mib) == (
        60, 417.5, 835.5, 3900, 95830,
    )  # fmt: skip
    assert h100.bf16_tflops / pcie.bf16_tflops == pytest.approx(1.307, abs=1e-3)
    assert GPU_KINDS["H200-NVL"].bf16_tflops == 835.5 and GPU_KINDS["H200"].bf16_tflops == 989
    assert GPU_KINDS["GH200-96GB"].memory_mib == 97871 < GPU_KINDS["H200"].memory_mib
    assert (GPU_KINDS["A100-80GB-PCIe"].memory_gbps, GPU_KINDS["A100-80GB"].memory_gbps) == (1935, 2039)
    assert (GPU_KINDS["A10G"].bf16_tflops, GPU_KINDS["A10"].bf16_tflops) == (70, 125)
    assert (GPU_KINDS["L40"].bf16_tflops, GPU_KINDS["L40S"].bf16_tflops) == (181, 362)


def test_turing_prices_bfloat16_on_its_cuda_cores() -> None:
    """T4 has float16 tensor cores (65 TFLOP/s) but none for bfloat16 or TF32: bf16-* runs at float32's 8.1."""
    t4 = GPU_KINDS["T4"]
    assert (peak_tflops(t4, "16-mixed"), peak_tflops(t4, "bf16-mixed"), peak_tflops(t4, "32-true", tf32=True)) == (
        65, 8.1, 8.1,
    )  # fmt: skip
    l4 = GPU_KINDS["L4"]
    assert peak_tflops(l4, "16-mixed") == peak_tflops(l4, "bf16-true") == 121


def test_the_short_names_stay_the_sxm_boards_and_aliases_say_so() -> None:
    assert gpu_kind("h100") is GPU_KINDS["H100"] and GPU_KINDS["H100"].device_names == ("H100 80GB HBM3",)
    for alias, name in GPU_ALIASES.items():
        assert find_gpu(alias.lower()) is GPU_KINDS[name] and "SXM" in GPU_KINDS[name].source
    assert find_gpu("H100 PCIe") is None and find_gpu("GH200") is None
    with pytest.raises(LayerprofError, match="unknown --gpu 'H800'; known: 1g.5gb, 1g.10gb, T4"):
        gpu_kind("H800")
    assert [i.gpu.name for i in parse_inventory("2xH100-SXM,1xH100-PCIe")] == ["H100", "H100-PCIe"]


def test_smallest_gpu_keeps_the_first_listed_of_equal_memory() -> None:
    assert smallest_gpu_for(23_000 * 2**20) == "A10"  # not A10G (also 23,028 MiB)
    assert smallest_gpu_for(81_000 * 2**20) == "H100"  # not H100-PCIe
    assert smallest_gpu_for(90_000 * 2**20) == "H100-NVL"


@pytest.mark.parametrize("folder", ["profiles/baselines", "benchmarks/results"])
def test_the_committed_gpu_profiles_map_to_their_sku(folder: str) -> None:
    names = set()
    for path in (ROOT / folder).rglob("*.json"):
        environment = json.loads(path.read_text()).get("environment") or {}
        if environment.get("device_kind") == "cuda" and not environment.get("estimated"):
            names.add(environment["device_name"])
    assert names == {"NVIDIA H200"}
    assert all(kind_of_device(name) is GPU_KINDS["H200"] for name in names)


def unknown_gpu_profile(tmp_path: Path) -> Path:
    row = Row(1, 1, "ok", step_time_ms=10.0, flops=10**12, peak_memory_bytes=2**30, peak_reserved_bytes=2**30)
    profile = bare_profile([row], 1, spec="model", device_kind="cuda", device_name="NVIDIA H800 PCIe",
                           total_memory_bytes=80 * 2**30)  # fmt: skip
    path = tmp_path / "h800.json"
    save_profile(profile, path)
    return path


def test_a_plan_refuses_a_profile_of_a_device_the_table_does_not_list(runner: CliRunner, tmp_path: Path) -> None:
    path = unknown_gpu_profile(tmp_path)
    with pytest.raises(LayerprofError, match=r"model: 'NVIDIA H800 PCIe' is not a GPU layerprof knows"):
        plan_cluster([load_profile(path)], parse_inventory("1xH100"), eta=3)
    result = runner.invoke(app, ["plan", str(path), "--cluster", "1xH100"])
    assert_one_line_error(result, "'NVIDIA H800 PCIe' is not a GPU layerprof knows", "known: 1g.5gb", "H100-PCIe")
