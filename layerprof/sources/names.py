"""A MODEL string without torch: the options that build it (`ModelOptions`), its source (`resolve`), and the
model names layerprof accepts, without importing torch where it can: the paper's presets, and each
library's names read from a table recorded for the installed release (`model_names.json`, written by
`tools/model_names.py`), or asked of the library itself where another release is installed.

`timm:` and `hf:` names are listed with their prefix, as they must be given; torchvision and LitGPT names are
accepted bare (and with `torchvision:` / `litgpt:`).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from layerprof.errors import LayerprofError
from layerprof.profile import MODEL_SOURCES, Profile

# The paper's Table 2 and Section 4.1. LitGPT defaults for everything not listed, input and output
# embeddings tied as in the paper's GPT-2 models.
PRESETS: dict[str, dict[str, Any]] = {
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
    overrides: dict[str, Any] = field(default_factory=dict)
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


SOURCES = MODEL_SOURCES
OPTIONAL_SOURCES = {"timm": "timm", "hf": "hf"}  # source -> the extra that installs it
PREFIXED = ("torchvision", "litgpt", "timm", "hf")
LISTED_WITH_PREFIX = ("timm", "hf")  # names of these sources are accepted only with their prefix
# source -> the distribution whose release the recorded names belong to
DISTRIBUTIONS = {"torchvision": "torchvision", "litgpt": "litgpt", "timm": "timm", "hf": "transformers"}
NAME_TABLE = Path(__file__).with_name("model_names.json")


def torchvision_live_names() -> list[str]:
    """torchvision's classification model names, asked of torchvision."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def litgpt_live_names() -> list[str]:
    """LitGPT's config names, asked of LitGPT."""
    from litgpt.config import name_to_config

    return sorted(name_to_config)


def timm_live_names() -> list[str]:
    """timm's model names, asked of timm (an input error naming the extra where timm is missing)."""
    from layerprof.sources.hub_models import timm_names

    return timm_names()


def hf_live_names() -> list[str]:
    """The model types transformers builds as causal language models, asked of transformers."""
    from layerprof.sources.hub_models import hf_model_types

    return hf_model_types()


LIVE_LISTERS: dict[str, Callable[[], list[str]]] = {
    "torchvision": torchvision_live_names,
    "litgpt": litgpt_live_names,
    "timm": timm_live_names,
    "hf": hf_live_names,
}


@cache
def _table() -> dict[str, Any]:
    return json.loads(NAME_TABLE.read_text()) if NAME_TABLE.is_file() else {}


def installed_release(source: str) -> str | None:
    """The installed release of the library a source's names come from, or None where it is not installed."""
    try:
        return metadata.version(DISTRIBUTIONS[source])
    except metadata.PackageNotFoundError:
        return None


def recorded_names(source: str) -> list[str] | None:
    """The names the table records for the installed release of the source's library; None where the table
    holds another release (or none): then only the library can say."""
    entry = _table().get(source)
    if entry is None or installed_release(source) != entry["version"]:
        return None
    return list(entry["names"])


@cache
def source_names(source: str) -> list[str]:
    """A library source's names as the library lists them (bare), from the table where it matches the installed
    release, else from the library (which imports torch)."""
    recorded = recorded_names(source)
    return recorded if recorded is not None else LIVE_LISTERS[source]()


def torchvision_names() -> list[str]:
    """torchvision's classification model names."""
    return source_names("torchvision")


def litgpt_names() -> list[str]:
    """LitGPT's config names."""
    return source_names("litgpt")


def known_names(source: str | None = None) -> dict[str, list[str]]:
    """Every accepted model name, grouped by source (or of one source), as it is given: `timm:` and `hf:` names
    with their prefix. Without a source, the optional ones (timm, hf) are listed where installed; asked for by
    name, a missing one says how to install it."""
    if source is not None and source not in SOURCES:
        raise LayerprofError(f"--source {source!r}: choose one of {', '.join(SOURCES)}")
    names = {}
    for name in SOURCES:
        if source not in (None, name):
            continue
        if name == "preset":
            names[name] = sorted(PRESETS)
            continue
        try:
            listed = source_names(name)
        except LayerprofError:
            if source is not None:
                raise
            continue
        names[name] = [f"{name}:{member}" for member in listed] if name in LISTED_WITH_PREFIX else listed
    return names


# ---------------------------------------------------------------- a MODEL string's source


def _is_user_spec(spec: str) -> bool:
    target, sep, attribute = spec.rpartition(":")
    if not sep or not attribute.isidentifier() or target in (*PREFIXED, ""):
        return False
    return target.endswith(".py") or "/" in target or all(part.isidentifier() for part in target.split("."))


def resolve(spec: str) -> tuple[str, str]:
    """(source, name) for a MODEL string, or a LayerprofError that suggests close names."""
    if spec in PRESETS:
        return "preset", spec
    prefix, sep, rest = spec.partition(":")
    if sep and prefix == "torchvision":
        if rest in torchvision_names():
            return "torchvision", rest
        raise _unknown(rest, torchvision_names(), "torchvision model")
    if sep and prefix == "litgpt":
        if rest in litgpt_names():
            return "litgpt", rest
        raise _unknown(rest, litgpt_names(), "LitGPT config")
    if sep and prefix == "timm":
        if rest in source_names("timm"):
            return "timm", rest
        raise _unknown(rest, source_names("timm"), "timm model")
    if sep and prefix == "hf":
        return "hf", rest  # a model type or a config file; checked where the config is built
    if _is_user_spec(spec):
        return "user", spec
    if spec in torchvision_names():
        return "torchvision", spec
    if spec in litgpt_names():
        return "litgpt", spec
    if spec.endswith(".py") or spec.rpartition(":")[0].endswith(".py"):
        file = spec.rpartition(":")[0] if spec.endswith(":") else spec.removesuffix(":")
        raise LayerprofError(f"model {spec!r} names a file but no factory in it; write {file}:FACTORY")
    if spec in _installed_names("timm"):
        raise LayerprofError(f"model {spec!r} is a timm name: give timm:{spec}")
    everything = [name for group in ("preset", "torchvision", "litgpt") for name in known_names(group)[group]]
    raise _unknown(spec, everything, "model")


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
    if entry is not None and "tasks" in entry and installed_release("torchvision") == entry["version"]:
        return entry["tasks"]
    import torchvision

    return {
        module: sorted(torchvision.models.list_models(module=getattr(torchvision.models, module)))
        for module in TORCHVISION_TASKS
    }


def _torchvision_task(name: str) -> str | None:
    """The kind of torchvision model NAME is where it is one but not a classifier (detection, segmentation, ...)."""
    for module, names in torchvision_task_names().items():
        if name in names:
            return TORCHVISION_TASKS[module]
    return None


def _unknown(name: str, candidates: list[str], what: str) -> LayerprofError:
    if what in ("model", "torchvision model") and (kind := _torchvision_task(name)) is not None:
        return LayerprofError(
            f"{name} is a torchvision {kind} model; layerprof builds torchvision classifiers "
            "(`layerprof models --source torchvision`): profile it through a factory, path/to/file.py:factory "
            "returning a layerprof.CustomWorkload with its batch and loss (see examples/custom_model.py)"
        )
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `layerprof models` lists the accepted names"
    return LayerprofError(f"unknown {what} {name!r}{hint}")


def _installed_names(source: str) -> list[str]:
    """An optional source's names, or none where its library is not installed."""
    try:
        return source_names(source)
    except LayerprofError:
        return []
