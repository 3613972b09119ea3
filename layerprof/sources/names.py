"""Model names without torch: the options that build a model (`ModelOptions`), the paper's presets, and each
library's names read from a table recorded for the installed release (`model_names.json`, written by
`tools/model_names.py`), or asked of the library itself where another release is installed.

Which source lists which names, and how a MODEL string resolves to one, is `layerprof.sources.registry`: this
module holds what its entries call (the listers, the table, the refusals), and imports no torch where it can.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal, TypedDict

from layerprof.errors import LayerprofError
from layerprof.profile import Profile


class TorchvisionPreset(TypedDict):
    """A preset built by torchvision: the model's name and the shapes the paper trains it on."""

    source: Literal["torchvision"]
    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    description: str


class LitgptPreset(TypedDict):
    """A preset built by LitGPT from a config of its own."""

    source: Literal["litgpt"]
    config: dict[str, int]
    tie_embeddings: bool  # the output head shares the input embedding's weight
    description: str


# The paper's Table 2 and Section 4.1. LitGPT defaults for everything not listed, input and output
# embeddings tied as in the paper's GPT-2 models.
PRESETS: dict[str, TorchvisionPreset | LitgptPreset] = {
    "paper-resnet18-cifar100": {
        "source": "torchvision",
        "name": "resnet18",
        "num_classes": 100,
        "input_shape": (3, 32, 32),
        "description": "ResNet-18 (torchvision) on CIFAR-100 shapes: 3x32x32 inputs, 100 classes",
    },
    "paper-gpt-14m": {
        "source": "litgpt",
        "config": {"n_embd": 128, "n_layer": 8, "n_head": 2, "block_size": 1024, "vocab_size": 50257},
        "tie_embeddings": True,
        "description": "GPT-2 style 14M (LitGPT): n_embd 128, 8 layers, 2 heads, context 1024, tied embeddings",
    },
    "paper-gpt-600m": {
        "source": "litgpt",
        "config": {"n_embd": 1280, "n_layer": 24, "n_head": 20, "block_size": 1024, "vocab_size": 50257},
        "tie_embeddings": True,
        "description": "GPT-2 style 600M (LitGPT): n_embd 1280, 24 layers, 20 heads, context 1024, tied embeddings",
    },
}


@dataclass
class ModelOptions:
    """What the command line may change about a named model."""

    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None
    seq_len: int | None = None
    overrides: Mapping[str, object] = field(default_factory=dict)  # --set: text, or typed values from a profile
    unwrap: tuple[str, ...] = ()

    @classmethod
    def of_profile(cls, profile: Profile) -> ModelOptions:
        """The options a profile's model was built with, to build it again."""
        workload = profile.workload
        return cls(
            num_classes=workload.num_classes,
            input_shape=workload.input_shape,
            seq_len=workload.seq_len,
            overrides=dict(profile.model.overrides),
            unwrap=tuple(profile.model.unwrap),
        )


# ---------------------------------------------------------------- each library's names, asked of it


def preset_names() -> list[str]:
    """The paper's presets."""
    return sorted(PRESETS)


def torchvision_live_names() -> list[str]:
    """torchvision's classification model names, asked of torchvision."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def litgpt_live_names() -> list[str]:
    """LitGPT's config names, asked of LitGPT."""
    from litgpt.config import name_to_config

    return sorted(name_to_config)


def timm_live_names() -> list[str]:
    """timm's model names, asked of timm."""
    import timm

    return sorted(timm.list_models())


def hf_live_names() -> list[str]:
    """The model types transformers builds as causal language models, asked of transformers."""
    from layerprof.sources.hub_models import hf_model_types

    return hf_model_types()


# ---------------------------------------------------------------- the table recorded for the installed releases

NAME_TABLE = Path(__file__).with_name("model_names.json")


class _RecordedNames(TypedDict, total=False):
    version: str  # the library's release the names were asked of
    names: list[str]
    tasks: dict[str, list[str]]  # torchvision only: its models that are not classifiers, by module


@cache
def _table() -> dict[str, _RecordedNames]:
    if not NAME_TABLE.is_file():
        return {}
    table: dict[str, _RecordedNames] = json.loads(NAME_TABLE.read_text())
    return table


def installed_release(distribution: str) -> str | None:
    """The installed release of a distribution (the library a source's names come from), or None."""
    from importlib import metadata  # not at import: `layerprof --help` needs none of it (20 ms)

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def recorded_names(source: str, distribution: str) -> list[str] | None:
    """The names the table records for a source where they belong to the installed release of its library
    (`distribution`); None where the table holds another release (or none): then only the library can say."""
    entry = _table().get(source)
    if entry is None or installed_release(distribution) != entry.get("version"):
        return None
    return list(entry.get("names", []))


# ---------------------------------------------------------------- names refused, with why

TORCHVISION_TASKS = {
    "detection": "detection",
    "segmentation": "segmentation",
    "video": "video classification",
    "optical_flow": "optical flow",
    "quantization": "quantized",
}


def torchvision_task_names() -> dict[str, list[str]]:
    """torchvision's models that are not classifiers, by module of TORCHVISION_TASKS (recorded or asked)."""
    entry = _table().get("torchvision")
    if entry is not None and "tasks" in entry and installed_release("torchvision") == entry.get("version"):
        return entry["tasks"]
    import torchvision

    return {
        module: sorted(torchvision.models.list_models(module=getattr(torchvision.models, module)))
        for module in TORCHVISION_TASKS
    }


def torchvision_task_refusal(name: str) -> LayerprofError | None:
    """Where NAME is a torchvision model but not a classifier (detection, segmentation, ...): what to do instead."""
    for module, members in torchvision_task_names().items():
        if name in members:
            return LayerprofError(
                f"{name} is a torchvision {TORCHVISION_TASKS[module]} model; layerprof builds torchvision "
                "classifiers (`layerprof models --source torchvision`): profile it through a factory, "
                "path/to/file.py:factory returning a layerprof.CustomWorkload with its batch and loss (see "
                "examples/custom_model.py)"
            )
    return None


def unknown_name(name: str, candidates: list[str], what: str) -> LayerprofError:
    """`unknown WHAT 'NAME'`, with the close names among `candidates`."""
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `layerprof models` lists the accepted names"
    return LayerprofError(f"unknown {what} {name!r}{hint}")
