"""Estimated peak (fake tensors) vs the peak of the same step on real CPU tensors, for every cell.

    .venv/bin/python benchmarks/bench_estimate_accuracy.py

Models: paper-resnet18-cifar100 at batch 8 and 32, paper-gpt-14m (sequence 256) at batch 1 and 4; all z.
Target: within 2% everywhere. Also prints the estimate's wall time per cell.
"""

from __future__ import annotations

import time

import torch

from layerprof.measure.cells import CellContext, run_cell
from layerprof.predict.estimate import estimate_model
from layerprof.profile import SweepSettings
from layerprof.sources.models import ModelOptions, build_model

CASES = [
    ("paper-resnet18-cifar100", ModelOptions(), (8, 32)),
    ("paper-gpt-14m", ModelOptions(seq_len=256), (1, 4)),
]


def main() -> None:
    worst = 0.0
    print(f"{'model':26s} {'B':>3s} {'z':>3s} {'real MiB':>10s} {'estimate MiB':>13s} {'error':>8s}")
    for spec, options, batch_sizes in CASES:
        real = build_model(spec, options)
        layers = real.split()
        zs = tuple(range(1, len(layers) + 1))
        settings = SweepSettings(
            batch_sizes=batch_sizes, trainable_layer_counts=zs, warmup_steps=1, min_steps=1, max_steps=1, target="cpu"
        )
        began = time.perf_counter()
        estimate = estimate_model(spec, options, settings)
        per_cell = (time.perf_counter() - began) / len(estimate.rows)
        for batch_size in batch_sizes:
            for z in zs:
                measured, _ = run_cell(CellContext(real, layers, settings, torch.device("cpu")), batch_size, z)
                predicted = estimate.row(batch_size, z)
                error = predicted.peak_memory_bytes / measured.peak_memory_bytes - 1
                worst = max(worst, abs(error))
                print(
                    f"{spec:26s} {batch_size:3d} {z:3d} {measured.peak_memory_bytes / 2**20:10.1f} "
                    f"{predicted.peak_memory_bytes / 2**20:13.1f} {error:+8.3%}"
                )
        print(f"{spec}: estimate {per_cell:.2f} s per cell")
    print(f"worst relative error {worst:.3%} (target 2%)")


if __name__ == "__main__":
    main()
