"""layerprof: hardware profiler and fidelity explorer for layer-freezing HPO.

The public API is imported lazily so that `layerprof --help` never pays for importing torch.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from typing import Any

__version__ = "0.1.0"

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
    "plan_profile": "layerprof.measure.sweep",
    "profile_model": "layerprof.measure.sweep",
    "plan_estimate": "layerprof.predict.estimate",
    "estimate_model": "layerprof.predict.estimate",
    "fit_model": "layerprof.predict.estimate",
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

# Modules that moved into concept folders in 0.2.0. Their old dotted names (in user scripts, and in model specs such
# as `layerprof.tasks:digits_workload` that profiles and studies on disk record) still import, with a
# DeprecationWarning; `layerprof.cli` and `layerprof.measure` are folders now and cannot alias their old modules.
MOVED_MODULES = {
    **{name: f"layerprof.sources.{name}" for name in ("models", "hub_models", "workloads", "layers")},
    **{
        name: f"layerprof.measure.{name}"
        for name in ("sweep", "rounds", "nvml", "layertimes", "environment", "amp", "optimizers", "cluster")
    },
    **{name: f"layerprof.predict.{name}" for name in ("estimate", "compose", "timemodel", "layercosts")},
    **{
        name: f"layerprof.fidelity.{name}"
        for name in ("ladder", "granularity", "correlate", "grids", "tasks", "trials", "simulate", "plan")
    },
    **{name: f"layerprof.outputs.{name}" for name in ("tables", "check", "report", "figures", "exporters")},
    "options": "layerprof.cli.options",
    "render": "layerprof.cli.render",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers `import layerprof.sweep` with the module at its new home (one module object, so patches apply)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        old = fullname.removeprefix("layerprof.")
        if fullname.startswith("layerprof.") and old in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: Any) -> Any:
        new = MOVED_MODULES[spec.name.removeprefix("layerprof.")]
        warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: Any) -> None:
        """The module at its new home ran when it was imported there."""


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


def __getattr__(name: str) -> Any:
    """The public API's names, each imported from its module on first use (PEP 562); AttributeError for others."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'layerprof' has no attribute {name!r}")
