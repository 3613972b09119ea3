"""Models from timm (`timm:NAME`) and Hugging Face transformers (`hf:MODEL_TYPE` or `hf:path/to/config.json`),
built from the libraries' own definitions with random weights. Nothing is downloaded: timm builds without
pretrained weights, transformers from a configuration class, both with the hub switched to offline.

Both are optional extras: `pip install 'layerprof[timm]'`, `pip install 'layerprof[hf]'`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from layerprof.errors import LayerprofError, read_json
from layerprof.parsing import coerce, parse_value

# Families whose blocks sit inside a stage class that is not a container: split inside it, as for torchvision's
# ViT. Keyed by the timm model name's prefix.
TIMM_UNWRAP: dict[str, tuple[str, ...]] = {
    "convnext": ("ConvNeXtStage",),
    "convnextv2": ("ConvNeXtStage",),
    "swin": ("SwinTransformerStage",),
    "regnet": ("RegStage",),
    "resnetv2": ("ResNetStage",),
    "maxvit": ("MaxxVitStage",),
    "coatnet": ("MaxxVitStage",),
}


def _module(name: str, extra: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        raise LayerprofError(f"{name} is not installed: pip install 'layerprof[{extra}]'") from None


@contextmanager
def offline() -> Iterator[None]:
    """The Hugging Face hub switched off while a model is built: a build never downloads."""
    saved = {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---------------------------------------------------------------- timm


def timm_names() -> list[str]:
    return sorted(_module("timm", "timm").list_models())


def timm_unwrap(name: str) -> tuple[str, ...]:
    family = name.split("_")[0]
    return next((classes for prefix, classes in TIMM_UNWRAP.items() if family == prefix), ())


def timm_model(name: str, num_classes: int, input_shape: tuple[int, ...] | None, overrides: dict[str, str]) -> Any:
    """A builder of the timm model and the per-sample input shape it takes."""
    timm = _module("timm", "timm")
    kwargs = {key: parse_value(value) if isinstance(value, str) else value for key, value in overrides.items()}
    defaults = timm.get_pretrained_cfg(name)
    natural = tuple(getattr(defaults, "input_size", None) or (3, 224, 224))
    shape = tuple(input_shape or natural)
    if len(shape) != 3:
        raise LayerprofError(f"--input-shape for {name} must be C,H,W, got {','.join(map(str, shape))}")
    if shape[1:] != natural[1:] and "img_size" not in kwargs and _takes_image_size(timm, name):
        kwargs["img_size"] = shape[1:]

    def build() -> torch.nn.Module:
        with offline():
            return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)

    return build, shape, kwargs


def _takes_image_size(timm: Any, name: str) -> bool:
    """Models with a patch embedding fix their input size at construction."""
    return any(token in name for token in ("vit", "deit", "beit", "swin", "eva", "mixer", "cait", "xcit"))


# ---------------------------------------------------------------- Hugging Face transformers


def hf_model_types() -> list[str]:
    """Model types transformers can build as a causal language model."""
    _module("transformers", "hf")
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def hf_config(name: str, overrides: dict[str, str]) -> Any:
    """The configuration of `hf:MODEL_TYPE` (the library's defaults) or `hf:path/to/config.json`, with --set
    values in the types of the fields they replace; caching keys and values is off (training needs none)."""
    _module("transformers", "hf")
    from transformers import AutoConfig

    if name.endswith(".json") or "/" in name:
        path = Path(name)
        data = read_json(path, "Hugging Face config", "a config.json")
        if not isinstance(data, dict) or "model_type" not in data:
            raise LayerprofError(f"{name!r} is not a Hugging Face config (no 'model_type')")
        model_type = data.pop("model_type")
    else:
        model_type, data = name, {}
    known = hf_model_types()
    if model_type not in known:
        close = difflib.get_close_matches(model_type, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `layerprof models --source hf` lists them"
        raise LayerprofError(f"unknown Hugging Face causal-LM model type {model_type!r}{hint}")
    with offline():
        config = AutoConfig.for_model(model_type, **data)
    fields = config.to_dict()
    for key, raw in overrides.items():
        if key not in fields:
            close = difflib.get_close_matches(key, sorted(fields), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise LayerprofError(f"--set {key}: not a field of {type(config).__name__}{hint}")
        current = fields[key]
        annotation = type(current) if current is not None and not isinstance(current, (dict, list)) else None
        setattr(config, key, coerce(key, raw, annotation))
    config.use_cache = False
    return config


def hf_model(config: Any) -> Any:
    """A builder of the causal LM for `config`, with random weights."""
    from transformers import AutoModelForCausalLM

    def build() -> torch.nn.Module:
        with offline():
            return AutoModelForCausalLM.from_config(config)

    return build


def hf_unwrap(model: torch.nn.Module) -> tuple[str, ...]:
    """The base model inside the causal-LM wrapper holds the blocks: split inside it."""
    base = getattr(model, "base_model", model)
    return () if base is model else (type(base).__name__,)
