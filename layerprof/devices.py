"""Facts about devices that several modules need: the GPUs layerprof knows and the CUDA allocator's rules.

Kept free of torch so that `ladder`, `fit` and `check` can use them without importing it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

from layerprof.errors import LayerprofError

MIB = 2**20

# What a CUDA process holds beyond the allocator's reservation: the CUDA context and the kernel images it loaded.
# Measured on an H200 (driver 580, CUDA 13.0, torch 2.11, lazy module loading) after resnet18 and pythia-1.4b
# steps: NVML's 840 MiB for the process less the allocator's 98 MiB reserved = 742 MiB; older drivers and GPUs
# hold 300-600 MiB. `ladder`, `fit`, `plan` and `simulate` reserve 768 MiB, so that an answer that fits does.
CUDA_CONTEXT_RESERVE_BYTES = 768 * MIB

# Devices an estimate predicts for.
TargetName = Literal["cuda", "cpu"]
TARGETS: tuple[TargetName, ...] = get_args(TargetName)


@dataclass(frozen=True)
class GpuKind:
    """One GPU SKU (or MIG slice) of the table: memory, compute capability, dense peaks and bandwidth, the device
    names torch and NVML report for it, and the datasheet its figures come from."""

    name: str
    memory_mib: int  # nvidia-smi's total memory
    compute_capability: tuple[int, int]
    bf16_tflops: float  # dense bfloat16 peak: the tensor cores', or the CUDA cores' float32 where there are none
    ray_accelerator: str | None = None  # Ray's accelerator_type for nodes of this GPU, where Ray names it
    mig_of: str | None = None  # a MIG slice: the GPU it is cut from
    fp32_tflops: float = 0.0  # dense float32 on the CUDA cores (matmuls at torch's default "highest" precision)
    tf32_tflops: float = 0.0  # dense TF32 on the tensor cores (float32 matmuls with TF32 on); = fp32 without TF32
    memory_gbps: float = 0.0  # memory bandwidth, GB/s
    fp16_tflops: float = 0.0  # dense float16 (float32 accumulate) on the tensor cores
    device_names: tuple[str, ...] = ()  # torch.cuda.get_device_name / NVML names of this SKU, exactly
    source: str = ""  # where the figures come from
    l2_mib: float = 0.0  # the L2 cache, MiB (0: not known; the time model then prices every byte at memory_gbps)

    @property
    def share_of_gpu(self) -> float:
        """The part of a whole GPU this kind is: a MIG slice's compute slices out of 7 (1g.10gb: 1/7), else 1. A
        slice-hour counts this much of a GPU-hour."""
        if self.mig_of is None:
            return 1.0
        match = re.search(r"(\d)g\.", self.name)
        return int(match.group(1)) / 7 if match else 1.0

    @property
    def mig_profile(self) -> str | None:
        """A MIG slice's profile as NVML names it (1g.10gb), else None."""
        return self.name.rsplit("-", 1)[-1] if self.mig_of else None

    def peak_tflops(self, dtype: str, tf32: bool = False) -> float:
        """Dense peak for a product in `dtype` ("float32", "bfloat16", "float16"); float32 on TF32 tensor cores
        when `tf32` (PyTorch's default for convolutions, not for matmuls)."""
        if dtype == "float32":
            return self.tf32_tflops if tf32 else self.fp32_tflops
        return self.fp16_tflops if dtype == "float16" else self.bf16_tflops


# Dense peaks (no structured sparsity: half the datasheets' starred figures), TFLOP/s, and memory bandwidth, GB/s,
# one SKU per entry with its source; `device_names` are the names torch and NVML report, matched exactly.
# bfloat16 and float16 are the tensor cores' rates with float32 accumulate. Turing (T4) has no TF32 or bfloat16
# tensor cores: its TF32 figure is its plain float32 one, and a bfloat16 product (emulated, on the CUDA cores) is
# priced at float32's 8.1, not float16's 65.
_H100_SHEET = "NVIDIA H100 Tensor Core GPU datasheet (SXM, PCIe and NVL columns)"
_H200_SHEET = "NVIDIA H200 Tensor Core GPU datasheet (SXM and NVL columns)"
_A100_SHEET = "NVIDIA A100 Tensor Core GPU datasheet (40/80 GB, SXM4 and PCIe columns)"


# L2 sizes, MiB, from the architecture whitepapers (datasheets do not give them): the die each board is cut from.
_L2_SOURCES = {
    40: "NVIDIA A100 Tensor Core GPU Architecture whitepaper (A100: 40 MB L2)",
    50: "NVIDIA H100 Tensor Core GPU Architecture whitepaper (H100 SXM5 and PCIe: 50 MB L2; H200, H100 NVL and "
    "GH200 carry the same GH100 configuration)",
    6: "NVIDIA Ampere GA102 GPU Architecture whitepaper (GA102: 6144 KB L2)",
    4: "NVIDIA Turing GPU Architecture whitepaper (TU104: 4096 KB L2)",
    48: "NVIDIA Ada Lovelace architecture whitepaper (AD104, L4: 48 MB L2)",
    72: "NVIDIA Ada Lovelace architecture whitepaper, appendix A (GeForce RTX 4090: 72 MB L2)",
    96: "NVIDIA Ada Lovelace architecture whitepaper (full AD102: 96 MB L2; L40, L40S, RTX 6000 Ada)",
}


def _gpu(
    name: str,
    mib: int,
    cc: tuple[int, int],
    bf16: float,
    fp32: float,
    tf32: float,
    gbps: float,
    ray: str | None,
    names: tuple[str, ...],
    source: str,
    fp16: float | None = None,
    l2: float = 0.0,
) -> GpuKind:
    """One SKU; `l2` (MiB) adds its whitepaper's name to the source."""
    return GpuKind(
        name,
        mib,
        cc,
        bf16,
        ray,
        fp32_tflops=fp32,
        tf32_tflops=tf32,
        memory_gbps=gbps,
        fp16_tflops=bf16 if fp16 is None else fp16,
        device_names=names,
        source=f"{source}; L2: {_L2_SOURCES[int(l2)]}" if l2 else source,
        l2_mib=l2,
    )


def _mig(name: str, of: GpuKind, mib: int, compute_share: float, memory_eighths: int) -> GpuKind:
    """A MIG slice: its share of the GPU's SMs for compute, its memory slices (of 8) for bandwidth."""
    return GpuKind(
        name,
        mib,
        of.compute_capability,
        of.bf16_tflops * compute_share,
        mig_of=of.name,
        fp32_tflops=of.fp32_tflops * compute_share,
        tf32_tflops=of.tf32_tflops * compute_share,
        memory_gbps=of.memory_gbps * memory_eighths / 8,
        fp16_tflops=of.fp16_tflops * compute_share,
        source=f"{of.source}; NVIDIA MIG user guide (profiles, memory slices)",
        l2_mib=of.l2_mib * memory_eighths / 8,
    )


# fmt: off
_A100_40 = _gpu("A100-40GB", 40960, (8, 0), 312, 19.5, 156, 1555, "A100", ("A100-SXM4-40GB",), f"{_A100_SHEET}, SXM4",
                l2=40)
_A100_80 = _gpu("A100-80GB", 81920, (8, 0), 312, 19.5, 156, 2039, "A100", ("A100-SXM4-80GB", "A100-SXM-80GB"),
                f"{_A100_SHEET}, SXM4", l2=40)
_H100 = _gpu("H100", 81559, (9, 0), 989, 67, 494.5, 3350, "H100", ("H100 80GB HBM3",), f"{_H100_SHEET}, H100 SXM",
             l2=50)

# Every SKU and MIG slice, in no particular order (`smallest_gpu_for` takes the first of equal memory). "H100",
# "H200", "A100-40GB" and "A100-80GB" are the SXM boards (the names layerprof has always used; `GPU_ALIASES` takes
# "H100-SXM" and the like too); the PCIe and NVL boards, with lower clocks and power, have their own entries. The
# A100 slices keep their short names (1g.5gb, ...); H100 slices are named H100-<profile>. A slice's peak is its
# share of the GPU's SMs (A100: g/7; H100 SXM5: 16, 32, 60, 64 of 132 SMs for 1g, 2g, 3g, 4g), its memory and
# bandwidth NVIDIA's MIG table's share of the GPU's.
GPU_KINDS: dict[str, GpuKind] = {
    gpu.name: gpu
    for gpu in (
        _mig("1g.5gb", _A100_40, 4864, 1 / 7, 1),
        _mig("1g.10gb", _A100_80, 9984, 1 / 7, 1),
        _gpu("T4", 15360, (7, 5), 8.1, 8.1, 8.1, 320, "T4", ("Tesla T4", "T4"),
             "NVIDIA T4 datasheet: FP32 8.1, mixed FP16 65; no TF32 or BF16 tensor cores", fp16=65, l2=4),
        _mig("2g.20gb", _A100_80, 19968, 2 / 7, 2),
        _gpu("L4", 23034, (8, 9), 121, 30.3, 60, 300, "L4", ("L4",), "NVIDIA L4 datasheet", l2=48),
        _gpu("A10", 23028, (8, 6), 125, 31.2, 62.5, 600, "A10", ("A10",), "NVIDIA A10 datasheet", l2=6),
        _gpu("A10G", 23028, (8, 6), 70, 35, 35, 600, "A10G", ("A10G",),
             "no NVIDIA datasheet (AWS-only): AWS EC2 G5 (24 GB, 600 GB/s); FP32 35, TF32 35, BF16 70 dense as "
             "Baseten's 'NVIDIA A10 vs A10G' quotes NVIDIA's figures", l2=6),
        _gpu("RTX4090", 24564, (8, 9), 165.2, 82.6, 82.6, 1008, "GeForce-RTX-4090", ("GeForce RTX 4090",),
             "NVIDIA Ada Lovelace architecture whitepaper, appendix A (GeForce RTX 4090; BF16 with FP32 "
             "accumulate)", l2=72),
        _mig("3g.40gb", _A100_80, 40192, 3 / 7, 4),
        _A100_40,
        _gpu("A100-40GB-PCIe", 40960, (8, 0), 312, 19.5, 156, 1555, "A100", ("A100-PCIE-40GB",),
             f"{_A100_SHEET}, PCIe", l2=40),
        _gpu("L40", 46068, (8, 9), 181, 90.5, 90.5, 864, "L40", ("L40",), "NVIDIA L40 datasheet", l2=96),
        _gpu("L40S", 46068, (8, 9), 362, 91.6, 183, 864, "L40S", ("L40S",), "NVIDIA L40S datasheet", l2=96),
        _gpu("RTX6000-Ada", 49140, (8, 9), 364.2, 91.1, 182.1, 960, None, ("RTX 6000 Ada Generation",),
             "NVIDIA RTX 6000 Ada Generation datasheet; Ada Lovelace architecture whitepaper, appendix A", l2=96),
        _A100_80,
        _gpu("A100-80GB-PCIe", 81920, (8, 0), 312, 19.5, 156, 1935, "A100", ("A100 80GB PCIe",),
             f"{_A100_SHEET}, PCIe", l2=40),
        _H100,
        _gpu("H100-PCIe", 81559, (9, 0), 756.5, 51, 378, 2000, "H100", ("H100 PCIe",), f"{_H100_SHEET}, H100 PCIe",
             l2=50),
        _mig("H100-1g.10gb", _H100, 9984, 16 / 132, 1),
        _mig("H100-1g.20gb", _H100, 19968, 16 / 132, 2),
        _mig("H100-2g.20gb", _H100, 19968, 32 / 132, 2),
        _mig("H100-3g.40gb", _H100, 40192, 60 / 132, 4),
        _mig("H100-4g.40gb", _H100, 40192, 64 / 132, 4),
        _mig("H100-7g.80gb", _H100, 80640, 1.0, 8),
        _gpu("H100-NVL", 95830, (9, 0), 835.5, 60, 417.5, 3900, "H100", ("H100 NVL",), f"{_H100_SHEET}, H100 NVL",
             l2=50),
        _gpu("GH200-96GB", 97871, (9, 0), 989, 67, 494.5, 4000, "GH200", ("GH200 480GB",),
             "NVIDIA GH200 Grace Hopper Superchip datasheet, 96 GB HBM3 (NVML names it by its 480 GB of LPDDR5X)",
             l2=50),
        _gpu("H200", 143771, (9, 0), 989, 67, 494.5, 4800, "H200", ("H200",), f"{_H200_SHEET}, H200 SXM", l2=50),
        _gpu("H200-NVL", 143771, (9, 0), 835.5, 60, 417.5, 4800, "H200", ("H200 NVL",), f"{_H200_SHEET}, H200 NVL",
             l2=50),
        _gpu("B200", 183359, (10, 0), 2250, 75, 1125, 8000, "B200", ("B200",),
             "NVIDIA HGX B200 datasheet, per GPU of 8"),
    )
}
# fmt: on
GPUS: dict[str, int] = {name: gpu.memory_mib for name, gpu in GPU_KINDS.items()}
# Other names `--gpu`, `--cluster` and `--gpu-kinds` take for an entry: the SXM boards by their form factor.
GPU_ALIASES: dict[str, str] = {
    "H100-SXM": "H100",
    "H200-SXM": "H200",
    "A100-40GB-SXM": "A100-40GB",
    "A100-80GB-SXM": "A100-80GB",
}


# ---------------------------------------------------------------- prices

# The variable that names a prices file (as --prices does) for every command that prints dollars.
PRICES_VARIABLE: Final = "LAYERPROF_PRICES"
PriceOrigin = Literal["built-in", "--price", "--prices", "LAYERPROF_PRICES"]


def usd(amount: float) -> str:
    """`$2.4984`, `$2.49`, `$1,234.5`: dollars to four decimals, trailing zeros dropped."""
    return "$" + f"{amount:,.4f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class GpuPrice:
    """What one GPU of a kind costs to rent: US dollars per hour, and where that figure comes from."""

    usd_per_hour: float
    source: str  # the public page, the file or the option the figure was read from
    date: str = ""  # when the source said so (ISO date), where known
    origin: PriceOrigin = "built-in"

    @property
    def label(self) -> str:
        """`$3.95/h (Modal list price, 2026-05-07)`: the figure with its source, as every dollar figure names it."""
        dated = f", {self.date}" if self.date else ""
        return f"{usd(self.usd_per_hour)}/h ({self.source}{dated})"


# On-demand list prices of one whole GPU, one public source per kind, each with the date it was read on: Modal's
# per-second rates (modal.com/pricing, x 3600) and Lambda's 1-GPU instances (lambda.ai/pricing), both as quoted
# on 2026-05-07 by techbytes.app/posts/serverless-gpu-pricing-matrix-modal-replicate-lambda-2026. Kinds without a
# dated public figure we could check (H200, B200, RTX4090) have none: give --price KIND=USD. A MIG slice costs its
# share of its GPU's price (`GpuKind.share_of_gpu`). Prices move: a team with a contract gives its own.
_MODAL = "Modal list price, modal.com/pricing"
_LAMBDA = "Lambda on-demand 1-GPU list price, lambda.ai/pricing"
_QUOTED = "2026-05-07"
GPU_PRICES: dict[str, GpuPrice] = {
    "T4": GpuPrice(0.5904, _MODAL, _QUOTED),
    "L4": GpuPrice(0.7992, _MODAL, _QUOTED),
    "A10": GpuPrice(0.86, _LAMBDA, _QUOTED),
    "A100-40GB": GpuPrice(1.48, _LAMBDA, _QUOTED),
    "L40S": GpuPrice(1.9512, _MODAL, _QUOTED),
    "A100-80GB": GpuPrice(2.4984, _MODAL, _QUOTED),
    "H100": GpuPrice(3.9492, _MODAL, _QUOTED),
}


@dataclass(frozen=True)
class PriceBook:
    """The prices a run uses: the user's (`--price`, `--prices`, LAYERPROF_PRICES), by kind name, before the
    built-in table. A MIG slice without a price of its own costs its share of its GPU's."""

    given: dict[str, GpuPrice] = field(default_factory=dict)  # kind name (as GPU_KINDS spells it) -> price
    builtin: bool = True  # False: only the given prices count

    def find(self, gpu: GpuKind) -> GpuPrice | None:
        """The price of one GPU (or slice) of `gpu`, or None where neither the user nor the table has one."""
        own = self.given.get(gpu.name) or (GPU_PRICES.get(gpu.name) if self.builtin else None)
        if own is not None:
            return own
        if gpu.mig_of is not None and (parent := self.find(GPU_KINDS[gpu.mig_of])) is not None:
            share = gpu.share_of_gpu
            return GpuPrice(
                parent.usd_per_hour * share,
                f"{share:.3g} of {gpu.mig_of} at {parent.label}",
                origin=parent.origin,
            )
        return None

    def price(self, gpu: GpuKind) -> GpuPrice:
        """The price of `gpu`; a kind nobody priced is an input error that says how to give one."""
        found = self.find(gpu)
        if found is None:
            raise LayerprofError(
                f"no price for {gpu.name} (give one: --price {gpu.name}=USD_PER_HOUR, a --prices file or "
                f"{PRICES_VARIABLE}=FILE; built-in prices: {', '.join(GPU_PRICES)})"
            )
        return found

    def usd(self, gpu: GpuKind, seconds: float) -> float:
        """What `seconds` of one `gpu` cost."""
        return self.price(gpu).usd_per_hour * seconds / 3600


def _device_key(name: str) -> str:
    """A device name as compared: case and runs of spaces ignored, and the "NVIDIA " every name but Tesla's has."""
    key = " ".join(name.split()).casefold()
    return key.removeprefix("nvidia ")


_BY_DEVICE_NAME: dict[str, GpuKind] = {
    _device_key(device): gpu for gpu in GPU_KINDS.values() for device in gpu.device_names
}


def kind_of_device(device_name: str) -> GpuKind | None:
    """The table's SKU for a CUDA device name exactly as torch and NVML report it ("NVIDIA H100 80GB HBM3",
    "NVIDIA A100-SXM4-40GB", "NVIDIA H100 80GB HBM3 MIG 1g.10gb"), or None: a name that is not in the table, even
    a near one ("NVIDIA H100 PCIe" is not the SXM board, "NVIDIA H800" not an H100), has no kind."""
    board, mig, profile = device_name.partition(" MIG ")
    gpu = _BY_DEVICE_NAME.get(_device_key(board))
    if gpu is None or not mig:
        return gpu
    wanted = profile.strip().casefold()
    return next((s for s in GPU_KINDS.values() if s.mig_of == gpu.name and s.mig_profile == wanted), None)


def unknown_device_error(device_name: str, what: str) -> LayerprofError:
    """The refusal to predict for a device the table does not list: one line with the kinds it does."""
    return LayerprofError(
        f"{what}: {device_name!r} is not a GPU layerprof knows (it does not guess from a near name); "
        f"known: {', '.join(GPU_KINDS)}"
    )


def peak_tflops(gpu: GpuKind, precision: str, tf32: bool = False) -> float:
    """The dense peak a training precision's matrix products run at: bfloat16's for bf16-*, float16's for 16-*
    (the tensor cores', where the GPU has them), TF32 or plain float32 for 32-true (`tf32`: float32 matmuls
    allowed TF32)."""
    dtype = "bfloat16" if precision.startswith("bf16") else "float16" if precision.startswith("16") else "float32"
    return gpu.peak_tflops(dtype, tf32)


def find_gpu(name: str) -> GpuKind | None:
    """A GPU in the table by case-insensitive name (or alias: H100-SXM), or None."""
    wanted = name.strip().casefold()
    for known, target in (*((n, n) for n in GPU_KINDS), *GPU_ALIASES.items()):
        if known.casefold() == wanted:
            return GPU_KINDS[target]
    return None


def gpu_kind(name: str) -> GpuKind:
    """A GPU in the table, by case-insensitive name; an unknown one is an input error."""
    gpu = find_gpu(name)
    if gpu is None:
        raise LayerprofError(f"unknown --gpu {name!r}; known: {', '.join(GPU_KINDS)}")
    return gpu


def gpu_memory_bytes(name: str) -> int:
    """Total memory of a GPU in the table, by case-insensitive name."""
    return gpu_kind(name).memory_mib * MIB


def cheapest_gpu_for(need_bytes: int, prices: PriceBook) -> tuple[GpuKind, GpuPrice] | None:
    """The GPU (or MIG slice) of the table with the lowest price per hour whose memory holds `need_bytes`; at equal
    price the one with less memory. Kinds without a price are passed over; None where no priced kind holds it."""
    fitting = [
        (gpu, price)
        for gpu in GPU_KINDS.values()
        if need_bytes <= gpu.memory_mib * MIB and (price := prices.find(gpu)) is not None
    ]
    return min(fitting, key=lambda pair: (pair[1].usd_per_hour, pair[0].memory_mib), default=None)


def smallest_gpu_for(need_bytes: int) -> str | None:
    """The GPU in the table with the least memory that still holds `need_bytes`."""
    for name, mib in sorted(GPUS.items(), key=lambda item: item[1]):
        if need_bytes <= mib * MIB:
            return name
    return None


# ---------------------------------------------------------------- the CUDA caching allocator's block rules
# c10/cuda/CUDACachingAllocator.cpp: every request is rounded up to 512 bytes (or, with roundup_power2_divisions,
# to the next of N equal divisions between two powers of two); requests up to 1 MiB come from 2 MiB segments of
# the small pool, larger ones from 20 MiB segments (below 10 MiB) or from segments rounded up to 2 MiB. A block
# from the large pool is split only when more than 1 MiB would remain and the request is below max_split_size,
# so a tensor of 11.5 MiB holds a whole 12 MiB block; with expandable segments every block is split down to the
# rounded request. `torch.cuda.max_memory_allocated` counts blocks, not requests.

CUDA_MIN_BLOCK_BYTES = 512
CUDA_SMALL_REQUEST_BYTES = 1 * MIB
CUDA_LARGE_SEGMENT_BYTES = 20 * MIB
CUDA_LARGE_SEGMENT_MIN_BYTES = 10 * MIB
CUDA_LARGE_ROUNDING_BYTES = 2 * MIB
# roundup_power2_divisions has one value per power-of-two interval of request sizes, from 1 MiB to 32 GiB
ROUNDUP_INTERVALS = 16
# The variables PyTorch reads the allocator's settings from (PYTORCH_ALLOC_CONF is the newer name).
ALLOC_CONF_VARIABLES = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")


@dataclass(frozen=True)
class AllocatorConfig:
    """The settings of PYTORCH_CUDA_ALLOC_CONF that change the size of the block a request gets. The others
    (garbage_collection_threshold, max_non_split_rounding_mb, ...) change which cached block is reused, which
    a fresh allocation never meets."""

    expandable_segments: bool = False
    max_split_size_bytes: int | None = None  # None: every large block may be split
    roundup_divisions: tuple[int, ...] = (0,) * ROUNDUP_INTERVALS  # 0 or 1: plain 512-byte rounding

    @classmethod
    def parse(cls, text: str | None) -> AllocatorConfig:
        """`expandable_segments:True,max_split_size_mb:128,roundup_power2_divisions:[256:1,>:4]`; unknown keys
        are ignored as they do not change block sizes, malformed values are an input error."""
        if not text:
            return cls()
        expandable, max_split, divisions = False, None, [0] * ROUNDUP_INTERVALS
        for key, value in re.findall(r"(\w+)\s*:\s*(\[[^\]]*\]|[^,]+)", text):
            try:
                if key == "expandable_segments":
                    expandable = value.strip().lower() in ("true", "1")
                elif key == "max_split_size_mb":
                    max_split = int(float(value)) * MIB
                elif key == "roundup_power2_divisions":
                    divisions = _roundup_divisions(value.strip())
            except ValueError as error:
                raise LayerprofError(
                    f"PYTORCH_CUDA_ALLOC_CONF={text!r}: cannot read {key}:{value} ({error}); "
                    "see https://pytorch.org/docs/stable/notes/cuda.html#optimizing-memory-usage-with-pytorch-cuda-alloc-conf"
                ) from error
        return cls(expandable, max_split, tuple(divisions))

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> AllocatorConfig:
        """The settings this process's CUDA allocator reads (or `environ`'s)."""
        environ = dict(os.environ) if environ is None else environ
        return cls.parse(next((environ[name] for name in ALLOC_CONF_VARIABLES if environ.get(name)), None))

    def rounded_bytes(self, requested_bytes: int) -> int:
        """The allocator's `round_size`: 512-byte multiples, or power-of-two divisions where configured."""
        if requested_bytes < CUDA_MIN_BLOCK_BYTES:
            return CUDA_MIN_BLOCK_BYTES
        interval = min(max(0, requested_bytes.bit_length() - 1 - 20), ROUNDUP_INTERVALS - 1)
        divisions = self.roundup_divisions[interval]
        if divisions > 1 and requested_bytes > CUDA_MIN_BLOCK_BYTES * divisions:
            return _next_division(requested_bytes, divisions)
        return -(-requested_bytes // CUDA_MIN_BLOCK_BYTES) * CUDA_MIN_BLOCK_BYTES

    def block_bytes(self, requested_bytes: int) -> int:
        """The block a fresh request gets, as `torch.cuda.max_memory_allocated` counts it."""
        if requested_bytes <= 0:
            return 0
        size = self.rounded_bytes(requested_bytes)
        if size <= CUDA_SMALL_REQUEST_BYTES or self.expandable_segments:
            return size  # the small pool and expandable segments split off whatever is left
        if size < CUDA_LARGE_SEGMENT_MIN_BYTES:
            segment = CUDA_LARGE_SEGMENT_BYTES
        else:
            segment = -(-size // CUDA_LARGE_ROUNDING_BYTES) * CUDA_LARGE_ROUNDING_BYTES
        splittable = self.max_split_size_bytes is None or size < self.max_split_size_bytes
        return size if splittable and segment - size > CUDA_SMALL_REQUEST_BYTES else segment


def _roundup_divisions(value: str) -> list[int]:
    """`4` (every interval) or `[256:1,512:2,>:4]` (per interval of request sizes in MiB), as PyTorch reads it."""
    if not value.startswith("["):
        return [int(value)] * ROUNDUP_INTERVALS
    divisions = [0] * ROUNDUP_INTERVALS
    first, last_index = True, 0
    for entry in filter(None, (part.strip() for part in value.strip("[]").split(","))):
        bound, _, count = entry.partition(":")
        if bound.strip() == ">":
            divisions[last_index + 1 :] = [int(count)] * (ROUNDUP_INTERVALS - last_index - 1)
            continue
        index = min(max(0, int(bound).bit_length() - 1), ROUNDUP_INTERVALS - 1)
        if first:
            divisions[:index] = [int(count)] * index
            first = False
        divisions[index], last_index = int(count), index
    return divisions


def _next_division(size: int, divisions: int) -> int:
    """The allocator's `roundup_power2_next_division`: the interval between two powers of two cut in
    `divisions` equal parts, rounded up to the next cut."""
    if size & (size - 1) == 0:
        return size
    floor = 1 << (size.bit_length() - 1)
    step = floor >> (divisions.bit_length() - 1)
    if step == 0:
        return floor << 1
    below = size & ~(step - 1)
    return size if below == size else below + step


DEFAULT_ALLOCATOR = AllocatorConfig()


def cuda_block_bytes(requested_bytes: int, config: AllocatorConfig = DEFAULT_ALLOCATOR) -> int:
    """The block the caching allocator hands out for a fresh request of `requested_bytes`."""
    return config.block_bytes(requested_bytes)


# ---------------------------------------------------------------- cuBLAS / cuBLASLt workspaces
# aten/src/ATen/cuda/CublasHandlePool.cpp: cuBLAS handles are per thread, and each (handle, stream) gets a
# cuBLAS workspace from the caching allocator the first time that thread runs a matrix product, and keeps it:
# CUBLAS_WORKSPACE_CONFIG's total, by default :4096:8 (32 MiB) on Hopper (sm90) and :4096:2:16:8
# (8 MiB + 128 KiB) elsewhere. cuBLASLt, which fused-bias matrix products (`addmm`, Linear with a bias) use, gets
# its own CUBLASLT_WORKSPACE_SIZE KiB (default 1024), capped at the cuBLAS workspace, and none of its own when
# TORCH_CUBLASLT_UNIFIED_WORKSPACE=1 shares the cuBLAS one. A training step has two such threads: the forward
# and the optimizer run on the caller's thread, the backward on autograd's device thread, each with its own
# handle and so its own workspaces.


@dataclass(frozen=True)
class MatmulThreads:
    """Which threads of a step ran matrix products, and which of them fused-bias ones (cuBLASLt)."""

    forward: bool = False  # the caller's thread: forward, loss, optimizer
    forward_lt: bool = False
    backward: bool = False  # autograd's device thread
    backward_lt: bool = False


def cublas_workspace_sizes(
    compute_capability: tuple[int, int] | None, environ: dict[str, str] | None = None
) -> tuple[int, int]:
    """(cuBLAS, cuBLASLt) workspace requests of one thread's handle on one stream, in bytes."""
    environ = dict(os.environ) if environ is None else environ
    config = environ.get("CUBLAS_WORKSPACE_CONFIG")
    pairs = re.findall(r":([0-9]+):([0-9]+)", config or "")
    if pairs:
        cublas = sum(int(size) * 1024 * int(count) for size, count in pairs)
    elif compute_capability == (9, 0):
        cublas = 4096 * 1024 * 8
    else:
        cublas = 4096 * 1024 * 2 + 16 * 1024 * 8
    if environ.get("TORCH_CUBLASLT_UNIFIED_WORKSPACE", "").strip().lower() in ("1", "true", "on", "yes", "y"):
        return cublas, 0
    try:
        cublas_lt = int(environ.get("CUBLASLT_WORKSPACE_SIZE", "1024")) * 1024
    except ValueError:
        cublas_lt = 1024 * 1024
    return cublas, min(cublas_lt, cublas)


def cublas_workspace_bytes(
    compute_capability: tuple[int, int] | None,
    environ: dict[str, str] | None = None,
    threads: MatmulThreads = MatmulThreads(forward=True, forward_lt=True),
    allocator: AllocatorConfig = DEFAULT_ALLOCATOR,
) -> int:
    """The persistent matmul workspaces a training process holds: for each thread that ran a matrix product, its
    cuBLAS workspace, and its cuBLASLt one where it ran a fused-bias product. One thread with both by default."""
    cublas, cublas_lt = cublas_workspace_sizes(compute_capability, environ)
    total = 0
    for ran, ran_lt in ((threads.forward, threads.forward_lt), (threads.backward, threads.backward_lt)):
        if ran or ran_lt:
            total += cuda_block_bytes(cublas, allocator)
        if ran_lt and cublas_lt:
            total += cuda_block_bytes(cublas_lt, allocator)
    return total


# ---------------------------------------------------------------- inventories


@dataclass(frozen=True)
class InventoryItem:
    """A count of one GPU kind (or MIG slice) in the inventory `plan` places rungs on."""

    gpu: GpuKind
    count: int
