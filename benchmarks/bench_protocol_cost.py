"""Wall time of a sweep against the paper's fixed protocol (100 warm-up + 100 measured steps per cell), at
equal accuracy of the medians.

Both are layerprof sweeps (the same instrumented step, the same saving); the paper's protocol times each cell
in one block of 100 steps after 100 warm-up steps, layerprof's default in visits of 5 steps spread over
rounds until the median settles. Accuracy is what a ladder uses: each cell's step time relative to full
training, against a long interleaved reference run (30 visits of 10 steps per cell); on a shared CPU the
absolute speed drifts by 10-20% between runs, which ratios from one run cancel. Both protocols run side by
side in this one process, three times each, alternating. Target: layerprof <= 0.3x the paper's wall time,
with an error no larger.

    .venv/bin/python benchmarks/bench_protocol_cost.py [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from layerprof.measure.jobs import profile_model
from layerprof.profile import SweepSettings
from layerprof.sources.models import ModelOptions, build_model

EXAMPLE = str(Path(__file__).parent.parent / "examples" / "custom_model.py")
ZS = (1, 2, 3, 4, 5)
BATCH = 128


def sweep(loaded, layers, device, **steps: float) -> dict[int, float]:  # noqa: ANN001
    """Step time relative to full training, per z."""
    settings = SweepSettings(batch_sizes=(BATCH,), trainable_layer_counts=ZS, **steps)
    profile = profile_model(loaded, layers, settings, device)
    full = profile.row(BATCH, max(ZS)).step_time_ms
    return {row.trainable_layers: row.step_time_ms / full for row in profile.rows}


PAPER = {"warmup_steps": 100, "steps_per_visit": 100, "min_steps": 100, "max_steps": 100}
REFERENCE = {"steps_per_visit": 10, "min_steps": 300, "max_steps": 300}


def worst_error(ratios: dict[int, float], truth: dict[int, float]) -> float:
    return max(abs(ratios[z] - truth[z]) / truth[z] for z in ZS)


def timed(run) -> tuple[float, dict[int, float]]:  # noqa: ANN001
    began = time.perf_counter()
    medians = run()
    return time.perf_counter() - began, medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    options = ModelOptions(input_shape=(64,), num_classes=10, overrides={"width": 1024, "depth": 3})
    loaded = build_model(f"{EXAMPLE}:mlp", options, device=device)
    layers = loaded.split()
    print(f"examples/custom_model.py:mlp width 1024, batch {BATCH}, z = {ZS}, {device}, torch {torch.__version__}")
    _, truth = timed(lambda: sweep(loaded, layers, device, **REFERENCE))
    print("reference step time / full training: " + ", ".join(f"z={z} {truth[z]:.3f}" for z in ZS))
    walls: dict[str, list[float]] = {"paper": [], "layerprof": []}
    runs: dict[str, list[dict[int, float]]] = {"paper": [], "layerprof": []}
    for repeat in range(3):
        for name, run in (("paper", lambda: sweep(loaded, layers, device, **PAPER)),
                          ("layerprof", lambda: sweep(loaded, layers, device))):  # fmt: skip
            wall, ratios = timed(run)
            walls[name].append(wall)
            runs[name].append(ratios)
            error = worst_error(ratios, truth)
            print(f"  {repeat + 1} {name:10s} {wall:6.1f} s, worst error against the reference {error:.1%}")
    for name in walls:
        spread = max((max(r[z] for r in runs[name]) - min(r[z] for r in runs[name])) / truth[z] for z in ZS)
        error = statistics.median(worst_error(ratios, truth) for ratios in runs[name])
        print(
            f"{name:10s} wall {statistics.median(walls[name]):6.1f} s · worst spread of a ratio over 3 runs "
            f"{spread:.1%} · worst error against the reference {error:.1%} (median of 3)"
        )
    ratio = statistics.median(walls["layerprof"]) / statistics.median(walls["paper"])
    print(f"wall time layerprof / paper protocol: {ratio:.2f}x (target <= 0.3x)")


if __name__ == "__main__":
    main()
