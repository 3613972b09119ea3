"""Two trials of one rung on one GPU at once, against one alone: does `plan`'s slow-down model hold?

`plan` assumes m trials sharing a GPU each take max(1, m x utilisation) times as long as one alone, with
utilisation the trial's achieved FLOP/s over the GPU's dense bf16 peak. This runs one cell of
paper-resnet18-cifar100 alone, then two copies of it at once in two processes (as two trials would run), and
prints the measured slow-down beside the model's. Part of benchmarks/gpu_check.sh.

    python benchmarks/gpu_sharing.py OUT_DIR
    SHARING_MODEL="pythia-1.4b --seq-len 2048" SHARING_CELLS=1:27 python benchmarks/gpu_sharing.py OUT_DIR
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from layerprof.devices import kind_of_device

# (batch, z): full training at a large batch and the lowest rung at a small one
CELLS = tuple(tuple(cell.split(":")) for cell in os.environ.get("SHARING_CELLS", "256:11,32:1").split(","))
MODEL = shlex.split(os.environ.get("SHARING_MODEL", "paper-resnet18-cifar100"))


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
    print(f"{'batch':>5} {'z':>3} {'alone ms':>9} {'together ms':>12} {'slow-down':>9} {'plan says':>9}  utilisation")
    for batch, z in CELLS:
        alone = run(work, f"alone-b{batch}", batch, z)
        if alone.wait(timeout=120) != 0:
            print(f"  alone b{batch} z={z} failed: {alone.stderr.read()[-400:]}")
            return 1
        pair = [run(work, f"pair{i}-b{batch}", batch, z) for i in range(2)]
        for process in pair:
            if process.wait(timeout=180) != 0:
                print(f"  together b{batch} z={z} failed: {process.stderr.read()[-400:]}")
                return 1
        alone_ms, profile = step_ms(work / f"alone-b{batch}.json")
        together_ms = max(step_ms(work / f"pair{i}-b{batch}.json")[0] for i in range(2))
        row = profile["rows"][0]
        gpu = kind_of_device(profile["environment"]["device_name"], profile["environment"].get("total_memory_bytes"))
        achieved = row.get("achieved_tflops")
        utilisation = 1.0 if not achieved or gpu is None else min(1.0, achieved / gpu.bf16_tflops)
        predicted = max(1.0, 2 * utilisation)
        print(f"{batch:>5} {z:>3} {alone_ms:9.2f} {together_ms:12.2f} {together_ms / alone_ms:8.2f}x "
              f"{predicted:8.2f}x  {utilisation:.3f} of {gpu.name if gpu else '?'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
