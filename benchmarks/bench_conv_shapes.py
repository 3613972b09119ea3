"""Convolutions' efficiency on this CPU by shape, from single operations, never from a model's step (issue 37).

Each case is a convolution as the held-out models of bench_time_model.py run them (ResNets, SqueezeNet, the mobile
CNNs' pointwise, depthwise and grouped layers, ConvNeXt's 7x7 depthwise; their channels, output sizes and
batches), called as the traced step calls it: its forward (`aten.convolution`), its input gradient and its weight
gradient (`aten.convolution_backward` with one output each). Each is timed in process CPU time at one thread
(`_best_seconds`: another process on the core does not count), less the model's per-operation dispatch cost
(which the time model prices apart), and set against its FLOPs at the float32 peak (`cpu_peaks`). The recorder
gives each case's FLOPs and geometry (`ConvShape`: kind, output positions per image, work per output) exactly as it
records them in an estimate's trace.

Then, per kind and pass, the median share of the peak at each output size, printed as the CPU's `ConvTable`s, and
the class constants' defaults: the best of the dense and of the depthwise forward's medians. No model's step time
went into them. Two more sections (issue 37, fourth pass): strided convolutions (stems, downsampling) set against
the unit-stride table at their output size (they run at 0.5-0.7 of it: the median ratio per pass is written as
`strided_factors`); and max pooling
(`max_pool2d_with_indices` and its backward), whose share of the peak is its work (`PoolShape.work`: window visits
forward, one addition per output backward) over its time, median per pass.

`--write FILE` writes the tables and the pooling shares as JSON: written to `layerprof/predict/cpu_shapes.json`, they
are the CPU's defaults (`layerprof.predict.timemodel.CPU_SHAPES`: the tables, `conv_efficiency`,
`grouped_conv_efficiency`, `POOL_SHARES`), so re-running the sweep is a change of data, not of code.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/bench_conv_shapes.py [--peaks FILE] [--write FILE]  # ~15 s
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from layerprof.measure.instruments import ConvKind, OpCost, OpRecorder
from layerprof.predict.timemodel import DEFAULT_CONSTANTS, ConvPass, ConvTable, DevicePeaks, _best_seconds, cpu_peaks

aten = torch.ops.aten

# (batch, input channels, output channels, output side, kernel side, groups): unit stride, "same" padding
DENSE = [
    *[(batch, c, c, side, 3, 1) for batch in (8, 32) for c, side in
      ((64, 32), (64, 16), (64, 8), (128, 8), (128, 4), (256, 4), (256, 2), (512, 2), (512, 1))],
    (16, 16, 64, 16, 3, 1), (16, 32, 128, 8, 3, 1), (16, 48, 192, 4, 3, 1), (16, 64, 256, 2, 3, 1),  # SqueezeNet
    # 1x1 at batch 16: oneDNN (mobilenet_v3_small, shufflenet_v2, squeezenet; squeeze-and-excite at 1x1)
    *[(16, cin, cout, side, 1, 1) for cin, cout, side in
      ((64, 16, 16), (16, 64, 16), (128, 32, 8), (116, 116, 4), (96, 576, 3), (232, 232, 2), (576, 144, 1))],
]  # fmt: skip
NATIVE = [  # 1x1 at batch 8 on one thread: ATen's own kernel (mobilenet_v2, efficientnet_b0, regnet_y_400mf)
    (8, cin, cout, side, 1, 1)
    for cin, cout, side in ((32, 16, 32), (16, 96, 32), (96, 24, 16), (144, 24, 16), (144, 32, 8), (192, 64, 4),
                            (384, 96, 4), (96, 576, 4), (960, 160, 2), (320, 1280, 2), (48, 48, 16), (440, 440, 2),
                            (96, 4, 1), (480, 20, 1), (20, 480, 1), (1152, 48, 1))
]  # fmt: skip
DEPTHWISE = [
    *[(8, c, c, side, k, c) for c, side, k in
      ((32, 32, 3), (96, 16, 3), (144, 16, 3), (192, 8, 3), (240, 4, 3), (384, 4, 3), (1152, 2, 3),  # MobileNet
       (144, 8, 5), (240, 8, 5), (480, 4, 5), (672, 2, 5),  # EfficientNet
       (40, 16, 7), (80, 8, 7), (160, 4, 7), (320, 2, 7))],  # ConvNeXt
    *[(16, c, c, side, 3, c) for c, side in ((58, 8), (116, 4), (232, 2), (72, 24), (88, 12))],  # ShuffleNet, v3
    *[(16, c, c, side, 5, c) for c, side in ((96, 6), (240, 6), (288, 3), (576, 3))],  # MobileNetV3-Small
]  # fmt: skip
GROUPED = [  # RegNetY-400MF: groups of 8 channels
    *[(8, c, c, side, 3, c // 8) for c, side in ((48, 16), (104, 8), (208, 4), (440, 2))],
    *[(16, c, c, side, 3, c // 8) for c, side in ((104, 8), (208, 4))],
]  # fmt: skip
CASES = [*DENSE, *NATIVE, *DEPTHWISE, *GROUPED]
# strided convolutions (batch, in, out, output side, kernel side, groups, stride, padding): the stems, ResNet's
# downsampling 3x3 and 1x1, ConvNeXt's 4x4 stride-4 stem and 2x2 stride-2 downsampling, the mobile CNNs' strided
# depthwise layers. Timed like the rest and set against the table the unit-stride cases make at their output size
# (they do not go into its medians): the median ratio per pass is `strided_factors` (the time model multiplies a
# strided convolution's table share by it).
STRIDED = [
    (8, 3, 40, 16, 4, 1, 4, 0), (8, 40, 80, 8, 2, 1, 2, 0), (8, 80, 160, 4, 2, 1, 2, 0),  # ConvNeXt-atto
    (8, 160, 320, 2, 2, 1, 2, 0),
    (8, 3, 64, 32, 7, 1, 2, 3), (8, 64, 128, 8, 3, 1, 2, 1), (8, 128, 256, 4, 3, 1, 2, 1),  # ResNet-34 at 64x64
    (8, 256, 512, 2, 3, 1, 2, 1), (8, 64, 128, 8, 1, 1, 2, 0), (8, 256, 512, 2, 1, 1, 2, 0),
    (32, 3, 64, 16, 7, 1, 2, 3), (32, 64, 128, 4, 3, 1, 2, 1), (32, 128, 256, 2, 3, 1, 2, 1),  # ResNet-18 at 32x32
    (32, 256, 512, 1, 3, 1, 2, 1), (32, 128, 256, 2, 1, 1, 2, 0), (32, 256, 512, 1, 1, 1, 2, 0),
    (16, 3, 64, 31, 3, 1, 2, 0), (16, 3, 24, 32, 3, 1, 2, 1), (8, 3, 32, 32, 3, 1, 2, 1),  # SqueezeNet, ShuffleNet, v2
    (16, 24, 24, 8, 3, 24, 2, 1), (16, 116, 116, 4, 3, 116, 2, 1), (16, 232, 232, 2, 3, 232, 2, 1),  # ShuffleNet
    (8, 96, 96, 16, 3, 96, 2, 1), (8, 144, 144, 8, 3, 144, 2, 1), (8, 192, 192, 4, 3, 192, 2, 1),  # MobileNetV2
    (8, 576, 576, 2, 3, 576, 2, 1), (8, 144, 144, 8, 5, 144, 2, 2), (8, 240, 240, 4, 3, 240, 2, 1),  # EfficientNet
    (8, 672, 672, 2, 5, 672, 2, 2),
]  # fmt: skip
# max pooling (batch, channels, input side, kernel side, stride, padding, ceil_mode): ResNet's after the stem,
# SqueezeNet's three, ShuffleNet's; and a 2x2 and a stride-1 3x3 to see whether the time follows the window visits
POOLS = [
    (8, 64, 32, 3, 2, 1, False), (32, 64, 16, 3, 2, 1, False),  # ResNet-34 at 64x64, ResNet-18 at 32x32
    (16, 64, 31, 3, 2, 0, True), (16, 128, 15, 3, 2, 0, True), (16, 256, 7, 3, 2, 0, True),  # SqueezeNet 1.1
    (16, 24, 32, 3, 2, 1, False),  # ShuffleNetV2
    (8, 64, 32, 2, 2, 0, False), (8, 64, 16, 3, 1, 1, False),
]  # fmt: skip
MASKS = {ConvPass.FORWARD: None, ConvPass.INPUT_GRAD: [True, False, False], ConvPass.WEIGHT_GRAD: [False, True, False]}
ENOUGH_S = 0.004  # each timed run repeats a call until it takes about this much CPU time


def calls(
    batch: int, cin: int, cout: int, side: int, kernel: int, groups: int, stride: int = 1, pad: int | None = None
) -> dict[ConvPass, Callable[[], object]]:
    """The three passes of one case as the traced step calls them ("same" padding at unit stride by default)."""
    pad = kernel // 2 if pad is None else pad
    x = torch.randn(batch, cin, (side - 1) * stride + kernel - 2 * pad, (side - 1) * stride + kernel - 2 * pad)
    w = torch.randn(cout, cin // groups, kernel, kernel) * 0.1
    g = torch.randn(batch, cout, side, side)
    pads, strides, one = [pad] * 2, [stride] * 2, [1, 1]
    works: dict[ConvPass, Callable[[], object]] = {
        ConvPass.FORWARD: lambda: aten.convolution(x, w, None, strides, pads, one, False, [0, 0], groups)
    }
    for conv_pass in (ConvPass.INPUT_GRAD, ConvPass.WEIGHT_GRAD):
        mask = MASKS[conv_pass]
        works[conv_pass] = lambda mask=mask: aten.convolution_backward(
            g, x, w, None, strides, pads, one, False, [0, 0], groups, mask
        )
    return works


def pool_calls(
    batch: int, channels: int, side: int, kernel: int, stride: int, pad: int, ceil: bool
) -> dict[ConvPass, Callable[[], object]]:
    """A max pooling's forward and backward as the traced step calls them."""
    x = torch.randn(batch, channels, side, side)
    args = ([kernel] * 2, [stride] * 2, [pad] * 2, [1, 1], ceil)
    out, indices = aten.max_pool2d_with_indices(x, *args)
    g = torch.randn_like(out)
    return {
        ConvPass.FORWARD: lambda: aten.max_pool2d_with_indices(x, *args),
        ConvPass.INPUT_GRAD: lambda: aten.max_pool2d_with_indices_backward(g, x, *args, indices),
    }


def measure(work: Callable[[], object], dispatch_s: float) -> tuple[float, OpCost]:
    """One pass: its seconds per call less the dispatch, and the operation as the recorder records it."""
    with OpRecorder() as recorder:
        work()
    (op,) = [op for op in recorder.ops if op.kernels]
    began = time.process_time()
    work()
    repeats = max(1, math.ceil(ENOUGH_S / max(time.process_time() - began, 1e-6)))

    def loop() -> None:
        for _ in range(repeats):
            work()

    seconds = _best_seconds(loop, repeats=3) / repeats
    return max(seconds - dispatch_s, 1e-9), op


def medians(found: dict[tuple[ConvKind, ConvPass], list[tuple[int, float]]]) -> dict[str, list[list[float]]]:
    """Per kind and pass, the median share at each output size: the JSON form of a `ConvTable`."""
    tables = {}
    for (kind, conv_pass), points in sorted(found.items(), key=lambda kv: (kv[0][0].value, kv[0][1].value)):
        pixels = sorted({p for p, _ in points})
        tables[f"{kind.value}/{conv_pass.value}"] = [
            [p, round(statistics.median(e for q, e in points if q == p), 3)] for p in pixels
        ]
    return tables


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    given = Path(argv[argv.index("--peaks") + 1]) if "--peaks" in argv else None
    write = Path(argv[argv.index("--write") + 1]) if "--write" in argv else None
    peaks = DevicePeaks(**json.loads(given.read_text())) if given else cpu_peaks(1)
    peak = peaks.fp32_tflops * 1e12
    print(f"{peaks.name}: {peak / 1e9:.0f} GFLOP/s fp32 ({given or 'measured or cached now'}), 1 thread")
    defaults = DEFAULT_CONSTANTS["cpu"]
    dispatch = {ConvPass.FORWARD: defaults.forward_dispatch_us * 1e-6}
    dispatch[ConvPass.INPUT_GRAD] = dispatch[ConvPass.WEIGHT_GRAD] = defaults.backward_dispatch_us * 1e-6
    found: dict[tuple[ConvKind, ConvPass], list[tuple[int, float]]] = {}
    began = time.perf_counter()
    head = (f"  {'kind':9s} {'pass':11s} {'batch':>5s} {'in':>5s} {'out':>5s} {'side':>4s} {'k':>2s} {'groups':>6s} "
            f"{'pixels':>6s} {'work':>5s} {'ms':>8s} {'efficiency':>10s}")  # fmt: skip
    print(head)
    for case in CASES:
        batch, cin, cout, side, kernel, groups = case
        for conv_pass, work in calls(*case).items():
            seconds, op = measure(work, dispatch[conv_pass])
            shape = op.conv
            assert shape is not None
            efficiency = op.flops / peak / seconds
            found.setdefault((shape.kind, conv_pass), []).append((shape.out_pixels, efficiency))
            print(f"  {shape.kind.value:9s} {conv_pass.value:11s} {batch:5d} {cin:5d} {cout:5d} {side:4d} {kernel:2d} "
                  f"{groups:6d} {shape.out_pixels:6d} {shape.per_output:5d} {seconds * 1e3:8.3f} {efficiency:10.3f}",
                  flush=True)  # fmt: skip
    tables = medians(found)
    conv_tables = {key: ConvTable(tuple((int(p), s) for p, s in points)) for key, points in tables.items()}
    print("\nstrided convolutions against the unit-stride table at their output size (not in the medians)")
    print(f"{head} {'table':>6s} {'ratio':>6s} stride")
    ratios: dict[ConvPass, list[float]] = {}
    for batch, cin, cout, side, kernel, groups, stride, pad in STRIDED:
        for conv_pass, work in calls(batch, cin, cout, side, kernel, groups, stride, pad).items():
            if cin == 3 and conv_pass is ConvPass.INPUT_GRAD:  # a stem: no model computes its image's gradient
                continue
            seconds, op = measure(work, dispatch[conv_pass])
            shape = op.conv
            assert shape is not None
            efficiency = op.flops / peak / seconds
            table = conv_tables[f"{shape.kind.value}/{conv_pass.value}"].at(shape.out_pixels)
            ratios.setdefault(conv_pass, []).append(efficiency / table)
            print(f"  {shape.kind.value:9s} {conv_pass.value:11s} {batch:5d} {cin:5d} {cout:5d} {side:4d} {kernel:2d} "
                  f"{groups:6d} {shape.out_pixels:6d} {shape.per_output:5d} {seconds * 1e3:8.3f} {efficiency:10.3f} "
                  f"{table:6.3f} {efficiency / table:6.2f} {stride}", flush=True)  # fmt: skip
    strided = {p.value: round(statistics.median(values), 3) for p, values in ratios.items()}
    for conv_pass, values in ratios.items():
        print(f"  {conv_pass.value}: measured / table, median {statistics.median(values):.2f} "
              f"(from {min(values):.2f} to {max(values):.2f}, {len(values)} cases)")  # fmt: skip
    print("\nmax pooling: its work (window visits forward, one addition per output backward) against the peak")
    print(f"  {'pass':11s} {'batch':>5s} {'chan':>5s} {'side':>4s} {'k':>2s} {'s':>2s} {'work':>10s} {'ms':>8s} "
          f"{'ns/unit':>7s} {'efficiency':>10s}")  # fmt: skip
    pooled: dict[ConvPass, list[float]] = {}
    for case in POOLS:
        batch, channels, side, kernel, stride, _pad, _ceil = case
        for conv_pass, work in pool_calls(*case).items():
            seconds, op = measure(work, dispatch[conv_pass])
            assert op.pool is not None
            units = op.pool.work(op.bytes_moved)
            efficiency = units / peak / seconds
            pooled.setdefault(conv_pass, []).append(efficiency)
            print(f"  {conv_pass.value:11s} {batch:5d} {channels:5d} {side:4d} {kernel:2d} {stride:2d} {units:10.0f} "
                  f"{seconds * 1e3:8.3f} {seconds / units * 1e9:7.2f} {efficiency:10.4f}", flush=True)  # fmt: skip
    shares = {p.value: round(statistics.median(values), 5) for p, values in pooled.items()}
    total = len(CASES) * 3 + sum(len(v) for v in ratios.values()) + len(POOLS) * 2
    print(f"measured {total} passes in {time.perf_counter() - began:.0f} s")
    dense = max(e for _, e in tables["dense/forward"])
    depthwise = max(e for _, e in tables["depthwise/forward"])
    print(f"\nconv_efficiency={dense:.2f}, grouped_conv_efficiency={depthwise:.2f}  # the best forward medians")
    print(f"pool_shares = {shares}  # max pooling's median share of the peak by pass")
    print(f"strided_factors = {strided}  # strided convolutions' median share over the table's, by pass")
    print("conv_tables = {  # the median share of the peak at each output size")
    counts = {f"{kind.value}/{conv_pass.value}": len(points) for (kind, conv_pass), points in found.items()}
    for key, points in tables.items():
        print(f"    {key!r}: {points},  # {counts[key]} cases")
    print("}")
    if write is not None:
        source = (f"benchmarks/bench_conv_shapes.py on {peaks.name} ({peak / 1e9:.0f} GFLOP/s fp32), 1 thread, "
                  f"process CPU time, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")  # fmt: skip
        rows = ",\n".join(f"    {json.dumps(key)}: {json.dumps(points)}" for key, points in tables.items())
        tail = f'  "pool_shares": {json.dumps(shares)},\n  "strided_factors": {json.dumps(strided)}\n}}\n'
        write.write_text(f'{{\n  "source": {json.dumps(source)},\n  "conv_tables": {{\n{rows}\n  }},\n{tail}')
        print(f"wrote {write}: the CPU's defaults (layerprof.predict.timemodel.CPU_SHAPES)")


if __name__ == "__main__":
    main(sys.argv[1:])
