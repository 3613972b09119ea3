"""layerprof: hardware profiler and fidelity explorer for layer-freezing HPO.

The public API is imported lazily so that `layerprof --help` never pays for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_LAZY = {
    "Layer": "layerprof.profile",
    "Profile": "layerprof.profile",
    "SweepSettings": "layerprof.profile",
    "MemoryCategory": "layerprof.profile",
    "load_profile": "layerprof.profile",
    "save_profile": "layerprof.profile",
    "split_layers": "layerprof.sources.layers",
    "freeze_layers": "layerprof.sources.layers",
    "build_model": "layerprof.sources.models",
    "split_model": "layerprof.sources.models",
    "CustomWorkload": "layerprof.sources.workloads",
    "plan_profile": "layerprof.measure.jobs",
    "profile_model": "layerprof.measure.jobs",
    "plan_estimate": "layerprof.predict.jobs",
    "estimate_model": "layerprof.predict.estimate",
    "fit_model": "layerprof.predict.fit",
    "LayerprofError": "layerprof.errors",
    "build_ladder": "layerprof.fidelity.ladder",
    "compare": "layerprof.outputs.check",
    "write_report": "layerprof.outputs.report",
    "plan_study": "layerprof.fidelity.correlate",
    "run_study": "layerprof.fidelity.correlate",
    "trial_phase": "layerprof.fidelity.trials",
    "Segment": "layerprof.fidelity.trials",
    "FrozenRun": "layerprof.fidelity.tasks",
    "split_for_freezing": "layerprof.api",
    "freeze": "layerprof.api",
    "ladder_of": "layerprof.api",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """The public API's names, each imported from its module on first use (PEP 562); AttributeError for others."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'layerprof' has no attribute {name!r}")
