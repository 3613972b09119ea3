"""Models from timm (`timm:NAME`) and Hugging Face transformers (`hf:MODEL_TYPE` or `hf:path/to/config.json`),
built from the libraries' own definitions with random weights. Nothing is downloaded: timm builds without
pretrained weights, transformers from a configuration class, both with the hub switched to offline.

Both are optional extras (`pip install 'layerprof[timm]'`, `pip install 'layerprof[hf]'`): their registry entries
(`layerprof.sources.registry`) say how to install a missing one before anything here is called.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from layerprof.errors import LayerprofError, read_json
from layerprof.parsing import coerce, parse_value

if TYPE_CHECKING:
    from transformers import PretrainedConfig

# Stage classes that hold a family's blocks without being a container: split inside them, as for torchvision's
# ViT. Any of them found in a timm model is descended into, whatever the model's name (regnetx_002, regnety_...).
TIMM_STAGES = ("ConvNeXtStage", "SwinTransformerStage", "RegStage", "ResNetStage", "MaxxVitStage")


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


def timm_unwrap(model: torch.nn.Module) -> tuple[str, ...]:
    """The stage classes of TIMM_STAGES the model holds."""
    present = {type(module).__name__ for module in model.modules()}
    return tuple(name for name in TIMM_STAGES if name in present)


def timm_model(
    name: str, num_classes: int, input_shape: tuple[int, ...] | None, overrides: Mapping[str, object]
) -> tuple[Callable[[], torch.nn.Module], tuple[int, ...], dict[str, object]]:
    """A builder of the timm model and the per-sample input shape it takes. --set values are read as they look
    (`parse_value`) and checked against the model class's own annotations once it is built (`check_timm_set`)."""
    import timm

    kwargs: dict[str, object] = {
        key: parse_value(value) if isinstance(value, str) else value for key, value in overrides.items()
    }
    defaults = timm.get_pretrained_cfg(name)
    natural = tuple(getattr(defaults, "input_size", None) or (3, 224, 224))
    shape = tuple(input_shape or natural)
    if len(shape) != 3:
        raise LayerprofError(f"--input-shape for {name} must be C,H,W, got {','.join(map(str, shape))}")
    if shape[1:] != natural[1:] and "img_size" not in kwargs and _takes_image_size(name):
        kwargs["img_size"] = shape[1:]

    create_model: Callable[..., torch.nn.Module] = timm.create_model  # --set values go to the model class as given

    def build() -> torch.nn.Module:
        with offline():
            return create_model(name, pretrained=False, num_classes=num_classes, **kwargs)

    return build, shape, kwargs


def check_timm_set(model: torch.nn.Module, overrides: Mapping[str, object]) -> None:
    """A --set value of a type the model's class does not declare for it (`--set drop_rate=abc`) is refused with
    the type it declares: timm passes the value on as given, and the model would fail only in its forward."""
    import inspect
    import typing

    init = type(model).__init__
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # noqa: BLE001 - annotations that do not resolve: nothing to check against
        hints = {}
    parameters = inspect.signature(init).parameters
    for key, raw in overrides.items():
        annotation = hints.get(key)
        if annotation is None and key in parameters and parameters[key].default not in (None, inspect.Parameter.empty):
            annotation = type(parameters[key].default)
        if annotation is not None and isinstance(raw, str):
            coerce(key, raw, annotation)


def _takes_image_size(name: str) -> bool:
    """Models with a patch embedding fix their input size at construction."""
    return any(token in name for token in ("vit", "deit", "beit", "swin", "eva", "mixer", "cait", "xcit"))


# ---------------------------------------------------------------- Hugging Face transformers


def hf_model_types() -> list[str]:
    """Model types transformers can build as a causal language model."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def hf_config(name: str, overrides: Mapping[str, object]) -> PretrainedConfig:
    """The configuration of `hf:MODEL_TYPE` (the library's defaults) or `hf:path/to/config.json`, with --set
    values in the types of the fields they replace; caching keys and values is off (training needs none)."""
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
    with offline(), quiet_transformers():
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
    if is_encoder(model_type):
        config.is_decoder = True  # what its causal-LM class asks for (and warns about on every build without)
    return config


def is_encoder(model_type: str) -> bool:
    """An encoder (BERT, RoBERTa, ...) that transformers also builds with a causal-LM head: layerprof trains it
    as a decoder (`is_decoder=True`: causal attention, next-token loss), not with masked-LM pretraining."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and model_type not in ENCODER_DECODERS


# encoder-decoders whose causal-LM class is their decoder alone (it sets is_decoder itself)
ENCODER_DECODERS = ("bart", "mbart", "mvp")


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' own warnings (its logger) kept off the terminal while a model is built."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def hf_model(config: PretrainedConfig) -> Callable[[], torch.nn.Module]:
    """A builder of the causal LM for `config`, with random weights."""
    from transformers import AutoModelForCausalLM

    def build() -> torch.nn.Module:
        with offline(), quiet_transformers():
            return AutoModelForCausalLM.from_config(config)

    return build


def hf_unwrap(model: torch.nn.Module, block_count: int | None = None) -> tuple[str, ...]:
    """Every module on the way from the causal-LM wrapper to the list of its blocks (the shallowest
    `nn.ModuleList` of `block_count` entries, else the shallowest): split inside them, so that each block is a
    layer (`model.layers.N` for Llama, `bert.encoder.layer.N` for BERT, `model.decoder.layers.N` for BART)."""
    lists = [
        (name, len(module))
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) > 1
    ]
    matching = [item for item in lists if item[1] == block_count] or lists
    if not matching:
        base = getattr(model, "base_model", model)
        return () if base is model else (type(base).__name__,)
    name = min(matching, key=lambda item: item[0].count("."))[0]
    parts = name.split(".")
    return tuple(dict.fromkeys(type(model.get_submodule(".".join(parts[:i]))).__name__ for i in range(1, len(parts))))
