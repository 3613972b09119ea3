"""Each operation class's efficiency on this CPU, from single operations, never from a model's step.

For every class of `layerprof.measure.instruments.OpClass` a few representative aten operations run on tensors
whose bytes (read + written, as the time model counts them) fit L2, L3 and memory; each is timed in process CPU
time at one thread (`_best_seconds`), less the time of the same operation on a tiny tensor (its dispatch, which the
time model prices apart). Memory-bound classes: the share of the copy rate of the level their bytes fit
(`cpu_peaks`); convolutions: the share of the float32 matmul peak. The CPU's default constants in
`layerprof.predict.timemodel.DEFAULT_CONSTANTS` are the medians this prints, rounded; no model's step time went
into them, so the held-out table of bench_time_model.py holds out every model. Last, what new pages cost
(`page_fault_ms_per_mib`) and the optimizer's threshold for them (`FRESH_PAGES_BYTES`): `fresh_pages`. The grouped
convolutions here are a first look only: their default and every convolution's curve by shape and pass come from
bench_conv_shapes.py.

    OMP_NUM_THREADS=1 python benchmarks/bench_op_classes.py     # about two minutes
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable

import torch

from layerprof.measure.instruments import OpClass, OpRecorder
from layerprof.predict.timemodel import _best_seconds, cpu_peaks

aten = torch.ops.aten

# total bytes a case's tensors span, one per level: inside L2 (512 KiB here), inside L3, beyond it
SIZES = {"L2": 2**17, "L3": 2**22, "memory": 2**27}


def cases(nbytes: int) -> dict[OpClass, list[tuple[str, Callable[[], object]]]]:
    """Representative operations of each class on activations of about `nbytes` (float32, NCHW or tokens)."""
    channels, batch = 64, 8
    side = max(2, int((nbytes / 4 / 2 / channels / batch) ** 0.5))  # input and output of one op: nbytes
    x = torch.randn(batch, channels, side, side)
    g = torch.randn_like(x)
    w, b = torch.ones(channels), torch.zeros(channels)
    rm, rv = torch.zeros(channels), torch.ones(channels)
    _, mean, invstd = aten.native_batch_norm(x, w, b, rm, rv, True, 0.1, 1e-5)
    tokens = x.reshape(-1, channels)
    scores = torch.randn(batch * 4, side * 2, max(2, x.numel() // (batch * 4 * side * 2)))
    soft = torch.softmax(scores, -1)
    depthwise = torch.randn(channels, 1, 3, 3)
    grouped = torch.randn(channels, 8, 3, 3)
    params = [torch.randn(channels, channels) for _ in range(max(1, nbytes // (channels * channels * 4 * 4)))]
    grads = [torch.randn_like(p) for p in params]
    return {
        OpClass.NORM: [
            ("native_batch_norm", lambda: aten.native_batch_norm(x, w, b, rm, rv, True, 0.1, 1e-5)),
            (
                "native_batch_norm_backward",
                lambda: aten.native_batch_norm_backward(g, x, w, rm, rv, mean, invstd, True, 1e-5, [True, True, True]),
            ),
            ("native_layer_norm", lambda: aten.native_layer_norm(tokens, [channels], w, b, 1e-5)),
        ],  # fmt: skip
        OpClass.ELEMENTWISE: [
            ("add", lambda: torch.add(x, g)),
            ("relu", lambda: torch.relu(x)),
            ("threshold_backward", lambda: aten.threshold_backward(g, x, 0.0)),
            ("gelu", lambda: torch.nn.functional.gelu(x)),
            ("hardswish", lambda: torch.nn.functional.hardswish(x)),
            ("_foreach_add_", lambda: torch._foreach_add_(params, grads, alpha=-1e-3)),
        ],
        OpClass.REDUCTION: [
            ("_softmax", lambda: torch.softmax(scores, -1)),
            ("_softmax_backward_data", lambda: aten._softmax_backward_data(scores, soft, -1, torch.float32)),
            ("max_pool2d", lambda: torch.nn.functional.max_pool2d(x, 3, 2, 1)),
            ("mean", lambda: x.mean((2, 3))),
            ("sum", lambda: x.sum(0)),
        ],
        OpClass.MOVEMENT: [
            ("cat", lambda: torch.cat([x, g], 1)),
            ("clone of a permutation", lambda: x.permute(0, 2, 3, 1).contiguous()),
            ("channel shuffle", lambda: x.view(batch, 2, channels // 2, side, side).transpose(1, 2).contiguous()),
            ("constant_pad_nd", lambda: torch.nn.functional.pad(x, (1, 1, 1, 1))),
            ("_to_copy", lambda: x.to(torch.float64)),
        ],
        OpClass.GROUPED_CONV: [
            ("depthwise 3x3", lambda: torch.nn.functional.conv2d(x, depthwise, padding=1, groups=channels)),
            ("grouped 3x3 (8 per group)", lambda: torch.nn.functional.conv2d(x, grouped, padding=1, groups=8)),
        ],
    }


def traced(work: Callable[[], object]) -> list:
    """The kernel-launching operations of `work`, as the time model sees them."""
    with OpRecorder() as recorder:
        work()
    return [op for op in recorder.ops if op.kernels]


def efficiency(op_class: OpClass, work: Callable[[], object], tiny: Callable[[], object], peaks) -> float:  # noqa: ANN001
    """Ideal time (bytes at the level's rate, or FLOPs at the peak) over the measured time less dispatch."""
    ops = traced(work)
    seconds = _best_seconds(work, repeats=5) - _best_seconds(tiny, repeats=5)
    if op_class.compute_bound:
        ideal = sum(op.flops for op in ops) / (peaks.fp32_tflops * 1e12)
    else:
        ideal = sum(op.bytes_moved / (peaks.gbps_for(op.bytes_moved) * 1e9) for op in ops)
    return ideal / max(seconds, 1e-9)


def fresh_pages() -> None:
    """What new pages cost (`page_fault_ms_per_mib`): a 64 MiB output made fresh (glibc mmaps it anew) against the
    same operation writing into an existing one; and the optimizer's threshold (FRESH_PAGES_BYTES): one
    single-tensor AdamW step on a parameter of 1 and of 2 MiB, in passes over the parameter."""
    mib = 64
    x = torch.rand(mib * 2**20 // 4) + 0.5
    y = torch.empty_like(x)
    fresh = _best_seconds(lambda: torch.sqrt(x), repeats=5)
    into = _best_seconds(lambda: torch.sqrt(x, out=y), repeats=5)
    print(f"fresh pages: {(fresh - into) * 1e3 / mib:.2f} ms per MiB (a {mib} MiB output: {fresh * 1e3:.1f} ms "
          f"fresh, {into * 1e3:.1f} ms into an existing one)")  # fmt: skip
    for size in (1, 2, 4):
        param = torch.nn.Parameter(torch.randn(size * 2**20 // 4))
        param.grad = torch.randn_like(param)
        optimizer = torch.optim.AdamW([param], foreach=False)
        step = _best_seconds(optimizer.step, repeats=5)
        one = _best_seconds(lambda p=param, g=param.grad: torch.sqrt(p, out=g), repeats=5)
        print(f"  single-tensor AdamW on {size} MiB: {step / one:.1f} passes over the parameter")


def main() -> None:
    torch.set_num_threads(1)
    peaks = cpu_peaks(1)
    levels = ", ".join(f"{n} {b // 1024} KiB {r:.0f} GB/s" for n, b, r in peaks.caches)
    print(f"{peaks.name}: {peaks.fp32_tflops * 1e3:.0f} GFLOP/s fp32, memory {peaks.memory_gbps:.1f} GB/s; {levels}")
    tiny = cases(2**10)
    found: dict[OpClass, list[float]] = {}
    for level, nbytes in SIZES.items():
        for op_class, named in cases(nbytes).items():
            for (name, work), (_, small) in zip(named, tiny[op_class], strict=True):
                value = efficiency(op_class, work, small, peaks)
                found.setdefault(op_class, []).append(value)
                print(f"  {level:6s} {op_class.value:12s} {name:28s} {value:6.2f}", file=sys.stderr)
    for op_class, values in found.items():
        print(f"{op_class.value:12s} median efficiency {statistics.median(values):.2f} "
              f"(min {min(values):.2f}, max {max(values):.2f}, {len(values)} cases)")  # fmt: skip
    fresh_pages()


if __name__ == "__main__":
    main()
