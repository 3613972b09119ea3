"""Where a CPU step's predicted time goes wrong, operation by operation: one measured cell run again for real.

For a cell of a measured profile (its model, options and settings), the step runs on real CPU tensors at one
thread: plain steps are timed as `profile` times them, then steps under a recorder that times every aten operation
(the same operations, FLOPs and bytes the time model reads from an estimate's trace). Each operation's measured time
is set against the time model's prediction for it (default constants, the peaks recorded with the profiles), summed
by class and by operation; what the step takes outside its operations (Python, autograd's engine, the dispatcher) is
set against the model's host costs. Diagnosis only: no constant is fitted to these figures (the held-out models'
time must stay held out); a structure found here is measured with single operations (bench_op_classes.py).

    python benchmarks/bench_op_residuals.py PROFILE.json [--cell B,Z] [--peaks FILE] [--top N]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from layerprof.measure.cells import CellContext, prepared_cell
from layerprof.measure.instruments import OpRecorder, Phase, op_tensors
from layerprof.predict.timemodel import DevicePeaks, Numerics, TimeModel, cpu_peaks
from layerprof.profile import load_profile
from layerprof.sources.models import build_model
from layerprof.sources.names import ModelOptions


class _Timed:
    """An aten operation that notes how long each call took (the recorder's own work is not inside it)."""

    def __init__(self, func, sink: list[float]) -> None:  # noqa: ANN001
        self._func, self._sink = func, sink

    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204
        began = time.process_time()
        out = self._func(*args, **kwargs)
        self._sink.append(time.process_time() - began)
        return out

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._func, name)


class TimedRecorder(OpRecorder):
    """OpRecorder that also keeps each recorded operation's seconds and its input shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self.shapes: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        sink: list[float] = []
        count = len(self.trace.ops)
        out = super().__torch_dispatch__(_Timed(func, sink), types, args, kwargs)
        if len(self.trace.ops) > count:
            self.seconds.append(sink[-1])
            self.shapes.append(" ".join("x".join(map(str, t.shape)) for t in op_tensors((args, kwargs or {}))))
        return out


def run(path: Path, cell: tuple[int, int] | None, peaks_file: Path | None, top: int) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    profile = load_profile(path)
    ok = [row for row in profile.rows if row.ok and row.step_time_ms]
    row = next(r for r in ok if r.key == cell) if cell else ok[-1]
    peaks = DevicePeaks(**json.loads(peaks_file.read_text())) if peaks_file else cpu_peaks(1)
    model = TimeModel.default(peaks, Numerics.of(profile.environment.numerics))
    loaded = build_model(profile.model.spec, ModelOptions.of_profile(profile), device="cpu")
    layers = loaded.split()
    context = CellContext(loaded, layers, profile.settings, torch.device("cpu"))
    with prepared_cell(context, row.batch_size, row.trainable_layers) as live:  # the optimizer as `profile` made it
        for _ in range(3):
            live.step()
        plain = []
        for _ in range(5):
            began = time.process_time()
            live.step()
            plain.append((time.process_time() - began) * 1e3)
        runs = []
        for _ in range(3):
            recorder = TimedRecorder()
            with recorder:
                loss = live.forward()
                recorder.phase = Phase.BACKWARD
                live.backward(loss)
                del loss
                recorder.phase = Phase.OPTIMIZER
                live.update()
            runs.append(recorder)
    first = runs[0]
    launched = [i for i, op in enumerate(first.trace.ops) if op.kernels]
    measured = [statistics.median(r.seconds[i] for r in runs) * 1e3 for i in launched]
    predicted = model.op_device_ms(first.trace)
    prediction = model.predict(first.trace)
    ops = [first.trace.ops[i] for i in launched]
    shapes = [first.shapes[i] for i in launched]
    step_ms = statistics.median(plain)
    inside = sum(measured)
    print(f"{profile.model.spec} b{row.batch_size} z={row.trainable_layers}: profile {row.step_time_ms:.1f} ms, "
          f"now {step_ms:.1f} ms; predicted {prediction.step_ms:.1f} ms (device {prediction.device_ms:.1f}, "
          f"host {prediction.host_ms:.1f})")  # fmt: skip
    counts = {phase.value: first.trace.dispatched(phase) for phase in Phase}
    print(f"  operations timed one by one: {inside:.1f} ms (predicted device {sum(predicted):.1f} ms); outside "
          f"them {step_ms - inside:.1f} ms (predicted host {prediction.host_ms:.1f} ms) over {counts} operations "
          f"and {first.trace.module_calls} module calls; {len(ops)} launch kernels")  # fmt: skip
    by: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for op, m, p in zip(ops, measured, predicted, strict=True):
        for key in ((op.op_class.value, ""), (op.op_class.value, f"{op.phase.value[:3]} {op.name}")):
            by[key][0] += m
            by[key][1] += p
            by[key][2] += 1
    print(f"  {'class / phase op':46s} {'count':>5s} {'measured':>9s} {'predicted':>9s} {'ratio':>6s}")
    for key, (m, p, n) in sorted(by.items(), key=lambda kv: (-by[(kv[0][0], "")][0], kv[0][1] != "", -kv[1][0])):
        if key[1] and m < 0.02 * inside:
            continue
        label = key[0] if not key[1] else f"    {key[1]}"
        print(f"  {label:46s} {n:5d} {m:8.2f}ms {p:8.2f}ms {m / max(p, 1e-9):6.2f}")
    print(f"  the {top} operations most under-predicted (measured - predicted):")
    worst = sorted(range(len(ops)), key=lambda i: predicted[i] - measured[i])[:top]
    for i in worst:
        op = ops[i]
        print(f"    {op.phase.value[:3]} {op.name:28s} {measured[i]:7.3f} ms vs {predicted[i]:7.3f} "
              f"({op.flops / 1e6:.1f} MFLOP, {op.bytes_moved / 2**20:.2f} MiB) {shapes[i][:70]}")  # fmt: skip


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    cell = peaks = None
    top = 12
    if "--cell" in argv:
        b, z = argv[argv.index("--cell") + 1].split(",")
        cell = (int(b), int(z))
    if "--peaks" in argv:
        peaks = Path(argv[argv.index("--peaks") + 1])
    if "--top" in argv:
        top = int(argv[argv.index("--top") + 1])
    run(Path(argv[0]), cell, peaks, top)


if __name__ == "__main__":
    main(sys.argv[1:])
