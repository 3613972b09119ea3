"""Which of single-tensor AdamW's temporaries fault in new pages on a CPU: the optimizer alone, over a real model's
parameters, op by op (issue 37, fourth pass).

Single-tensor AdamW (PyTorch's choice on a CPU) makes two new tensors per parameter, `exp_avg_sq.sqrt()` and its
division by the bias correction, and frees them before the next parameter's. The time model charges new pages
(`page_fault_ms_per_mib`) for every optimizer output from 2 MiB (`FRESH_PAGES_BYTES`). Here AdamW steps over the
parameters of a torchvision ResNet (random gradients, no forward or backward) are timed op by op in process CPU
time at one thread, and each large temporary's time is set against its bytes at the elementwise rate (no faults)
and that plus its pages at the default page cost (all faulted): the share of the page cost each op pays.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/bench_adamw_pages.py [--peaks FILE] [--model resnet34]
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch
import torchvision
from bench_op_residuals import TimedRecorder  # this folder's: the recorder that times each operation

from layerprof.measure.instruments import Phase
from layerprof.predict.timemodel import DEFAULT_CONSTANTS, DevicePeaks, cpu_peaks

MIB = 2**20


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    given = Path(argv[argv.index("--peaks") + 1]) if "--peaks" in argv else None
    name = argv[argv.index("--model") + 1] if "--model" in argv else "resnet34"
    peaks = DevicePeaks(**json.loads(given.read_text())) if given else cpu_peaks(1)
    constants = DEFAULT_CONSTANTS["cpu"]
    model = getattr(torchvision.models, name)()
    params = list(model.parameters())
    for param in params:
        param.grad = torch.randn_like(param)
    optimizer = torch.optim.AdamW(params, foreach=False)
    for _ in range(3):
        optimizer.step()
    runs = []
    for _ in range(5):
        recorder = TimedRecorder()
        recorder.phase = Phase.OPTIMIZER
        with recorder:
            optimizer.step()
        runs.append(recorder)
    ops = runs[0].trace.ops
    seconds = [statistics.median(r.seconds[i] for r in runs) for i in range(len(ops))]
    rate = {}
    by: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0])
    print(f"{name}: {len(params)} parameters, single-tensor AdamW, 1 thread, process CPU time ({peaks.name})")
    print(f"  {'op':6s} {'MiB':>6s} {'ms':>7s} {'no faults':>9s} {'all faulted':>11s} {'share paid':>10s}")
    for op, spent in zip(ops, seconds, strict=True):
        if op.fresh_bytes < 2 * MIB:
            continue
        rate[op.name] = peaks.gbps_for(op.bytes_moved) * 1e9 * constants.elementwise_efficiency
        clean = op.bytes_moved / rate[op.name]
        pages = op.fresh_bytes / MIB * constants.page_fault_ms_per_mib * 1e-3
        paid = (spent - clean) / pages
        row = by[op.name]
        row[0], row[1], row[2], row[3] = row[0] + spent, row[1] + clean, row[2] + pages, row[3] + 1
        print(f"  {op.name:6s} {op.fresh_bytes / MIB:6.2f} {spent * 1e3:7.3f} {clean * 1e3:9.3f} "
              f"{(clean + pages) * 1e3:11.3f} {paid:10.2f}")  # fmt: skip
    for op_name, (spent, clean, pages, count) in by.items():
        print(f"{op_name}: {count} outputs from 2 MiB, {spent * 1e3:.1f} ms measured, {clean * 1e3:.1f} ms without "
              f"faults, {(clean + pages) * 1e3:.1f} ms all faulted: pays {(spent - clean) / pages:.2f} of its page "
              f"cost")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
