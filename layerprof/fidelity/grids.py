"""Hyperparameter grids for `layerprof correlate`: the presets (the paper's Table 1 and a small slice of it),
grid files, and their expansion into configurations."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from layerprof.errors import LayerprofError

GridValue = str | int | float | bool  # one value of a hyperparameter: a number, a name (the optimizer) or a flag
SearchSpace = dict[str, list[GridValue]]  # hyperparameter -> the values a grid tries
Config = dict[str, GridValue]  # one configuration (with its `seed`, as a task receives it)

HYPERPARAMETERS = (
    "learning_rate",
    "weight_decay",
    "optimizer",
    "beta1",
    "beta2",
    "warmup_fraction",
    "cooldown_fraction",
)
DEFAULTS: Config = {
    "learning_rate": 1e-3,
    "weight_decay": 0.0,
    "optimizer": "adam",
    "beta1": 0.9,
    "beta2": 0.99,
    "warmup_fraction": 0.0,
    "cooldown_fraction": 0.0,
}


def paper_grid(task: str) -> SearchSpace:
    """The paper's Table 1 search space for the task's family."""
    if task == "pydoc-lm":
        return {
            "learning_rate": [1e-4, 1e-3, 1e-2],
            "weight_decay": [0.0, 1e-6, 1e-4, 1e-2],
            "optimizer": ["adamw"],
            "beta1": [0.9, 0.95],
            "beta2": [0.95, 0.99],
            "warmup_fraction": [0.05, 0.1, 0.25],
            "cooldown_fraction": [0.1, 0.25, 0.5],
        }
    return {
        "learning_rate": [1e-4, 1e-3, 1e-2],
        "weight_decay": [1e-5, 1e-4, 1e-3, 1e-2],
        "optimizer": ["adam", "sgd"],
        "beta1": [0.9, 0.95, 0.99],
        "beta2": [0.9, 0.95, 0.99],
    }


def small_grid(task: str) -> SearchSpace:
    """A 12-configuration slice of the paper's space that finishes in minutes on a laptop CPU."""
    return {
        "learning_rate": [1e-4, 1e-3, 1e-2],
        "weight_decay": [1e-5, 1e-2],
        "optimizer": ["adamw" if task == "pydoc-lm" else "adam", "sgd"],
    }


GridPresetName = Literal["small", "paper"]  # `correlate --grid-preset`: one entry each in GRID_PRESETS
GRID_PRESETS: dict[GridPresetName, Callable[[str], SearchSpace]] = {"small": small_grid, "paper": paper_grid}


def expand_grid(space: SearchSpace) -> list[Config]:
    """Cartesian product; for SGD the Adam-only beta2 is dropped and duplicates removed."""
    keys = sorted(space)
    configs: list[Config] = []
    seen: set[str] = set()
    for values in itertools.product(*(space[key] for key in keys)):
        config = dict(zip(keys, values, strict=True))
        if str(config.get("optimizer", "")).lower() == "sgd":
            config.pop("beta2", None)
        key = json.dumps(config, sort_keys=True)
        if key not in seen:
            seen.add(key)
            configs.append(config)
    return configs


def load_grid(path: Path, known: Sequence[str] | None) -> SearchSpace:
    """A JSON or YAML mapping of hyperparameter -> list of values."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise LayerprofError(f"cannot read grid {str(path)!r}: {error.strerror or error}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            space = yaml.safe_load(text)
        else:
            space = json.loads(text)
    except Exception as error:  # noqa: BLE001 - JSON and YAML raise different types
        raise LayerprofError(f"grid {str(path)!r} does not parse: {str(error).splitlines()[0]}") from None
    if not isinstance(space, dict) or not space:
        raise LayerprofError(f"grid {str(path)!r} must map hyperparameter names to lists of values")
    for name, values in space.items():
        if not isinstance(values, list) or not values:
            raise LayerprofError(f"grid {str(path)!r}: {name!r} must be a non-empty list of values")
        if known is not None and name not in known:
            raise LayerprofError(f"grid {str(path)!r}: unknown hyperparameter {name!r}; known: {', '.join(known)}")
    return space
