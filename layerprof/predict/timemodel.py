"""Step time before you rent: a roofline over every operation of a cell's traced training step.

An estimate runs each cell's step on fake tensors; `layerprof.measure.instruments.OpRecorder` keeps, per aten
operation, its FLOPs (the profile's own FLOP count), the bytes it reads and writes, its compute dtype, its phase
(forward, backward, optimizer) and the kernels it launches. `TimeModel.predict` turns that trace into time on a device:

* each kernel takes max(FLOPs / (peak of its dtype x compute efficiency of its class),
  bytes / (memory bandwidth x memory efficiency)) + a fixed per-kernel cost (the roofline, Williams et al. 2009);
  on a CPU a convolution's efficiency also depends on its kind, its pass and its output size per image
  (`ConvTable`), and large fresh outputs add the cost of their new pages;
* on a GPU the host launches the step while the device runs it: the step takes max(device time, host time),
  the host time being a per-operation dispatch cost (PyTorch's Python and dispatcher; calibrated);
* on the CPU the two add up: every operation is dispatched and then run by the same threads.

Peaks come from the GPU table (`layerprof.devices.GpuKind`: datasheet figures) or, for this CPU, from a few
seconds of measurement (`cpu_peaks`, cached per machine). The efficiencies and per-kernel costs are documented
defaults (`DEFAULT_CONSTANTS`) until `calibrate` fits them to measured profiles of the same device kind by least
squares on log step times, pulled towards the defaults where the data cannot tell (a few profiles cannot
separate every constant). Predictions are labelled as such wherever they are shown.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TypedDict

import torch
from torch._subclasses.fake_tensor import unset_fake_temporarily

from layerprof.devices import GpuKind
from layerprof.errors import LayerprofError
from layerprof.measure.instruments import ConvKind, ConvShape, OpClass, OpCost, Phase, PoolShape, StepTrace
from layerprof.profile import JsonDict, Profile

# ---------------------------------------------------------------- devices


@dataclass(frozen=True)
class DevicePeaks:
    """What a device can do at best: FLOP/s by dtype, memory bandwidth, and where the figures come from."""

    name: str
    kind: str  # "cuda" | "cpu"
    fp32_tflops: float
    tf32_tflops: float
    bf16_tflops: float
    fp16_tflops: float
    memory_gbps: float
    source: str
    # the cache levels an operation's working set may fit, smallest first: (name, bytes, GB/s). An op whose bytes
    # (read + written) fit a level moves them at its rate; a larger one at `memory_gbps`. Empty: DRAM for all.
    caches: tuple[tuple[str, int, float], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "caches", tuple((str(n), int(b), float(r)) for n, b, r in self.caches))

    def gbps_for(self, nbytes: float) -> float:
        """The rate an operation moving `nbytes` (read + written) reaches: the smallest cache level it fits,
        else memory (memory for every operation on a device kind whose levels are not priced: see
        CACHE_LEVELS_PRICED)."""
        for _name, size, gbps in self.caches if CACHE_LEVELS_PRICED[self.kind] else ():
            if nbytes <= size:
                return gbps
        return self.memory_gbps

    def tflops(self, dtype: str, op: OpClass, tf32_matmul: bool, tf32_conv: bool) -> float:
        """The peak TFLOP/s `op` may reach in `dtype`: float32 at TF32's where allowed, float64 at float32's."""
        if dtype == "float32":
            tf32 = tf32_conv if op in (OpClass.CONV, OpClass.GROUPED_CONV) else tf32_matmul
            return self.tf32_tflops if tf32 else self.fp32_tflops
        if dtype == "float16":
            return self.fp16_tflops
        if dtype == "bfloat16":
            return self.bf16_tflops
        return self.fp32_tflops  # float64 and the rest: never faster than float32

    @classmethod
    def of_gpu(cls, gpu: GpuKind) -> DevicePeaks:
        """A GPU's peaks from its datasheet entry in layerprof.devices; its L2 (where the entry knows its size) at
        `GPU_L2_SPEEDUP` times the memory bandwidth, since datasheets give no L2 rate."""
        caches = (("L2", int(gpu.l2_mib * 2**20), gpu.memory_gbps * GPU_L2_SPEEDUP),) if gpu.l2_mib else ()
        return cls(
            gpu.name,
            "cuda",
            gpu.fp32_tflops,
            gpu.tf32_tflops,
            gpu.bf16_tflops,
            gpu.fp16_tflops,
            gpu.memory_gbps,
            f"{gpu.name}: {gpu.source}",
            caches,
        )


# The new outputs whose pages are new every step on a CPU, by phase: glibc's malloc serves an allocation of at least
# 32 MiB (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit Linux) by a fresh mmap, whose pages the OS faults in (zeroed) as the
# operation writes them; in the optimizer from 2 MiB, since single-tensor Adam(W) allocates two temporaries per
# parameter and frees them before the next, so the heap's top is trimmed and grown again each time (one AdamW step
# on a parameter of 1 MiB costs ~4 passes over it, of 2 MiB ~16: benchmarks/bench_op_classes.py). What a MiB of
# faults costs is `page_fault_ms_per_mib` (GPUs: 0, their caching allocator keeps its blocks).
FRESH_PAGES_BYTES = {
    Phase.FORWARD: 32 * 2**20,
    Phase.BACKWARD: 32 * 2**20,
    Phase.RECOMPUTE: 32 * 2**20,
    Phase.OPTIMIZER: 2 * 2**20,
}

# Whether a device kind's bytes are priced at the cache level they fit. CPUs: yes, at the copy rates `cpu_peaks`
# measures; on the held-out CPU set measured on a quiet machine (docs/research.md) it lowered the median step error
# with the default constants from 32.2% to 28.7% (calibrated: 20.8% to 15.3%). GPUs: no (the levels are kept with
# the peaks): their L2 rate below is not measured, and 8 device-bound H200 cells are too few to judge it.
CACHE_LEVELS_PRICED = {"cpu": True, "cuda": False}

# A GPU's L2 serves what fits it at about twice the HBM/GDDR bandwidth (microbenchmarks of A100 and H100 read
# 2-2.5x; no datasheet gives an L2 rate): an approximation, used only for operations whose bytes fit the L2.
GPU_L2_SPEEDUP = 2.0


class ConvPass(str, Enum):
    """What a convolution computes: its forward, or one of the two gradients `convolution_backward` computes (each
    with the forward's FLOPs)."""

    FORWARD = "forward"
    INPUT_GRAD = "input_grad"
    WEIGHT_GRAD = "weight_grad"


@dataclass(frozen=True)
class ConvTable:
    """The share of the float32 peak a kind of convolution reaches in one pass, by its output positions per image
    and channel (`ConvShape.out_pixels`): measured points (pixels, share), joined by straight lines in log(pixels)
    and held flat beyond the first and the last. Small late layers run far from the peak: a dense 3x3 convolution's
    weight gradient at a 1x1 output reaches a tenth of what it does at 32x32."""

    points: tuple[tuple[int, float], ...]  # (output positions, share of the peak), by output positions

    def at(self, pixels: int) -> float:
        """The share at `pixels` output positions."""
        first, last = self.points[0], self.points[-1]
        if pixels <= first[0]:
            return first[1]
        if pixels >= last[0]:
            return last[1]
        for (p0, e0), (p1, e1) in zip(self.points, self.points[1:], strict=False):
            if p0 <= pixels <= p1:
                return e0 + (e1 - e0) * math.log(pixels / p0) / math.log(p1 / p0)
        raise AssertionError("unreachable: the points are sorted")


P = ConvPass


@dataclass(frozen=True)
class CpuShapes:
    """What the single-operation sweep (`benchmarks/bench_conv_shapes.py --write`) measured on a CPU: each kind and
    pass of convolution's share of the float32 peak by output size, and max pooling's share of it by pass (its window
    visits or gradient additions counted as FLOPs). The CPU's defaults are a function of it: re-running the sweep
    is a change of data (CPU_SHAPES_FILE), not of code."""

    conv_tables: dict[tuple[ConvKind, ConvPass], ConvTable]
    pool_shares: dict[ConvPass, float]  # FORWARD: visits of window positions; INPUT_GRAD: the backward's additions
    source: str
    # a strided convolution's share over the unit-stride table's at its output size, by pass (the median of the
    # sweep's strided cases): stems and downsampling run slower than their output size says
    strided_factors: dict[ConvPass, float] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> CpuShapes:
        """From the JSON the sweep writes: {"source", "conv_tables": {"kind/pass": [[pixels, share], ...]},
        "pool_shares": {"pass": share}, "strided_factors": {"pass": factor}}. LayerprofError naming `path` where it is
        missing, unreadable, or lacks a kind and pass of convolution, a pooling pass, or a table's points in order."""
        try:
            data = json.loads(path.read_text())
            tables = {}
            for key, points in data["conv_tables"].items():
                kind, conv_pass = key.split("/")
                table = tuple((int(p), float(s)) for p, s in points)
                if not table or [p for p, _ in table] != sorted({p for p, _ in table}):
                    raise ValueError(f"{key}: no points, or not in order of output positions")
                tables[(ConvKind(kind), ConvPass(conv_pass))] = ConvTable(table)
            pools = {ConvPass(name): float(share) for name, share in data["pool_shares"].items()}
            strided = {ConvPass(name): float(factor) for name, factor in data.get("strided_factors", {}).items()}
            missing = [f"{k.value}/{p.value}" for k in ConvKind for p in ConvPass if (k, p) not in tables]
            missing += [f"pool_shares {p.value}" for p in (ConvPass.FORWARD, ConvPass.INPUT_GRAD) if p not in pools]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            return cls(tables, pools, str(data["source"]), strided)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise LayerprofError(
                f"{path}: the CPU's convolution tables are unreadable ({error}); reinstall layerprof or re-run "
                "benchmarks/bench_conv_shapes.py --write"
            ) from None

    @property
    def conv_efficiency(self) -> float:
        """The default `conv_efficiency`: the best median share a dense forward reaches (the tables scale by it)."""
        return round(max(share for _, share in self.conv_tables[(ConvKind.DENSE, ConvPass.FORWARD)].points), 2)

    @property
    def grouped_conv_efficiency(self) -> float:
        """The default `grouped_conv_efficiency`: the best median share a depthwise forward reaches."""
        return round(max(share for _, share in self.conv_tables[(ConvKind.DEPTHWISE, ConvPass.FORWARD)].points), 2)


# The CPU's convolutions by kind and pass, and its max pooling by pass: the median share of the float32 peak of the
# single operations the held-out models run, timed one by one in process CPU time at one thread
# (benchmarks/bench_conv_shapes.py; where and when: its `source`; no model's step went into them). The class
# constants scale them: a convolution reaches table share x class constant / the class constant's CPU default
# (`conv_shape_factor`), a max pooling its share x reduction_efficiency / its default, so a calibration still moves
# every operation of a class at once.
CPU_SHAPES_FILE = Path(__file__).with_name("cpu_shapes.json")
CPU_SHAPES = CpuShapes.read(CPU_SHAPES_FILE)
CPU_CONV_TABLES = CPU_SHAPES.conv_tables
# The device kinds whose convolutions are priced by shape. GPUs: none (cuDNN's choice of algorithm by shape is not
# measured here; every convolution reaches its class's constant, as before issue 37).
CONV_TABLES: dict[str, dict[tuple[ConvKind, ConvPass], ConvTable]] = {"cpu": CPU_CONV_TABLES, "cuda": {}}
# The device kinds whose max pooling is priced by its work (window visits forward, additions backward) against the
# FLOP peak. CPUs: ATen's kernel goes one element at a time (3-4 ns a window position, 0.003 of the peak: 30x slower
# than its bytes at the reductions' rate). GPUs: none (memory-bound there; priced by bytes, as before).
POOL_SHARES: dict[str, dict[ConvPass, float]] = {"cpu": CPU_SHAPES.pool_shares, "cuda": {}}
# The device kinds whose strided convolutions take a factor on their table's share (`CpuShapes.strided_factors`).
# GPUs: none.
STRIDED_FACTORS: dict[str, dict[ConvPass, float]] = {"cpu": CPU_SHAPES.strided_factors, "cuda": {}}


def conv_shape_factor(
    shape: ConvShape,
    tables: dict[tuple[ConvKind, ConvPass], ConvTable],
    reference: float,
    strided: dict[ConvPass, float] | None = None,
) -> float:
    """The share of its class's efficiency a convolution of `shape` reaches: its tables' share of the peak over
    `reference` (the class constant's default, whose share the tables' figures are), 1 where there are no tables;
    a strided one's share times its pass's `strided` factor. A backward computing both gradients takes the sum of
    their times, each with the forward's FLOPs: its share is the harmonic mean of theirs."""
    if not tables:
        return 1.0
    gradients = ((ConvPass.INPUT_GRAD, shape.input_grad), (ConvPass.WEIGHT_GRAD, shape.weight_grad))
    passes = [conv_pass for conv_pass, computed in gradients if computed] or [ConvPass.FORWARD]
    factors = (strided or {}) if shape.strided else {}
    shares = [tables[(shape.kind, p)].at(shape.out_pixels) * factors.get(p, 1.0) for p in passes]
    return len(shares) / sum(1 / max(share, 1e-9) for share in shares) / reference


# cpu-peaks-2: entries with cache levels, which layerprof before 0.3 cannot read (it keeps cpu-peaks.json)
CPU_PEAKS_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "layerprof" / "cpu-peaks-2.json"


def cpu_peaks(threads: int | None = None, cache: Path | None = None) -> DevicePeaks:
    """This CPU's matmul FLOP/s (float32, bfloat16, float16) and copy bandwidth at `threads` threads (torch's own
    count when None), measured in a few seconds of process CPU time (`_best_seconds`) and cached per machine,
    thread count and torch version.

    Peaks measured while other work holds the CPUs are low by the share it takes, and a cached figure would
    carry that into every later prediction: they are used this once, marked, and measured again next time."""
    from layerprof.measure.environment import BUSY_CPU_SHARE, cpu_busy_share

    threads = threads or torch.get_num_threads()
    cache = cache or CPU_PEAKS_CACHE
    key = f"{platform.node()}|{_cpu_name()}|{threads}|{torch.__version__}"
    stored = _read_cache(cache)
    if key in stored and "caches" in stored[key]:  # entries from before cache levels were measured: again
        return DevicePeaks(**stored[key])
    busy = cpu_busy_share()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fp32, bf16, fp16 = (_matmul_tflops(dtype) for dtype in (torch.float32, torch.bfloat16, torch.float16))
        gbps = _copy_gbps()
        levels = cpu_cache_sizes()
        caches = tuple(
            (name, size, _cache_gbps(size, levels[index - 1][1] if index else L1_BYTES))
            for index, (name, size) in enumerate(levels)
        )
    finally:
        torch.set_num_threads(before)
    named = "".join(f", {name} {size // 1024} KiB" for name, size, _ in caches)
    source = (
        f"measured here: matmuls up to 1024^3, a 256 MiB copy and copies inside each cache level{named} at "
        f"{threads} thread(s), {time.strftime('%Y-%m-%d')}"
    )
    disturbed = busy is not None and busy > BUSY_CPU_SHARE
    if disturbed:
        source += f"; other work held {busy:.0%} of the CPUs: not cached"
    peaks = DevicePeaks(_cpu_name(), "cpu", fp32, fp32, bf16, fp16, gbps, source, caches)
    if disturbed:
        return peaks
    stored[key] = asdict(peaks)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(stored, indent=1))
    except OSError:
        pass  # an unwritable cache only costs the measurement next time
    return peaks


def _cpu_name() -> str:
    from layerprof.measure.environment import cpu_name

    return cpu_name() or "cpu"


def _read_cache(cache: Path) -> JsonDict:
    try:
        data = json.loads(cache.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _best_seconds(work, repeats: int = 3) -> float:  # noqa: ANN001
    """The shortest of `repeats` timed runs of `work` (after one untimed), in the process's CPU time over the
    threads that run at once (torch's threads, at most the CPUs this process may use): time that other work takes
    from the CPUs is not counted, so a busy machine does not make the peaks low (wall clock read 50-161 GFLOP/s on
    one machine). The work must keep its threads busy, as large matmuls and copies do."""
    running = max(1, min(torch.get_num_threads(), _usable_cpus()))
    work()
    best = math.inf
    for _ in range(repeats):
        began = time.process_time()
        work()
        best = min(best, (time.process_time() - began) / running)
    return best


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _matmul_tflops(dtype: torch.dtype, largest: int = 1024, enough_s: float = 0.05) -> float:
    """Square products of growing size until one takes long enough to time (or reaches `largest`): a dtype the CPU
    has no fast kernel for (float16 on many) is measured small instead of for minutes."""
    for size in (128, 256, 512, largest):
        a = torch.randn(size, size).to(dtype)
        b = torch.randn(size, size).to(dtype)
        seconds = _best_seconds(lambda a=a, b=b: torch.mm(a, b))
        if seconds >= enough_s or size == largest:
            return 2 * size**3 / seconds / 1e12
    raise AssertionError("unreachable")


def _copy_gbps(megabytes: int = 256) -> float:
    source = torch.ones(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    seconds = _best_seconds(lambda: target.copy_(source))
    return 2 * source.numel() * 4 / seconds / 1e9


CACHE_INFO = Path("/sys/devices/system/cpu/cpu0/cache")
L1_BYTES = 32 * 2**10  # the level below L2 where sysfs is not read for it: a usual L1 data cache


def cpu_cache_sizes(info: Path = CACHE_INFO) -> list[tuple[str, int]]:
    """This CPU's data cache levels from L2 up, smallest first, as (name, bytes) from sysfs (`index*/level`,
    `type`, `size`); empty where the system does not say (then every operation is priced at the memory rate)."""
    sizes: dict[int, int] = {}
    for index in sorted(info.glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = _cache_bytes((index / "size").read_text())
        except (OSError, ValueError):
            continue
        if level >= 2 and kind in ("Data", "Unified") and size > 0:
            sizes[level] = size
    return [(f"L{level}", size) for level, size in sorted(sizes.items())]


def _cache_bytes(text: str) -> int:
    """ "512K", "32768K", "1M" (sysfs's spelling) as bytes."""
    text = text.strip().upper().removesuffix("B")
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


def _cache_gbps(level_bytes: int, below_bytes: int, enough_bytes: int = 2**28) -> float:
    """The copy rate of data inside a cache level of `level_bytes` whose level below holds `below_bytes`: copies
    whose bytes read and written are the geometric middle of the sizes the level serves (L2 of 512 KiB over an L1
    of 32 KiB: 128 KiB), repeated; the per-call cost (a copy of 1 KiB, as often) is subtracted, since the time
    model prices each operation's dispatch apart."""
    elements = max(256, int(math.sqrt(level_bytes * below_bytes)) // 8)  # source + target: the middle size
    source, target = torch.ones(elements), torch.empty(elements)
    tiny_source, tiny_target = torch.ones(256), torch.empty(256)
    repeats = max(1, enough_bytes // (2 * elements * 4))

    def copies(a: torch.Tensor = source, b: torch.Tensor = target) -> None:
        for _ in range(repeats):
            b.copy_(a)

    seconds = _best_seconds(copies) - _best_seconds(lambda: copies(tiny_source, tiny_target))
    return 2 * elements * 4 * repeats / max(seconds, 1e-9) / 1e9


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class TimeConstants:
    """The few numbers the roofline cannot know: how close each class of kernels gets to the peaks, and fixed costs.

    Compute-bound classes (matrix products, convolutions, attention) reach a share of the dtype's FLOP peak and
    move their bytes at `memory_efficiency` of the rate of the level they fit; memory-bound classes (normalisation,
    elementwise, softmax/reductions, data movement) reach their own share of that rate. The per-class constants
    after `source` came later: where they are missing (a time model saved before them), the memory-bound ones take
    `memory_efficiency` and grouped convolutions `conv_efficiency`, as the model then priced them."""

    gemm_efficiency: float  # share of the dtype's peak a matrix product reaches
    conv_efficiency: float  # dense convolutions (groups = 1)
    attention_efficiency: float
    memory_efficiency: float  # share of the rate compute-bound kernels reach on their bytes
    kernel_us: float  # fixed device cost per kernel (launch latency, tails)
    # host cost per aten operation, by phase: the forward is dispatched from Python module by module, the backward
    # from autograd's C++ engine, the optimizer's operations are few but come with Python loops over parameters
    forward_dispatch_us: float
    backward_dispatch_us: float
    optimizer_dispatch_us: float
    module_call_us: float  # host cost per module call in the forward (Python's __call__, hooks)
    source: str = "defaults"
    grouped_conv_efficiency: float | None = None  # grouped and depthwise convolutions: share of the FLOP peak
    norm_efficiency: float | None = None  # memory-bound classes: share of the rate of the level their bytes fit
    elementwise_efficiency: float | None = None
    reduction_efficiency: float | None = None
    movement_efficiency: float | None = None
    # new pages of large fresh outputs (FRESH_PAGES_BYTES): what the OS takes to fault in a MiB of them; measured,
    # not fitted (benchmarks/bench_op_classes.py), 0 where an allocator keeps its memory (GPUs)
    page_fault_ms_per_mib: float = 0.0

    def __post_init__(self) -> None:
        for name in MEMORY_CLASS_CONSTANTS.values():
            if getattr(self, name) is None:
                object.__setattr__(self, name, self.memory_efficiency)
        if self.grouped_conv_efficiency is None:
            object.__setattr__(self, "grouped_conv_efficiency", self.conv_efficiency)

    def efficiency(self, op: OpClass) -> float:
        """The share of the peak (compute-bound classes) or of the bandwidth (memory-bound ones) `op` reaches."""
        return float(getattr(self, CLASS_CONSTANTS[op]))

    def as_vector(self) -> list[float]:
        """The fitted constants in FITTED order: what a calibration adjusts."""
        return [getattr(self, name) for name in FITTED]

    def with_vector(self, values: Sequence[float], source: str) -> TimeConstants:
        """A copy with the fitted constants from `values` (FITTED order) and `source` saying where they came from."""
        return replace(self, **dict(zip(FITTED, values, strict=True)), source=source)


# each class's efficiency constant: the registry the model and the calibration read
MEMORY_CLASS_CONSTANTS = {
    OpClass.NORM: "norm_efficiency",
    OpClass.ELEMENTWISE: "elementwise_efficiency",
    OpClass.REDUCTION: "reduction_efficiency",
    OpClass.MOVEMENT: "movement_efficiency",
}
CLASS_CONSTANTS = {
    OpClass.GEMM: "gemm_efficiency",
    OpClass.CONV: "conv_efficiency",
    OpClass.GROUPED_CONV: "grouped_conv_efficiency",
    OpClass.ATTENTION: "attention_efficiency",
    **MEMORY_CLASS_CONSTANTS,
}
FITTED = (
    "gemm_efficiency",
    "conv_efficiency",
    "attention_efficiency",
    "memory_efficiency",
    "kernel_us",
    "forward_dispatch_us",
    "backward_dispatch_us",
    "optimizer_dispatch_us",
    "module_call_us",
    "grouped_conv_efficiency",
    "norm_efficiency",
    "elementwise_efficiency",
    "reduction_efficiency",
    "movement_efficiency",
    "page_fault_ms_per_mib",
)
EFFICIENCIES = tuple(index for index, name in enumerate(FITTED) if name.endswith("_efficiency"))  # at most 1

# Documented defaults, used until a calibration replaces them. GPUs: cuBLAS reaches 60-80% of the dense peak on
# large products (70%), cuDNN less on the convolutions of vision models (50%), fused attention about half;
# memory-bound kernels 70% of the bandwidth; ~4 us per kernel. The host's costs were fitted (non-negative least
# squares on relative error) to the launch times of 123 cells of nine models measured on an H200's host
# (benchmarks/results/nvidia-h200-2026-12-04): ~7.5 us per forward operation, ~12 us per backward one (autograd's
# engine and the launch), ~53 us per optimizer operation (one `.item()` per trainable tensor and the Python
# around it), ~48 us per module call in the forward. CPUs: the peaks are measured matmuls, so products reach
# them (90%); a few us per operation, which the CPU spends instead of computing. The CPU's per-class efficiencies
# are the medians of single operations timed against the copy rate of the cache level their bytes fit
# (benchmarks/bench_op_classes.py on an AMD EPYC, 1 thread, on a quiet machine, 2026-12-07 10:45 UTC; no model's
# step went into them): batch and layer norms 0.14 (several passes over their input), elementwise 0.45 (add/relu
# 0.7-0.8, GELU 0.1), softmax and reductions 0.35 (max pooling, 0.01-0.04, is priced by its work: POOL_SHARES),
# data movement 0.17 (permuting copies, padding). Convolutions: the best share of the float32 peak their forward
# reaches in the single-convolution sweep (CPU_SHAPES, from benchmarks/bench_conv_shapes.py), dense 0.90 (at 8x8
# outputs), depthwise 0.24 (at 24x24); each convolution's share by kind, pass and output size is its CPU_CONV_TABLES
# entry, which these scale.
# New pages of large fresh outputs (FRESH_PAGES_BYTES): 0.66 ms per MiB (`fresh_pages` of bench_op_classes.py,
# process CPU time, on a busy machine: a 64 MiB output made fresh against written into an existing one); a
# calibration fits it with the rest. GPUs: no such measurement yet; their
# memory-bound classes keep `memory_efficiency` and grouped convolutions `conv_efficiency`, as before the classes
# were split, and no page costs (their caching allocator keeps its blocks).
DEFAULT_CONSTANTS = {
    "cuda": TimeConstants(0.7, 0.5, 0.5, 0.7, 4.0, 7.5, 12.0, 53.0, 48.0, "defaults for GPUs"),
    "cpu": TimeConstants(
        0.9,
        CPU_SHAPES.conv_efficiency,
        0.6,
        0.8,
        0.0,
        5.0,
        4.0,
        10.0,
        15.0,
        "defaults for CPUs",
        grouped_conv_efficiency=CPU_SHAPES.grouped_conv_efficiency,
        norm_efficiency=0.14,
        elementwise_efficiency=0.45,
        reduction_efficiency=0.35,
        movement_efficiency=0.17,
        page_fault_ms_per_mib=0.66,
    ),
}


@dataclass(frozen=True)
class Numerics:
    """Whether float32 products run on TF32 tensor cores: PyTorch's defaults are no for matmuls, yes for convs."""

    tf32_matmul: bool = False
    tf32_conv: bool = True

    @classmethod
    def current(cls) -> Numerics:
        """This process's TF32 settings, as torch.backends holds them now."""
        return cls(torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)

    @classmethod
    def of(cls, recorded: JsonDict) -> Numerics:
        """From a profile's recorded numeric settings (`environment.numerics`)."""
        defaults = cls()
        return cls(
            bool(recorded.get("matmul_tf32", defaults.tf32_matmul)),
            bool(recorded.get("cudnn_conv_tf32", defaults.tf32_conv)),
        )


@dataclass(frozen=True)
class StepPrediction:
    """A predicted step time: the device's and the host's share, and whether the host bounds it."""

    step_ms: float
    device_ms: float  # the kernels' time
    host_ms: float  # dispatching every operation
    host_bound: bool  # GPUs: the host is the slower of the two


class Residual(TypedDict):
    """A calibration's fit on one measured cell."""

    cell: str
    measured_ms: float
    predicted_ms: float
    error: float  # predicted / measured - 1


@dataclass
class TimeModel:
    """A device's peaks and the constants: everything needed to turn a traced step into time."""

    peaks: DevicePeaks
    constants: TimeConstants
    numerics: Numerics = field(default_factory=Numerics)
    residuals: list[Residual] = field(default_factory=list)  # a calibration's fit, per measured cell

    @classmethod
    def default(cls, peaks: DevicePeaks, numerics: Numerics | None = None) -> TimeModel:
        """Uncalibrated: the documented default constants of the device kind `peaks` describes."""
        return cls(peaks, DEFAULT_CONSTANTS[peaks.kind], numerics or Numerics())

    @property
    def calibrated(self) -> bool:
        """Whether a calibration against measured cells set the constants."""
        return self.constants.source.startswith("calibrated")

    @property
    def label(self) -> str:
        """What a table says of its predicted times: the device, and whether the constants were calibrated."""
        how = "calibrated" if self.calibrated else "default constants"
        return f"predicted for {self.peaks.name} ({how})"

    def to_dict(self) -> dict[str, object]:
        """The JSON form, as a profile's `time_model` holds it."""
        return {
            "peaks": asdict(self.peaks),
            "constants": asdict(self.constants),
            "numerics": asdict(self.numerics),
            "residuals": self.residuals,
        }

    @classmethod
    def from_dict(cls, data: JsonDict, source: str = "time model") -> TimeModel:
        """From its JSON form; LayerprofError naming `source` where parts are missing or unknown."""
        try:
            peaks = DevicePeaks(**data["peaks"])
            return cls(
                peaks,
                TimeConstants(**{**_added_constants(peaks.kind), **data["constants"]}),
                Numerics(**data.get("numerics", {})),
                list(data.get("residuals", [])),
            )
        except (KeyError, TypeError) as error:
            raise LayerprofError(f"{source}: a damaged time model ({error}); re-run the calibration") from None

    def predict(self, trace: StepTrace) -> StepPrediction:
        """The traced step's time: device plus host on a CPU, the slower of the two on a GPU."""
        with unset_fake_temporarily():  # an estimate calls this inside its FakeTensorMode: these are real numbers
            theta = torch.tensor([math.log(max(v, 1e-9)) for v in self.constants.as_vector()], dtype=torch.float64)
            arrays = _op_arrays(trace, self.peaks, self.numerics)
            log_device, log_host = _log_times(arrays, theta)
            device_ms, host_ms = math.exp(float(log_device)), math.exp(float(log_host))
        if self.peaks.kind == "cpu":  # the same threads dispatch and compute
            return StepPrediction(device_ms + host_ms, device_ms, host_ms, False)
        return StepPrediction(max(device_ms, host_ms), device_ms, host_ms, host_ms > device_ms)

    def op_device_ms(self, trace: StepTrace) -> list[float]:
        """Each kernel-launching operation's device time in ms (the operations of `trace.ops` with kernels, in
        order): what `predict` sums, for comparing with operations timed one by one."""
        with unset_fake_temporarily():
            theta = torch.tensor([math.log(max(v, 1e-9)) for v in self.constants.as_vector()], dtype=torch.float64)
            arrays = _op_arrays(trace, self.peaks, self.numerics)
            seconds = _op_seconds(arrays, theta)
        return [float(value) * 1e3 for value in seconds]


def _added_constants(kind: str) -> dict[str, float]:
    """The default values of the constants added after `source` (per-class efficiencies), for a saved time model
    from before them: missing ones take the device kind's defaults."""
    defaults = DEFAULT_CONSTANTS.get(kind, DEFAULT_CONSTANTS["cuda"])
    added = (*MEMORY_CLASS_CONSTANTS.values(), "grouped_conv_efficiency", "page_fault_ms_per_mib")
    return {name: getattr(defaults, name) for name in added}


# ---------------------------------------------------------------- calibration


@dataclass(frozen=True)
class MeasuredStep:
    """A measured cell with its traced operations: what calibration fits."""

    label: str  # e.g. "resnet50 b64 z=3"
    trace: StepTrace
    step_ms: float
    host_ms: float | None = None  # GPUs: the measured launch time
    numerics: Numerics = field(default_factory=lambda: Numerics())  # the TF32 settings it was measured with


# how far (in log space) the fit may pull a constant from its default before the prior costs as much as a 10%
# error on one cell: keeps constants the data cannot see at their defaults
PRIOR_WIDTH = 1.5
PRIOR_WEIGHT = 0.01


def calibrate(
    steps: Sequence[MeasuredStep],
    peaks: DevicePeaks,
    numerics: Numerics | None = None,
    start: TimeConstants | None = None,
) -> TimeModel:
    """Fit the constants to measured cells by least squares on log step time (and, on GPUs, log launch time
    where measured), each constant pulled towards its default. Returns the model with one residual per cell."""
    if not steps:
        raise LayerprofError("calibration needs at least one measured cell that ran (status ok, with a step time)")
    numerics = numerics or Numerics()
    start = start or DEFAULT_CONSTANTS[peaks.kind]
    arrays = [_op_arrays(step.trace, peaks, step.numerics) for step in steps]
    measured = torch.tensor([math.log(step.step_ms) for step in steps], dtype=torch.float64)
    launches = [(index, math.log(step.host_ms)) for index, step in enumerate(steps) if step.host_ms]
    prior = torch.tensor([math.log(max(v, 1e-6)) for v in start.as_vector()], dtype=torch.float64)
    theta = prior.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([theta], lr=1.0, max_iter=300, line_search_fn="strong_wolfe")
    cpu = peaks.kind == "cpu"

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        device, host = (torch.stack(values) for values in zip(*(_log_times(a, theta) for a in arrays), strict=True))
        step = torch.logaddexp(device, host) if cpu else torch.maximum(device, host)
        loss = ((step - measured) ** 2).sum() + (((theta - prior) / PRIOR_WIDTH) ** 2).sum() * PRIOR_WEIGHT
        if launches and not cpu:  # the measured launch times pin the host's constants
            index = torch.tensor([i for i, _ in launches])
            loss = loss + ((host[index] - torch.tensor([v for _, v in launches], dtype=torch.float64)) ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    fitted = theta.detach()
    if not torch.isfinite(fitted).all():
        raise LayerprofError(
            "the calibration did not converge on these profiles; check that they ran on the target device, or "
            "estimate with the default constants (no --calibrate)"
        )
    values = [float(v) for v in torch.exp(fitted)]
    values = [min(1.0, v) if index in EFFICIENCIES else v for index, v in enumerate(values)]  # none beats the peak
    names = sorted({step.label.split(" ")[0] for step in steps})
    constants = start.with_vector(values, f"calibrated on {len(steps)} cells of {', '.join(names)}")
    model = TimeModel(peaks, constants, numerics)
    for step in steps:
        predicted = model.predict(step.trace)
        model.residuals.append(
            {
                "cell": step.label,
                "measured_ms": round(step.step_ms, 4),
                "predicted_ms": round(predicted.step_ms, 4),
                "error": round(predicted.step_ms / step.step_ms - 1, 4),
            }
        )
    return model


PAGE_INDEX = FITTED.index("page_fault_ms_per_mib")
# each class's place in FITTED (its efficiency), and the place of the efficiency its bytes move at
CLASS_INDEX = {op_class: FITTED.index(name) for op_class, name in CLASS_CONSTANTS.items()}
BYTES_INDEX = {
    op_class: FITTED.index("memory_efficiency") if op_class.compute_bound else index
    for op_class, index in CLASS_INDEX.items()
}
PHASES = (Phase.FORWARD, Phase.BACKWARD, Phase.OPTIMIZER)


def _dispatched(trace: StepTrace, phase: Phase) -> int:
    """Operations dispatched in a phase; a checkpointed layer's recompute is dispatched inside backward."""
    extra = trace.dispatched(Phase.RECOMPUTE) if phase is Phase.BACKWARD else 0
    return trace.dispatched(phase) + extra


def optimizer_fault_bytes(trace: StepTrace) -> int:
    """The size from which the optimizer's new outputs fault their pages in this step: glibc raises its mmap
    threshold to the largest chunk it has freed below 32 MiB and trims the heap's top once it holds twice that, so
    a parameter's two temporaries fault where they are as large as the largest new tensor of the step below 32 MiB
    (its largest gradients, activations or temporaries), and come from the heap's free space where smaller (AdamW
    on ResNet-34's parameters, benchmarks/bench_adamw_pages.py: its 9 MiB temporaries pay 0.1-0.98 of the page
    cost, its 2.25 MiB ones none). An approximation: on mobilenet_v3_small's the 2.25 MiB ones fault all the same
    (its last, larger pair freed leaves the heap's top to trim); which fault depends on the whole step's
    allocations. Never below FRESH_PAGES_BYTES's 2 MiB."""
    below = FRESH_PAGES_BYTES[Phase.FORWARD]
    largest = max((op.fresh_bytes for op in trace.ops if op.fresh_bytes < below), default=0)
    return max(FRESH_PAGES_BYTES[Phase.OPTIMIZER], largest)


def faulted_bytes(op: OpCost, optimizer_bytes: int = FRESH_PAGES_BYTES[Phase.OPTIMIZER]) -> int:
    """The bytes of `op`'s new output whose pages are new every step (FRESH_PAGES_BYTES; in the optimizer from
    `optimizer_bytes`, a step's `optimizer_fault_bytes`), else 0."""
    threshold = optimizer_bytes if op.phase is Phase.OPTIMIZER else FRESH_PAGES_BYTES[op.phase]
    return op.fresh_bytes if op.fresh_bytes >= threshold else 0


def pool_shape_factor(pool: PoolShape, shares: dict[ConvPass, float], reference: float) -> float:
    """The share of its class's efficiency a max pooling reaches on its work (`PoolShape.work`) against the FLOP
    peak: its pass's share over `reference` (the reductions' default, as `conv_shape_factor` does)."""
    return shares[ConvPass.INPUT_GRAD if pool.backward else ConvPass.FORWARD] / reference


def _op_arrays(trace: StepTrace, peaks: DevicePeaks, numerics: Numerics) -> dict[str, torch.Tensor]:
    """A step's kernels and the host's work as arrays, for a differentiable prediction of its time: each kernel's
    FLOPs (a max pooling's work where its device kind prices it so: POOL_SHARES, against the float32 peak in every
    dtype, as bench_conv_shapes.py measured its shares), bytes, peak, rate and the share of
    its class's efficiency its shape reaches (`conv_shape_factor`, `pool_shape_factor`), and the MiB of fresh pages
    it faults in (priced at `page_fault_ms_per_mib`)."""
    launched = [op for op in trace.ops if op.kernels]
    tables = CONV_TABLES[peaks.kind]
    pools = POOL_SHARES[peaks.kind]
    reference = DEFAULT_CONSTANTS[peaks.kind]
    optimizer_bytes = optimizer_fault_bytes(trace)

    def pooled(op: OpCost) -> bool:
        return op.pool is not None and bool(pools)

    def shape(op: OpCost) -> float:
        if op.pool is not None and pools:
            return pool_shape_factor(op.pool, pools, reference.efficiency(op.op_class))
        if op.conv is None:
            return 1.0
        return conv_shape_factor(op.conv, tables, reference.efficiency(op.op_class), STRIDED_FACTORS[peaks.kind])

    def work(op: OpCost) -> float:
        return op.pool.work(op.bytes_moved) if op.pool is not None and pools else float(op.flops)

    def array(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64)

    def peak(op: OpCost) -> float:
        if pooled(op):  # one element at a time in every dtype: bfloat16's (matmul) peak is no measure of it
            return peaks.fp32_tflops * 1e12
        return peaks.tflops(op.dtype, op.op_class, numerics.tf32_matmul, numerics.tf32_conv) * 1e12

    return {
        "flops": array([work(op) for op in launched]),
        "bytes": array([float(op.bytes_moved) for op in launched]),
        "kernels": array([float(op.kernels) for op in launched]),
        "peak": array([peak(op) for op in launched]),
        "compute": torch.tensor([CLASS_INDEX[op.op_class] for op in launched], dtype=torch.long),
        "compute_bound": torch.tensor([op.op_class.compute_bound or pooled(op) for op in launched], dtype=torch.bool),
        "bytes_at": torch.tensor([BYTES_INDEX[op.op_class] for op in launched], dtype=torch.long),
        "bandwidth": array([peaks.gbps_for(op.bytes_moved) * 1e9 for op in launched]),
        "host_work": array([float(_dispatched(trace, phase)) for phase in PHASES] + [float(trace.module_calls)]),
        "shape": array([shape(op) for op in launched]),
        "fault_mib": array([faulted_bytes(op, optimizer_bytes) / 2**20 for op in launched]),
    }


def _op_seconds(a: dict[str, torch.Tensor], theta: torch.Tensor) -> torch.Tensor:
    """Each launched operation's device seconds under the constants exp(theta) (in the order of FITTED)."""
    efficiency = torch.exp(theta).clamp(max=1.0)  # only the efficiencies' places are read
    share = (efficiency[a["compute"]] * a["shape"]).clamp(max=1.0)
    compute = torch.where(a["compute_bound"], a["flops"] / (a["peak"] * share), 0.0)
    memory = a["bytes"] / (a["bandwidth"] * efficiency[a["bytes_at"]])
    faults = a["fault_mib"] * torch.exp(theta[PAGE_INDEX]) * 1e-3
    return torch.maximum(compute, memory) + a["kernels"] * torch.exp(theta[4]) * 1e-6 + faults


def _log_times(a: dict[str, torch.Tensor], theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log(device ms), log(host ms) of one step under the constants exp(theta) (in the order of FITTED)."""
    device = _op_seconds(a, theta).sum() * 1e3
    host = (a["host_work"] * torch.exp(theta[5:9])).sum() * 1e-3  # the four host costs of FITTED
    return torch.log(device), torch.log(host)


# ---------------------------------------------------------------- predictions against measurements


@dataclass(frozen=True)
class PredictionCheck:
    """One cell both predicted and measured: the errors a user should see before trusting a prediction."""

    batch_size: int
    trainable_layers: int
    measured_ms: float
    predicted_ms: float
    measured_vs_full: float | None
    predicted_vs_full: float | None

    @property
    def error(self) -> float:
        """The predicted step time's relative error: +0.10 is a prediction 10% above the measurement."""
        return self.predicted_ms / self.measured_ms - 1

    @property
    def ratio_error(self) -> float | None:
        """The relative error of the predicted ratio to full training, or None where either ratio is missing."""
        if self.measured_vs_full is None or self.predicted_vs_full is None:
            return None
        return self.predicted_vs_full / self.measured_vs_full - 1


def check_predictions(estimate: Profile, measured: Profile) -> list[PredictionCheck]:
    """Every cell that `estimate` predicts and `measured` timed, with the step time's error and the error of its
    ratio to full training (z = n) at that batch size."""
    if not estimate.predicts_time:
        raise LayerprofError("the estimate holds no predicted step times (estimate with a time model)")
    if measured.is_estimate:
        raise LayerprofError("--against needs a measured profile (`layerprof profile`), not an estimate")
    if estimate.model.spec != measured.model.spec:
        raise LayerprofError(
            f"--against: the estimate is of {estimate.model.spec!r}, the measured profile of {measured.model.spec!r}"
        )
    n = estimate.layer_count
    checks = []
    for row in sorted(estimate.rows, key=lambda r: r.key):
        timed = measured.row(*row.key)
        if not (row.ok and row.predicted_step_time_ms and timed is not None and timed.ok and timed.step_time_ms):
            continue
        full_predicted, full_measured = estimate.row(row.batch_size, n), measured.row(row.batch_size, n)
        checks.append(
            PredictionCheck(
                row.batch_size,
                row.trainable_layers,
                timed.step_time_ms,
                row.predicted_step_time_ms,
                _vs_full(timed.step_time_ms, full_measured.step_time_ms if full_measured else None),
                _vs_full(row.predicted_step_time_ms, full_predicted.predicted_step_time_ms if full_predicted else None),
            )
        )
    if not checks:
        raise LayerprofError("--against: no cell is both predicted and measured; estimate the measured cells")
    return checks


def _vs_full(value: float, full: float | None) -> float | None:
    return value / full if full else None
