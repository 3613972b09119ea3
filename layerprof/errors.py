"""The exceptions the CLI turns into a one-line message and a non-zero exit, and the warnings it prints.

They live here, free of torch, so that the command line can name them without importing the heavy modules,
with the one reader of JSON files a user names (profiles, results, studies, configs), where most of them start.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class LayerprofError(Exception):
    """A problem with the user's input or environment: say what was wrong and what would be right."""

    exit_code = 2


class LayerprofWarning(UserWarning):
    """Something the user should know; the command line prints it as one yellow line."""


class SplitWarning(LayerprofWarning):
    """A split that is valid but probably not what the user wants."""


class ModelWarning(LayerprofWarning):
    """A model is built otherwise than its name may suggest (an encoder trained as a causal language model)."""


class FreezingWarning(LayerprofWarning):
    """Freezing as the sweep applies it differs from what the user may assume (BatchNorm statistics still move)."""


class DeviceWarning(LayerprofWarning):
    """The device or machine will not give the figures the user expects (a GPU torch cannot use, a busy CPU)."""


class CellsFailed(LayerprofError):
    """Every cell of a sweep failed: nothing to plan on. The profile is saved all the same (exit 1)."""

    exit_code = 1


class DeviceFailure(LayerprofError):
    """The GPU is in a state no later cell can recover from; what was measured is saved."""

    exit_code = 1


def read_json(path: str | Path, what: str, expected: str = "") -> Any:
    """The JSON in PATH; a missing, unreadable or malformed file is one LayerprofError naming `what` it should be."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LayerprofError(f"{what} {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise LayerprofError(f"cannot read {what} {str(path)!r}: {error}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        hint = f"; expected {expected}" if expected else ""
        raise LayerprofError(f"{str(path)!r} is not JSON{hint}") from None
