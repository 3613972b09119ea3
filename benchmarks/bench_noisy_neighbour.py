"""A sweep while another program keeps the CPUs busy for part of it, against the same sweep on a quiet
machine: interleaved rounds (layerprof's default) and one contiguous block per cell (the old protocol).

The paper's ResNet-18 at batch 32, every z, with two busy processes for the first `--busy` seconds of each noisy
sweep. `--quick` is the check that used to be a test (it failed on a busy machine, as a timing check in a test
must): a 3-layer MLP profiled through the CLI, quiet and then with two busy processes for its first 4 seconds; the
order of the cells and their ratios to full training must stay within 30% of the quiet run's (exit 1 otherwise).

    .venv/bin/python benchmarks/bench_noisy_neighbour.py [--busy 20]
    .venv/bin/python benchmarks/bench_noisy_neighbour.py --quick    # on a quiet machine: about 40 s
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import torch

from layerprof.measure.jobs import profile_model
from layerprof.profile import SweepSettings
from layerprof.sources.models import build_model

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


def mlp_ratios(folder: Path, name: str) -> dict[int, float]:
    """Step time over full training's per z of examples/custom_model.py:mlp, profiled through the CLI."""
    from typer.testing import CliRunner

    from layerprof.cli.commands import app
    from layerprof.profile import load_profile

    example = Path(__file__).parent.parent / "examples" / "custom_model.py"
    out = folder / f"{name}.json"
    result = CliRunner().invoke(
        app, ["profile", f"{example}:mlp", "--input-shape", "64", "--set", "width=1024", "--set", "depth=3",
              "--batch-sizes", "128", "--layers", "1,3,5", "--warmup", "3", "--min-steps", "15", "--steps", "40",
              "--threads", "1", "--out", str(out)],
    )  # fmt: skip
    if result.exit_code != 0:
        raise SystemExit(result.output)
    profile = load_profile(out)
    full = profile.row(128, 5).step_time_ms
    return {row.trainable_layers: row.step_time_ms / full for row in profile.rows}


def quick() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        quiet = mlp_ratios(Path(scratch), "quiet")
        noisy = with_neighbours(4.0, lambda: mlp_ratios(Path(scratch), "noisy"))
    same_order = sorted(quiet, key=quiet.get) == sorted(noisy, key=noisy.get) == [1, 3, 5]
    changes = {z: abs(noisy[z] - quiet[z]) / quiet[z] for z in (1, 3)}
    print(f"mlp, ratios to full training: quiet {quiet}, noisy {noisy}; same order {same_order}; "
          f"changes {', '.join(f'z={z} {change:.0%}' for z, change in changes.items())} (limit 30%)")  # fmt: skip
    return 0 if same_order and max(changes.values()) <= 0.3 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=float, default=20.0, help="seconds the neighbours stay busy")
    parser.add_argument("--quick", action="store_true", help="the small MLP check (exit 1 when it fails)")
    args = parser.parse_args()
    if args.quick:
        return quick()
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
