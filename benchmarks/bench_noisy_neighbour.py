"""A sweep while another program keeps the CPUs busy for part of it, against the same sweep on a quiet
machine: interleaved rounds (layerprof's default) and one contiguous block per cell (the old protocol).

The heavier twin of tests/test_rounds.py::test_the_staircase_survives_a_competing_process: the paper's
ResNet-18 at batch 32, every z, with two busy processes for the first `--busy` seconds of each noisy sweep.

    .venv/bin/python benchmarks/bench_noisy_neighbour.py [--busy 20]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import torch

from layerprof.models import build_model
from layerprof.profile import SweepSettings
from layerprof.sweep import profile_model

ZS = tuple(range(1, 12))
CONTIGUOUS = {"steps_per_visit": 30, "min_steps": 30, "max_steps": 30}


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def staircase(loaded, layers, **steps: int) -> tuple[dict[int, float], list[int]]:  # noqa: ANN001
    """Step time relative to full training per z, and the z the sweep marked disturbed."""
    settings = SweepSettings(batch_sizes=(32,), trainable_layer_counts=ZS, warmup_steps=5, **steps)
    profile = profile_model(loaded, layers, settings, torch.device("cpu"))
    full = profile.row(32, 11).step_time_ms
    return (
        {row.trainable_layers: row.step_time_ms / full for row in profile.rows},
        [row.trainable_layers for row in profile.rows if row.disturbed],
    )


def with_neighbours(seconds: float, run):  # noqa: ANN001, ANN201
    context = multiprocessing.get_context("spawn")
    rivals = [context.Process(target=busy, args=(seconds,)) for _ in range(2)]
    for rival in rivals:
        rival.start()
    try:
        return run()
    finally:
        for rival in rivals:
            rival.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=float, default=20.0, help="seconds the neighbours stay busy")
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = build_model("paper-resnet18-cifar100")
    layers = loaded.split()
    results = {}
    for name, steps in (("interleaved", {}), ("contiguous", CONTIGUOUS)):
        results[(name, "quiet")] = staircase(loaded, layers, **steps)
        results[(name, "noisy")] = with_neighbours(args.busy, lambda steps=steps: staircase(loaded, layers, **steps))
    print(f"paper-resnet18-cifar100, batch 32, 1 torch thread; noisy: 2 busy processes for {args.busy:g} s")
    print(f"{'z':>3} " + " ".join(f"{name[:11]:>11s}/{kind:5s}" for name, kind in results))
    for z in ZS:
        print(f"{z:>3} " + " ".join(f"{ratios[z]:17.2f}" for ratios, _ in results.values()))
    for name in ("interleaved", "contiguous"):
        quiet, _ = results[(name, "quiet")]
        noisy, disturbed = results[(name, "noisy")]
        worst = max(abs(noisy[z] - quiet[z]) / quiet[z] for z in ZS)
        order = sorted(ZS, key=noisy.get) == sorted(ZS, key=quiet.get)
        print(f"{name}: worst change of a ratio {worst:.0%}; same order {order}; marked disturbed: {disturbed}")


if __name__ == "__main__":
    main()
