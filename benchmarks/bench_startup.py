"""Start-up cost of the CLI: `layerprof --help` and each command's --help, and whether torch got imported.

    .venv/bin/python benchmarks/bench_startup.py

Target: `layerprof --help` under 0.25 s (issue 37, a quiet 2-core machine), and none of torch, torchvision, litgpt
or importlib.metadata imported for --help.
"""

from __future__ import annotations

import subprocess
import sys
import time

PROBE = """
import sys
from layerprof.cli.commands import app
try:
    app({args!r}, standalone_mode=False)
except SystemExit:
    pass
heavy = [name for name in ("torch", "torchvision", "litgpt", "pandas", "importlib.metadata") if name in sys.modules]
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


def best_of(command: list[str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - began)
    return min(times)


def main() -> None:
    layerprof = [sys.executable, "-m", "layerprof.cli.commands"]
    print(f"{'command':32s} {'best of 5 (s)':>13s}  heavy modules imported")
    for args in ([], ["profile"], ["layers"], ["models"]):
        seconds = best_of([*layerprof, *args, "--help"])
        probe = subprocess.run(
            [sys.executable, "-c", PROBE.format(args=[*args, "--help"])], capture_output=True, text=True, check=True
        )
        heavy = probe.stderr.strip().rpartition("HEAVY=")[2] or "none"
        label = " ".join(["layerprof", *args, "--help"])
        print(f"{label:32s} {seconds:13.3f}  {heavy}")
    bare = best_of([sys.executable, "-c", "pass"])
    print(f"{'(python -c pass)':32s} {bare:13.3f}")


if __name__ == "__main__":
    main()
