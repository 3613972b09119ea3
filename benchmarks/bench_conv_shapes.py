"""Convolutions' efficiency on this CPU by shape, from single operations, never from a model's step (issue 37).

Each case is a convolution as the held-out models of bench_time_model.py run them (ResNets, SqueezeNet, the mobile
CNNs' pointwise, depthwise and grouped layers, ConvNeXt's 7x7 depthwise; their channels, output sizes and
batches), called as the traced step calls it: its forward (`aten.convolution`), its input gradient and its weight
gradient (`aten.convolution_backward` with one output each). Each is timed in process CPU time at one thread
(`_best_seconds`: another process on the core does not count), less the model's per-operation dispatch cost
(which the time model prices apart), and set against its FLOPs at the float32 peak (`cpu_peaks`). The recorder
gives each case's FLOPs and geometry (`ConvShape`: kind, output positions per image, work per output) exactly as it
records them in an estimate's trace.

Then, per kind and pass, the median share of the peak at each output size, printed as the CPU's `ConvTable`s
(`layerprof.predict.timemodel.CPU_CONV_TABLES` holds what this printed), and the class constants' defaults: the
best of the dense and of the depthwise forward's medians. No model's step time went into them.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/bench_conv_shapes.py [--peaks FILE]   # about 30 s
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

from layerprof.measure.instruments import ConvKind, ConvShape, OpRecorder
from layerprof.predict.timemodel import DEFAULT_CONSTANTS, ConvPass, DevicePeaks, _best_seconds, cpu_peaks

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
MASKS = {ConvPass.FORWARD: None, ConvPass.INPUT_GRAD: [True, False, False], ConvPass.WEIGHT_GRAD: [False, True, False]}
ENOUGH_S = 0.004  # each timed run repeats a call until it takes about this much CPU time


def calls(batch: int, cin: int, cout: int, side: int, kernel: int, groups: int) -> dict[ConvPass, Callable[[], object]]:
    """The three passes of one case as the traced step calls them."""
    x = torch.randn(batch, cin, side, side)
    w = torch.randn(cout, cin // groups, kernel, kernel) * 0.1
    g = torch.randn(batch, cout, side, side)
    pad = [kernel // 2] * 2
    one = [1, 1]
    works: dict[ConvPass, Callable[[], object]] = {
        ConvPass.FORWARD: lambda: aten.convolution(x, w, None, one, pad, one, False, [0, 0], groups)
    }
    for conv_pass in (ConvPass.INPUT_GRAD, ConvPass.WEIGHT_GRAD):
        mask = MASKS[conv_pass]
        works[conv_pass] = lambda mask=mask: aten.convolution_backward(
            g, x, w, None, one, pad, one, False, [0, 0], groups, mask
        )
    return works


def measure(work: Callable[[], object], dispatch_s: float) -> tuple[float, ConvShape, int]:
    """One pass: its seconds per call less the dispatch, the geometry and FLOPs the recorder gives it."""
    with OpRecorder() as recorder:
        work()
    (op,) = [op for op in recorder.ops if op.kernels]
    assert op.conv is not None
    began = time.process_time()
    work()
    repeats = max(1, math.ceil(ENOUGH_S / max(time.process_time() - began, 1e-6)))

    def loop() -> None:
        for _ in range(repeats):
            work()

    seconds = _best_seconds(loop, repeats=3) / repeats
    return max(seconds - dispatch_s, 1e-9), op.conv, op.flops


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    given = Path(argv[argv.index("--peaks") + 1]) if "--peaks" in argv else None
    peaks = DevicePeaks(**json.loads(given.read_text())) if given else cpu_peaks(1)
    peak = peaks.fp32_tflops * 1e12
    print(f"{peaks.name}: {peak / 1e9:.0f} GFLOP/s fp32 ({given or 'measured or cached now'}), 1 thread")
    defaults = DEFAULT_CONSTANTS["cpu"]
    dispatch = {ConvPass.FORWARD: defaults.forward_dispatch_us * 1e-6}
    dispatch[ConvPass.INPUT_GRAD] = dispatch[ConvPass.WEIGHT_GRAD] = defaults.backward_dispatch_us * 1e-6
    found: dict[tuple[ConvKind, ConvPass], list[tuple[int, int, float]]] = {}
    began = time.perf_counter()
    print(f"  {'kind':9s} {'pass':11s} {'batch':>5s} {'in':>5s} {'out':>5s} {'side':>4s} {'k':>2s} {'groups':>6s} "
          f"{'pixels':>6s} {'work':>5s} {'ms':>8s} {'efficiency':>10s}")  # fmt: skip
    for case in CASES:
        batch, cin, cout, side, kernel, groups = case
        for conv_pass, work in calls(*case).items():
            seconds, shape, flops = measure(work, dispatch[conv_pass])
            efficiency = flops / peak / seconds
            found.setdefault((shape.kind, conv_pass), []).append((shape.out_pixels, shape.per_output, efficiency))
            print(f"  {shape.kind.value:9s} {conv_pass.value:11s} {batch:5d} {cin:5d} {cout:5d} {side:4d} {kernel:2d} "
                  f"{groups:6d} {shape.out_pixels:6d} {shape.per_output:5d} {seconds * 1e3:8.3f} {efficiency:10.3f}",
                  flush=True)  # fmt: skip
    print(f"measured {len(CASES) * 3} passes in {time.perf_counter() - began:.0f} s")
    tables = {}
    for key, points in sorted(found.items(), key=lambda kv: (kv[0][0].value, kv[0][1].value)):
        pixels = sorted({p for p, _, _ in points})
        tables[key] = [(p, statistics.median(e for q, _, e in points if q == p)) for p in pixels]
    dense = max(e for _, e in tables[(ConvKind.DENSE, ConvPass.FORWARD)])
    depthwise = max(e for _, e in tables[(ConvKind.DEPTHWISE, ConvPass.FORWARD)])
    print(f"\nconv_efficiency={dense:.2f}, grouped_conv_efficiency={depthwise:.2f}  # the best forward medians")
    print("CPU_CONV_TABLES = {  # the median share of the peak at each output size")
    for (kind, conv_pass), medians in tables.items():
        table = ", ".join(f"({p}, {e:.3f})" for p, e in medians)
        cases = len(found[(kind, conv_pass)])
        print(f"    (ConvKind.{kind.name}, P.{conv_pass.name}): ConvTable(({table})),  # {cases} cases")
    print("}")


if __name__ == "__main__":
    main(sys.argv[1:])
