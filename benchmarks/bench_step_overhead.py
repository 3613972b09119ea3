"""Step time as layerprof measures it vs. a bare training loop timed in the same process.

    .venv/bin/python benchmarks/bench_step_overhead.py [--device cpu|cuda] [--steps 30]

For each cell the bare loop and layerprof's cell runner alternate (bare, layerprof, bare) on the same model
and batch; the ratio is layerprof's median over the mean of the two bare medians. Target: <= 1.03.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from layerprof.measure.cells import CellContext, run_cell
from layerprof.profile import SweepSettings
from layerprof.sources.layers import freeze_layers
from layerprof.sources.models import ModelOptions, build_model

CELLS = [
    ("paper-resnet18-cifar100", ModelOptions(), 32, 1),
    ("paper-resnet18-cifar100", ModelOptions(), 32, 11),
    ("paper-gpt-14m", ModelOptions(seq_len=128), 4, 1),
    ("paper-gpt-14m", ModelOptions(seq_len=128), 4, 11),
]


def bare_median_ms(loaded, layers, batch_size: int, z: int, steps: int, device: torch.device) -> float:
    """The loop a user would write: freeze, AdamW over trainable parameters, time each step."""
    frozen = freeze_layers(loaded.model, layers, z)
    params = [p for p in loaded.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    batch = loaded.workload.make_batch(batch_size, device)
    times = []
    for index in range(10 + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        loaded.workload.loss(loaded.model, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index >= 10:
            times.append((time.perf_counter() - began) * 1000)
    frozen.remove()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, {args.steps} measured steps per run, torch {torch.__version__}")
    print(f"{'model':26s} {'B':>3s} {'z':>3s} {'bare ms':>9s} {'layerprof ms':>13s} {'ratio':>6s}")
    ratios = []
    for spec, options, batch_size, z in CELLS:
        loaded = build_model(spec, options, device=device)
        layers = loaded.split()
        settings = SweepSettings(
            batch_sizes=(batch_size,),
            trainable_layer_counts=(z,),
            warmup_steps=10,
            min_steps=args.steps,
            max_steps=args.steps,
        )
        before = bare_median_ms(loaded, layers, batch_size, z, args.steps, device)
        row, _ = run_cell(CellContext(loaded, layers, settings, device), batch_size, z)
        after = bare_median_ms(loaded, layers, batch_size, z, args.steps, device)
        bare = (before + after) / 2
        ratio = row.step_time_ms / bare
        ratios.append(ratio)
        print(f"{spec:26s} {batch_size:3d} {z:3d} {bare:9.2f} {row.step_time_ms:13.2f} {ratio:6.3f}")
    print(f"geometric mean ratio {statistics.geometric_mean(ratios):.3f} (target <= 1.03)")


if __name__ == "__main__":
    main()
