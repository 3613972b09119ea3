"""What the tests of tools/ share: each tool loaded from its file, as `python tools/NAME.py` runs it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_tool(name: str) -> ModuleType:
    """tools/NAME.py as a module (`NAME_tool` in sys.modules, so that its dataclasses can find their module)."""
    path = Path(__file__).parents[2] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_tool", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"{name}_tool"] = module
    spec.loader.exec_module(module)
    return module
