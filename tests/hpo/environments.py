"""Environments for HPO libraries whose pins clash with layerprof's: built once, cached under the repository's
build/hpo-envs/.

NePS pins pandas < 3 and networkx < 3 (layerprof's pins hold pandas 3), so it gets a virtual environment of its
own, with the exact release the tests vouch for. The environment is light: it sees the test run's own
site-packages (torch above all, 5 GB) through a `.pth` file placed after its own packages, so pip installs only
what NePS adds or pins differently (pandas 2, networkx 2, botorch, ...: about 250 MB) and NePS imports the same
torch the tests use. A machine that cannot reach the package registry cannot build it: the tests that need it
skip, with a reason `tests/conftest.py` declares.

From nothing, the build takes about a minute, most of it waiting on the package registry: a test run that holds tests
of the environment starts it in the background as soon as they are collected (`start_building`), so that the other
tests run meanwhile instead of a worker waiting on it when the first of them starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
CACHE = ROOT / "build" / "hpo-envs"
# the releases tested; a new release is tested by changing its pin here
PINNED = {"neps": ["neural-pipeline-search==0.17.0"]}
CANNOT_BUILD = "environment cannot be built"
# sorts after every package's own .pth files, so the environment's own packages come first on sys.path
SHARED_PTH = "zz_shared_site_packages.pth"


class EnvironmentUnavailable(RuntimeError):
    pass


def shared_site_packages() -> list[str]:
    """The test run's own package folders, which every library environment sees behind its own packages."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def environment_folder(library: str) -> Path:
    """Where the library's environment lives: named by its pins and by the environment it shares."""
    # a main environment elsewhere gets a folder of its own
    shared = hashlib.sha256("\n".join(shared_site_packages()).encode()).hexdigest()[:8]
    return CACHE / f"{library}-{'-'.join(PINNED[library]).replace('==', '_')}-{shared}"


def is_built(library: str) -> bool:
    return (environment_folder(library) / ".complete").exists()


_BUILDERS: dict[str, threading.Thread] = {}


def start_building(library: str) -> None:
    """Build the library's environment in a thread of this process, unless it is built or being built here; the
    tests go on meanwhile, and `python_for` waits for it (the build holds the environment's lock)."""
    if is_built(library) or library in _BUILDERS:
        return

    def build() -> None:
        with contextlib.suppress(EnvironmentUnavailable):  # the first test that needs it tries again, and skips
            python_for(library)

    _BUILDERS[library] = thread = threading.Thread(target=build, name=f"{library} environment", daemon=True)
    thread.start()


def wait_for_builds() -> None:
    """Let a build started in the background finish before the process ends (no half-built environment left)."""
    for thread in _BUILDERS.values():
        thread.join()


def python_for(library: str) -> Path:
    """The interpreter of the library's own environment, built on first use (by one test process at a time: the
    others wait for it)."""
    folder = environment_folder(library)
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _built(library, folder)


def _built(library: str, folder: Path) -> Path:
    python = folder / "bin" / "python"
    stamp = folder / ".complete"
    if stamp.exists():
        return python
    done = subprocess.run(
        [sys.executable, "-m", "venv", "--clear", str(folder)], capture_output=True, text=True, timeout=600
    )
    if done.returncode == 0:
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        Path(site.stdout.strip(), SHARED_PTH).write_text("\n".join(shared_site_packages()) + "\n")
        install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PINNED[library]]
        done = subprocess.run(install, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
        raise EnvironmentUnavailable(f"{CANNOT_BUILD} for {library}: {tail[0]}")
    stamp.write_text("\n".join(PINNED[library]) + "\n")
    return python
