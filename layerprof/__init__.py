"""layerprof: hardware profiler and fidelity explorer for layer-freezing HPO.

The public API is imported lazily so that `layerprof --help` never pays for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Layer": "layerprof.profile",
    "Profile": "layerprof.profile",
    "SweepSettings": "layerprof.profile",
    "MemoryCategory": "layerprof.profile",
    "load_profile": "layerprof.profile",
    "save_profile": "layerprof.profile",
    "split_layers": "layerprof.layers",
    "freeze_layers": "layerprof.layers",
    "build_model": "layerprof.models",
    "split_model": "layerprof.models",
    "CustomWorkload": "layerprof.workloads",
    "plan_profile": "layerprof.sweep",
    "profile_model": "layerprof.sweep",
    "plan_estimate": "layerprof.estimate",
    "estimate_model": "layerprof.estimate",
    "fit_model": "layerprof.estimate",
    "LayerprofError": "layerprof.errors",
    "build_ladder": "layerprof.ladder",
    "compare": "layerprof.check",
    "write_report": "layerprof.report",
    "plan_study": "layerprof.correlate",
    "run_study": "layerprof.correlate",
    "trial_phase": "layerprof.trials",
    "Segment": "layerprof.trials",
    "FrozenRun": "layerprof.tasks",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'layerprof' has no attribute {name!r}")
