"""Trials of one rung on one GPU at once (two, or SHARING_COPIES), against one alone: does `plan`'s slow-down
model hold?

`plan` assumes m trials sharing a GPU take max(1, m x share) x (1 + SHARING_OVERHEAD) times as long as one alone
(`layerprof.fidelity.plan.together`), with share the part of its step a trial keeps the GPU busy: all of it for a
GPU-bound cell, its kernels' time for a host-bound one. This runs one cell of paper-resnet18-cifar100 alone, then
copies of it at once in as many processes (as trials would run), and prints the measured slow-down beside the model's.
Part of benchmarks/gpu_check.sh.

"together" is the slowest copy's step time; "all visits" the median of every visit of the slowest copy, the ones
the sweep left out as slowed included (it compares each visit with the copy's quickest, which may have run after
the others finished).

    python benchmarks/gpu_sharing.py OUT_DIR
    SHARING_MODEL="pythia-1.4b --seq-len 2048" SHARING_CELLS=1:27 python benchmarks/gpu_sharing.py OUT_DIR
    SHARING_COPIES=4 python benchmarks/gpu_sharing.py OUT_DIR   # four at once (the model is fitted on two)
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

from layerprof.devices import GPU_KINDS
from layerprof.fidelity.plan import profile_set, together
from layerprof.profile import load_profile

# (batch, z): full training at a large batch and the lowest rung at a small one
CELLS = tuple(tuple(cell.split(":")) for cell in os.environ.get("SHARING_CELLS", "256:11,32:1").split(","))
MODEL = shlex.split(os.environ.get("SHARING_MODEL", "paper-resnet18-cifar100"))
COPIES = int(os.environ.get("SHARING_COPIES", "2"))


def run(out: Path, name: str, batch: str, z: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "layerprof", "profile", *MODEL, "--batch-sizes", batch,
            "--layers", z, "--warmup", "5", "--min-steps", "15", "--steps", "30", "--device", "cuda",
            "--out", str(out / f"{name}.json")]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def step_ms(path: Path) -> tuple[float, dict]:
    data = json.loads(path.read_text())
    row = data["rows"][0]
    return row["step_time_ms"], data


def main(folder: Path) -> int:
    work = folder / "sharing"
    work.mkdir(exist_ok=True)
    print(f"{'batch':>5} {'z':>3} {'alone ms':>9} {'together ms':>12} {'slow-down':>9} {'all visits':>10} "
          f"{'plan says':>9}  GPU share")  # fmt: skip
    for batch, z in CELLS:
        alone = run(work, f"alone-b{batch}", batch, z)
        if alone.wait(timeout=120) != 0:
            print(f"  alone b{batch} z={z} failed: {alone.stderr.read()[-400:]}")
            return 1
        pair = [run(work, f"pair{i}-b{batch}", batch, z) for i in range(COPIES)]
        for process in pair:
            if process.wait(timeout=180) != 0:
                print(f"  together b{batch} z={z} failed: {process.stderr.read()[-400:]}")
                return 1
        alone_ms, _ = step_ms(work / f"alone-b{batch}.json")
        pair = [step_ms(work / f"pair{i}-b{batch}.json") for i in range(COPIES)]
        together_ms, slower = max(pair, key=lambda item: item[0])
        all_visits = statistics.median(slower["rows"][0]["visit_medians_ms"])
        single = load_profile(work / f"alone-b{batch}.json")
        group = profile_set([single], int(batch))
        gpu = next(iter(group.measured), None)
        share = group.cost(int(z), GPU_KINDS[gpu]).gpu_share if gpu else 1.0
        predicted = together(COPIES, share)
        print(f"{batch:>5} {z:>3} {alone_ms:9.2f} {together_ms:12.2f} {together_ms / alone_ms:8.2f}x "
              f"{all_visits / alone_ms:9.2f}x {predicted:8.2f}x  {share:.3f} of {gpu or '?'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
