"""Environments for HPO libraries whose pins clash with layerprof's: built once, cached under build/hpo-envs/.

NePS pins pandas < 3 and networkx < 3 (layerprof's pins hold pandas 3), so it gets a virtual environment of
its own, with the exact release the tests vouch for. A machine that cannot reach the package registry cannot
build it: the tests that need it skip, with a reason `tests/conftest.py` declares.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2].parent
CACHE = ROOT / "build" / "hpo-envs"
# the releases tested; a new release is tested by changing its pin here
PINNED = {"neps": ["neural-pipeline-search==0.17.0"]}
CANNOT_BUILD = "environment cannot be built"


class EnvironmentUnavailable(RuntimeError):
    pass


def python_for(library: str) -> Path:
    """The interpreter of the library's own environment, built on first use."""
    folder = CACHE / f"{library}-{'-'.join(PINNED[library]).replace('==', '_')}"
    python = folder / "bin" / "python"
    stamp = folder / ".complete"
    if stamp.exists():
        return python
    steps = (
        [sys.executable, "-m", "venv", "--clear", str(folder)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PINNED[library]],
    )
    for command in steps:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
            raise EnvironmentUnavailable(f"{CANNOT_BUILD} for {library}: {tail[0]}")
    stamp.write_text("\n".join(PINNED[library]) + "\n")
    return python
