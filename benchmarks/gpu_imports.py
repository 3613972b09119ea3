"""Import every module the GPU check runs, before anything is timed (part of benchmarks/gpu_check.sh).

A package the machine's image lacks, or one of the carried wheels that cannot run beside the image's versions,
fails here in seconds with its name, not minutes later inside a timed step. Exit code 1 names every failure.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

# third-party modules the check's commands import, lazily or not
THIRD_PARTY = (
    "torch", "torchvision", "litgpt", "litgpt.model", "litgpt.config", "jsonargparse", "lightning", "pynvml",
    "pandas", "typer", "rich", "matplotlib", "yaml", "numpy", "pytest", "scipy", "timm", "transformers",
    "peft", "torchao.optim",
)  # fmt: skip


def main() -> int:
    import layerprof

    failures = []
    own = [m.name for m in pkgutil.walk_packages(layerprof.__path__, "layerprof.") if not m.name.endswith("__main__")]
    names = list(THIRD_PARTY) + own
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - every failure is reported, not only the first
            failures.append(f"{name}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    import torch

    versions = ", ".join(f"{name} {getattr(sys.modules.get(name), '__version__', '?')}" for name in ("torch", "litgpt"))
    print(
        f"imports: {len(names) - len(failures)} of {len(names)} modules; {versions}; CUDA: {torch.cuda.is_available()}"
    )
    for failure in failures:
        print(f"  cannot import {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
