"""layerprof: hardware profiler and fidelity explorer for layer-freezing HPO.

The public API is imported lazily so that `layerprof --help` never pays for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Layer": "layerprof.layers",
    "split_layers": "layerprof.layers",
    "freeze_layers": "layerprof.layers",
    "build_model": "layerprof.models",
    "CustomWorkload": "layerprof.workloads",
    "SweepSettings": "layerprof.sweep",
    "profile_model": "layerprof.sweep",
    "Profile": "layerprof.profile",
    "load_profile": "layerprof.profile",
    "save_profile": "layerprof.profile",
    "LayerprofError": "layerprof.errors",
    "build_ladder": "layerprof.ladder",
    "estimate_model": "layerprof.estimate",
    "compare": "layerprof.check",
    "write_report": "layerprof.report",
    "run_study": "layerprof.correlate",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'layerprof' has no attribute {name!r}")
