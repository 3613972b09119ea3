"""Turning a MODEL string into a model and its workload.

Accepted forms, tried in this order:

* a preset of the paper (`paper-resnet18-cifar100`, `paper-gpt-14m`, `paper-gpt-600m`);
* `path/to/file.py:factory` or `package.module:factory` — a user factory;
* a torchvision classification model (`resnet18`, `vit_b_16`, ...) or `torchvision:NAME`;
* a LitGPT config name (`pythia-14m`, ...) or `litgpt:NAME`;
* `timm:NAME` and `hf:MODEL_TYPE` / `hf:path/to/config.json` (layerprof.sources.hub_models).

Weights are never downloaded: every model starts from random init, as in the paper.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import logging
import os
import sys
import typing
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from layerprof.errors import LayerprofError, ModelWarning, SplitWarning
from layerprof.parsing import coerce
from layerprof.profile import Family, Layer, ModelInfo, ModelSource
from layerprof.sources.layers import Split, TraceFailed, total_params, trace_split
from layerprof.sources.names import PRESETS, ModelOptions, _is_user_spec, resolve
from layerprof.sources.workloads import CustomWorkload, Workload

IMAGE_BATCH_SIZES = (32,)
LM_BATCH_SIZES = (4,)
DEFAULT_MAX_SEQ_LEN = 512

# Classes descended into by default, per family, beyond the model's own class and pure containers.
DEFAULT_UNWRAP: dict[str, tuple[str, ...]] = {
    "vit_": ("Encoder",),  # torchvision ViT: the encoder holds the blocks and the positional embedding
}


@dataclass
class LoadedModel:
    """A model built from a MODEL string: the module, its workload and how its layers split."""

    spec: str
    source: ModelSource
    name: str
    model: nn.Module
    workload: Workload
    unwrap: tuple[str, ...]
    overrides: dict[str, Any]
    description: str = ""
    construction: str = ""  # how its tensors were placed on a meta build: one of CONSTRUCTIONS
    order: str = "forward"  # the order of the last split: layerprof.sources.layers.SplitOrder
    order_reason: str = ""  # registration order: why no forward pass could be traced

    def split(self, trace_required: bool = False) -> list[Layer]:
        """The model's layers in forward order, traced with one small forward pass (`order` says whether it
        could be traced)."""
        return self.trace(trace_required).layers

    def trace(self, trace_required: bool = False) -> Split:
        """`split`, with the order the layers are in; remembered for `describe`."""
        device = next(self.model.parameters()).device
        dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)

        def run_forward(model: nn.Module) -> None:
            # batch 2: BatchNorm in training mode rejects a single sample on small images
            self.workload.loss(model, self.workload.make_batch(2, device, dtype))

        split = trace_split(self.model, self.unwrap, run_forward, trace_required)
        self.order, self.order_reason = split.order, split.reason
        return split

    def describe(self, layers: Sequence[Layer]) -> ModelInfo:
        """The plain data a profile holds: these layers as the split, in the order the last `trace` found."""
        return ModelInfo(
            spec=self.spec,
            source=self.source,
            name=self.name,
            description=self.description,
            overrides=dict(self.overrides),
            unwrap=tuple(self.unwrap),
            layers=list(layers),
            total_params=total_params(layers),
            construction=self.construction,
            order=self.order,
            order_reason=self.order_reason,
        )


# ---------------------------------------------------------------- names (layerprof.sources.names)


def litgpt_classes() -> tuple[Any, Any]:
    """LitGPT's `Config` and `GPT`, imported without what the model does not need (`_litgpt_package`)."""
    _litgpt_package()
    from litgpt.config import Config

    if "litgpt.model" not in sys.modules:
        # litgpt.model imports qkv_reassemble from the checkpoint converter, which imports Lightning; it is called
        # only to convert a checkpoint, so the converter is imported when it is
        name = "litgpt.scripts.convert_hf_checkpoint"
        deferred = _deferred_module(name, ("qkv_reassemble",))
        sys.modules.setdefault(name, deferred)
        try:
            import litgpt.model  # noqa: F401
        finally:
            if sys.modules.get(name) is deferred:
                del sys.modules[name]
    from litgpt.model import GPT

    return Config, GPT


def _litgpt_package() -> None:
    """Make `import litgpt.config` and `litgpt.model` not run litgpt's `__init__`, which imports its API, Lightning,
    torchmetrics and transformers (seconds, most of an estimate's start-up). The package is registered
    unexecuted; the first use of anything else from it (`litgpt.LLM`, `from litgpt import GPT`) runs its
    `__init__` then, in the same module, so that code using LitGPT's API sees the whole package."""
    if "litgpt" in sys.modules:
        return
    spec = importlib.util.find_spec("litgpt")
    if spec is None or spec.loader is None:
        raise LayerprofError("LitGPT is not installed; install layerprof's dependencies (pip install litgpt)")
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def finish(attribute: str) -> Any:  # the rest of the package, on first use
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        del package.__getattr__
        loader.exec_module(package)
        return getattr(package, attribute)

    package.__getattr__ = finish  # type: ignore[method-assign]
    sys.modules["litgpt"] = package


def _deferred_module(name: str, functions: tuple[str, ...]) -> Any:
    """A stand-in for module `name` whose `functions` import the real module when first called."""
    stand_in = type(sys)(name)

    def real() -> Any:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
        return importlib.import_module(name)

    def rest(attribute: str) -> Any:  # the import system's own questions (__path__, ...) load nothing
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return getattr(real(), attribute)

    for function in functions:
        setattr(stand_in, function, lambda *args, _f=function, **kwargs: getattr(real(), _f)(*args, **kwargs))
    stand_in.__getattr__ = rest  # type: ignore[method-assign]
    return stand_in


def typed_overrides(overrides: dict[str, Any], hints: dict[str, Any]) -> dict[str, Any]:
    """--set values in the types their targets declare (`hints`: name -> annotation)."""
    return {key: coerce(key, value, hints.get(key)) for key, value in overrides.items()}


# ---------------------------------------------------------------- placing a model's tensors

CONSTRUCTIONS = ("meta", "meta-parameters", "fake", "cpu", "cpu-trace")
CONSTRUCTION_NOTES = {
    "meta-parameters": "its constructor computes with tensors: only its parameters and buffers were put on the meta "
    "device",
    "fake": "its forward pass cannot run on the meta device: it was split on fake CPU tensors (no memory)",
    "cpu": "its constructor computes with tensors: it was built on the CPU, using its memory",
    "cpu-trace": "its forward pass cannot run on meta or fake tensors: it was built and traced on the CPU, using its "
    "memory",
}


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Parameters and buffers go to the meta device as modules register them; whatever else a constructor
    computes with stays a real CPU tensor (accelerate's `init_empty_weights` does the same)."""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register_parameter(module, name, param)
        held = module._parameters.get(name)
        if held is not None and type(held) is nn.Parameter and held.device.type != "meta":
            module._parameters[name] = nn.Parameter(held.detach().to("meta"), requires_grad=held.requires_grad)

    def buffer_on_meta(module: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None:
        register_buffer(module, name, tensor, persistent)
        held = module._buffers.get(name)
        if held is not None:
            module._buffers[name] = held.to("meta")

    nn.Module.register_parameter, nn.Module.register_buffer = parameter_on_meta, buffer_on_meta  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer  # type: ignore[method-assign]


def construct(build: Callable[[], Any], device: torch.device) -> tuple[Any, str]:
    """What `build()` returns, with its tensors on `device`, and how it got there.

    On the meta device (a split that costs no memory) a constructor that computes with its tensors (a
    `.tolist()` of a computed tensor) fails; then only parameters and buffers are put on the meta device as
    they are registered ("meta-parameters"), and failing that the model is built on the CPU and moved ("cpu").
    """
    if device.type != "meta":
        with torch.device(device):
            return build(), device.type
    try:
        with torch.device(device):
            return build(), "meta"
    except Exception:  # noqa: BLE001 - any arithmetic a constructor does on meta tensors
        pass
    try:
        with _parameters_on_meta():
            return _moved(build(), device), "meta-parameters"
    except Exception:  # noqa: BLE001
        pass
    return _moved(build(), device), "cpu"


def _moved(built: Any, device: torch.device) -> Any:
    module = built if isinstance(built, nn.Module) else getattr(built, "model", None)
    if isinstance(module, nn.Module):
        module.to(device)
    return built


# ---------------------------------------------------------------- building


def build_model(
    spec: str, options: ModelOptions | None = None, device: str | torch.device = "cpu", dtype=torch.float32
) -> LoadedModel:
    """Build MODEL with random weights on `device` ("meta" builds without allocating memory)."""
    options = options or ModelOptions()
    source, name = resolve(spec)
    device = torch.device(device)
    if source == "preset":
        loaded = _build_preset(spec, options, device)
    elif source == "torchvision":
        loaded = _build_torchvision(spec, name, options, options.num_classes, options.input_shape, device)
    elif source == "litgpt":
        loaded = _build_litgpt(spec, name, None, options, device)
    elif source == "timm":
        loaded = _build_timm(spec, name, options, device)
    elif source == "hf":
        loaded = _build_hf(spec, name, options, device)
    else:
        loaded = _build_user(spec, options, device)
    check_built(loaded, options)
    if dtype != torch.float32:
        cast_floating(loaded.model, dtype)
    loaded.model.train()
    return loaded


def check_built(loaded: LoadedModel, options: ModelOptions) -> None:
    """What a build can show about the options: an --unwrap class the model does not hold, a parameter with no
    elements (a size of 0 given as a value --set does not recognise as one)."""
    present = {type(module).__name__ for module in loaded.model.modules()}
    present |= {type(module).__qualname__ for module in loaded.model.modules()}
    for name in options.unwrap:
        if not name.strip():
            raise LayerprofError("--unwrap expects a class name, e.g. --unwrap Block; got an empty one")
        if name not in present:
            close = difflib.get_close_matches(name, sorted(present), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise LayerprofError(f"--unwrap {name}: {loaded.spec} holds no module of class {name}{hint}")
    empty = [name for name, param in loaded.model.named_parameters() if param.numel() == 0]
    if empty:
        shape = tuple(loaded.model.get_parameter(empty[0]).shape)
        raise LayerprofError(
            f"{loaded.spec} has a parameter with no elements ({empty[0]}, shape {shape}): a size given with --set is 0?"
        )


def cast_floating(model: nn.Module, dtype: torch.dtype) -> None:
    """`model.to(dtype)` for floating parameters and buffers, by replacing them: `.to()` swaps tensors in place,
    which fake tensors (estimates) do not allow. A tensor held twice (tied weights) stays one tensor."""
    cast: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None and param.is_floating_point():
                if id(param) not in cast:
                    cast[id(param)] = nn.Parameter(param.detach().to(dtype), requires_grad=param.requires_grad)
                module._parameters[name] = cast[id(param)]  # type: ignore[assignment]
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.is_floating_point():
                module._buffers[name] = cast.setdefault(id(buffer), buffer.to(dtype))


def _build_preset(spec: str, options: ModelOptions, device: torch.device) -> LoadedModel:
    preset = PRESETS[spec]
    if preset["source"] == "torchvision":
        loaded = _build_torchvision(
            spec,
            preset["name"],
            options,
            options.num_classes or preset["num_classes"],
            options.input_shape or preset["input_shape"],
            device,
        )
    else:
        loaded = _build_litgpt(spec, spec, preset, options, device)
    loaded.source = "preset"
    loaded.description = preset["description"]
    return loaded


def _build_torchvision(
    spec: str,
    name: str,
    options: ModelOptions,
    num_classes: int | None,
    input_shape: tuple[int, ...] | None,
    device: torch.device,
) -> LoadedModel:
    import torchvision

    if options.seq_len is not None:
        raise LayerprofError(f"--seq-len applies to language models; {name} takes --input-shape C,H,W")
    kwargs = typed_overrides(options.overrides, {})
    num_classes = num_classes or 1000
    natural = (3, 299, 299) if name == "inception_v3" else (3, 224, 224)
    input_shape = input_shape or natural
    if len(input_shape) != 3:
        raise LayerprofError(f"--input-shape for {name} must be C,H,W, got {','.join(map(str, input_shape))}")
    if name.startswith("vit_") and input_shape[1:] != (224, 224):
        if input_shape[1] != input_shape[2]:
            raise LayerprofError(f"{name} needs square images, got --input-shape {input_shape}")
        patch = int(name.rpartition("_")[2]) if name.rpartition("_")[2].isdigit() else None
        if patch and input_shape[1] % patch:
            size = max(patch, round(input_shape[1] / patch) * patch)
            raise LayerprofError(
                f"{name} cuts images into {patch}x{patch} patches: --input-shape {','.join(map(str, input_shape))} "
                f"is not a multiple of {patch}; e.g. --input-shape {input_shape[0]},{size},{size}"
            )
        kwargs.setdefault("image_size", input_shape[1])
    try:
        model, construction = construct(
            lambda: torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs), device
        )
    except (TypeError, ValueError, AssertionError) as error:  # ViT asserts that its image size fits its patches
        raise LayerprofError(f"torchvision could not build {name} with {kwargs}: {error}") from None
    unwrap = next((classes for prefix, classes in DEFAULT_UNWRAP.items() if name.startswith(prefix)), ())
    workload = Workload(
        family="image-classification",
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        default_batch_sizes=IMAGE_BATCH_SIZES,
    )
    return LoadedModel(
        spec=spec,
        source="torchvision",
        name=name,
        model=model,
        workload=workload,
        unwrap=tuple(dict.fromkeys(unwrap + options.unwrap)),
        overrides=kwargs,
        description=f"torchvision {name}, random init",
        construction=construction,
    )


def _build_litgpt(
    spec: str, name: str, preset: dict[str, Any] | None, options: ModelOptions, device: torch.device
) -> LoadedModel:
    Config, GPT = litgpt_classes()  # noqa: N806

    if options.input_shape is not None or options.num_classes is not None:
        raise LayerprofError(f"--input-shape and --num-classes apply to image models; {name} takes --seq-len")
    fields = {f.name for f in dataclasses.fields(Config)}
    unknown = [key for key in options.overrides if key not in fields]
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(fields), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise LayerprofError(f"--set {unknown[0]}: not a litgpt.Config field{hint}")
    overrides = typed_overrides(options.overrides, typing.get_type_hints(Config))
    try:
        if preset is None:
            config = Config.from_name(name, **overrides)
        else:
            config = Config(name=name, **{**preset["config"], **overrides})
    except (TypeError, ValueError, AssertionError) as error:
        raise LayerprofError(f"LitGPT rejected the config for {name}: {error}") from None
    seq_len = options.seq_len or min(config.block_size, DEFAULT_MAX_SEQ_LEN)
    if not 1 <= seq_len <= config.block_size:
        raise LayerprofError(f"--seq-len must be in 1..{config.block_size} (the block size of {name}), got {seq_len}")
    model, construction = construct(lambda: GPT(config), device)
    model.max_seq_length = seq_len
    if preset is not None and preset.get("tie_embeddings"):
        model.lm_head.weight = model.transformer.wte.weight
    workload = Workload(
        family="causal-lm",
        seq_len=seq_len,
        vocab_size=config.padded_vocab_size,
        default_batch_sizes=LM_BATCH_SIZES,
    )
    return LoadedModel(
        spec=spec,
        source="litgpt",
        name=name,
        model=model,
        workload=workload,
        unwrap=options.unwrap,
        overrides=overrides,
        description=f"LitGPT {name}, random init",
        construction=construction,
    )


def _build_timm(spec: str, name: str, options: ModelOptions, device: torch.device) -> LoadedModel:
    from layerprof.sources.hub_models import check_timm_set, timm_model, timm_unwrap

    if options.seq_len is not None:
        raise LayerprofError(f"--seq-len applies to language models; {name} takes --input-shape C,H,W")
    num_classes = options.num_classes or 1000
    build, input_shape, kwargs = timm_model(name, num_classes, options.input_shape, options.overrides)
    try:
        model, construction = construct(build, device)
    except (TypeError, ValueError, AssertionError) as error:
        raise LayerprofError(f"timm could not build {name} with {kwargs}: {error}") from None
    check_timm_set(model, options.overrides)
    workload = Workload(
        family="image-classification",
        input_shape=input_shape,
        num_classes=num_classes,
        default_batch_sizes=IMAGE_BATCH_SIZES,
    )
    return LoadedModel(
        spec=spec,
        source="timm",
        name=name,
        model=model,
        workload=workload,
        unwrap=tuple(dict.fromkeys(timm_unwrap(model) + options.unwrap)),
        overrides=kwargs,
        description=f"timm {name}, random init",
        construction=construction,
    )


def _build_hf(spec: str, name: str, options: ModelOptions, device: torch.device) -> LoadedModel:
    from layerprof.sources.hub_models import hf_config, hf_model, hf_unwrap, is_encoder

    if options.input_shape is not None or options.num_classes is not None:
        raise LayerprofError(f"--input-shape and --num-classes apply to image models; {name} takes --seq-len")
    config = hf_config(name, options.overrides)
    blocks = _block_count(config)
    if blocks is not None and blocks < 1:
        raise LayerprofError(
            f"{name} declares {blocks} blocks (num_hidden_layers); a model to profile needs at least 1"
        )
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    seq_len = options.seq_len or min(limit or DEFAULT_MAX_SEQ_LEN, DEFAULT_MAX_SEQ_LEN)
    if limit is not None and not 1 <= seq_len <= limit:
        raise LayerprofError(f"--seq-len must be in 1..{limit} (the positions of {name}), got {seq_len}")
    try:
        model, construction = construct(hf_model(config), device)
    except (TypeError, ValueError, AssertionError) as error:
        raise LayerprofError(f"transformers could not build {name}: {str(error).splitlines()[0]}") from None
    if is_encoder(config.model_type):
        warnings.warn(
            f"{spec} is an encoder: it is built as {type(model).__name__} with is_decoder=True (causal attention, "
            "next-token loss), not trained as a masked language model",
            ModelWarning,
            stacklevel=2,
        )
    workload = Workload(
        family="causal-lm", seq_len=seq_len, vocab_size=config.vocab_size, default_batch_sizes=LM_BATCH_SIZES
    )
    return LoadedModel(
        spec=spec,
        source="hf",
        name=config.model_type,
        model=model,
        workload=workload,
        unwrap=tuple(dict.fromkeys(hf_unwrap(model, _block_count(config)) + options.unwrap)),
        overrides={key: getattr(config, key) for key in options.overrides},
        description=f"Hugging Face {type(model).__name__}, random init"
        + (", an encoder trained as a causal LM (is_decoder=True)" if is_encoder(config.model_type) else ""),
        construction=construction,
    )


def _block_count(config: Any) -> int | None:
    """The number of blocks a Hugging Face config declares, under the names transformers uses."""
    for key in ("num_hidden_layers", "n_layer", "num_layers", "decoder_layers"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def load_factory(spec: str) -> Any:
    """The callable named by `file.py:fn` or `pkg.mod:fn`."""
    target, _, attribute = spec.rpartition(":")
    if target.endswith(".py") or "/" in target:
        path = Path(target)
        if path.is_dir():
            raise LayerprofError(f"model file {target!r} is a directory; expected path/to/file.py:factory")
        if not path.is_file():
            raise LayerprofError(f"model file {target!r} does not exist; expected path/to/file.py:factory")
        module_name = f"layerprof_user_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise LayerprofError(f"cannot import {target!r} as Python; expected a .py file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as error:  # noqa: BLE001 - user code may raise anything
            raise LayerprofError(f"importing {target} raised {type(error).__name__}: {error}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as error:
            raise LayerprofError(f"cannot import module {target!r}: {error}") from None
        except Exception as error:  # noqa: BLE001
            raise LayerprofError(f"importing {target} raised {type(error).__name__}: {error}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        defined = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        close = difflib.get_close_matches(attribute, defined, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; it defines {', '.join(defined[:8]) or 'none'}"
        raise LayerprofError(f"{target} has no callable {attribute!r}{hint}")
    return factory


def call_factory(spec: str, overrides: dict[str, Any], device: torch.device) -> tuple[Any, str, dict[str, Any]]:
    """What the factory named by `spec` returns, called with `overrides` (--set, typed by its annotations) with
    its tensors on `device`; how they got there (`construct`); the arguments it was called with."""
    factory = load_factory(spec)
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # noqa: BLE001 - annotations that do not resolve: read values as they look
        hints = {}
    kwargs = typed_overrides(overrides, hints)
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as error:
        missing = [
            name
            for name, parameter in inspect.signature(factory).parameters.items()
            if parameter.default is inspect.Parameter.empty
            and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
            and name not in kwargs
        ]
        if missing:
            needed = " ".join(f"--set {name}=VALUE" for name in missing)
            raise LayerprofError(f"factory {spec} has required arguments without defaults: give {needed}") from None
        raise LayerprofError(f"factory {spec} does not accept --set {', '.join(kwargs)}: {error}") from None
    try:
        result, construction = construct(lambda: factory(**kwargs), device)
    except Exception as error:  # noqa: BLE001
        raise LayerprofError(f"factory {spec} raised {type(error).__name__}: {error}") from None
    return result, construction, kwargs


def _build_user(spec: str, options: ModelOptions, device: torch.device) -> LoadedModel:
    if options.seq_len is not None:
        raise LayerprofError(
            f"--seq-len applies to LitGPT and hf: language models; {spec} takes --input-shape (per sample), or pass "
            "its sequence length to the factory with --set"
        )
    result, construction, kwargs = call_factory(spec, options.overrides, device)
    unwrap: tuple[str, ...]
    if isinstance(result, nn.Module):
        if options.input_shape is None:
            raise LayerprofError(
                f"{spec} returned a bare nn.Module: pass --input-shape (per sample, e.g. 3,32,32), "
                "or return a layerprof.CustomWorkload with make_batch and loss"
            )
        family: Family = "image-classification" if options.num_classes else "tensor-input"
        workload = Workload(
            family=family,
            input_shape=options.input_shape,
            num_classes=options.num_classes,
            default_batch_sizes=IMAGE_BATCH_SIZES,
        )
        model, unwrap = result, ()
    elif all(hasattr(result, attr) for attr in ("model", "make_batch", "loss")):
        given = [
            name
            for name, value in (("--input-shape", options.input_shape), ("--num-classes", options.num_classes))
            if value is not None
        ]
        if given:
            raise LayerprofError(
                f"{spec} returns its own make_batch and loss, which {' and '.join(given)} would not change; leave "
                f"{'them' if len(given) > 1 else 'it'} out, or pass such sizes to the factory with --set"
            )
        custom = result if isinstance(result, CustomWorkload) else _as_custom(result)
        workload = Workload(family="custom", custom=custom, default_batch_sizes=IMAGE_BATCH_SIZES)
        model, unwrap = custom.model, tuple(custom.unwrap)
    else:
        raise LayerprofError(
            f"factory {spec} returned {type(result).__name__}; expected an nn.Module or an object with "
            "model, make_batch(batch_size, device) and loss(model, batch)"
        )
    if not isinstance(model, nn.Module) or not any(True for _ in model.parameters()):
        raise LayerprofError(f"factory {spec} gave no nn.Module with parameters to profile")
    if any(p.device != device for p in model.parameters()):
        model.to(device)
    return LoadedModel(
        spec=spec,
        source="user",
        name=spec,
        model=model,
        workload=workload,
        unwrap=tuple(dict.fromkeys(unwrap + options.unwrap)),
        overrides=kwargs,
        description=f"user factory {spec}",
        construction=construction,
    )


def _as_custom(result: Any) -> CustomWorkload:
    return CustomWorkload(
        model=result.model,
        make_batch=result.make_batch,
        loss=result.loss,
        unwrap=tuple(getattr(result, "unwrap", ())),
        items_per_sample=int(getattr(result, "items_per_sample", 1)),
        item_name=str(getattr(result, "item_name", "samples")),
        optimizer=getattr(result, "optimizer", None),
        scheduler=getattr(result, "scheduler", None),
        step=getattr(result, "step", None),
    )


def model_slug(spec: str) -> str:
    """A file-name-safe form of the MODEL string."""
    stem = spec.rpartition(":")[2] if _is_user_spec(spec) else spec.replace(":", "-")
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in stem).strip("-.") or "model"


def split_model(spec: str, options: ModelOptions | None = None) -> ModelInfo:
    """MODEL's layers in forward order, split without memory of the model's size (`construction` says how)."""
    loaded, layers = split_without_memory(spec, options or ModelOptions())
    return loaded.describe(layers)


def split_without_memory(spec: str, options: ModelOptions) -> tuple[LoadedModel, list[Layer]]:
    """The model on the meta device and its split. Where a forward pass cannot run on the meta device (models
    that ask a tensor for its value, or autocast on the tensors' device), the model is built on fake CPU tensors
    instead, which cost no memory either ("fake"); where shapes depend on values (mixture-of-experts routing),
    on fake tensors with symbolic shapes; failing that on real CPU tensors where the model fits in a quarter of
    the free memory ("cpu"). Only then are the layers in registration order, and `order` says so. Torch's own
    log of an op that failed on fake tensors (a 40-line traceback on stderr) is kept quiet: the failure is ours
    to handle, and `order_reason` names it."""
    with quiet_fake_tensor_log():
        return _split_without_memory(spec, options)


# torch logs (at ERROR, with its traceback) every op that fails on fake tensors, even where the caller handles it;
# and a deprecation per Enum a hub library registers with pytree on import
QUIET_LOGGERS = ("torch._subclasses.fake_tensor", "torch.utils._pytree")


@contextmanager
def quiet_fake_tensor_log() -> Iterator[None]:
    """While the block runs, torch's QUIET_LOGGERS print nothing below CRITICAL (their levels restored after)."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _split_without_memory(spec: str, options: ModelOptions) -> tuple[LoadedModel, list[Layer]]:
    loaded = build_model(spec, options, device="meta")
    try:
        return loaded, loaded.split(trace_required=True)
    except TraceFailed as error:
        failure = str(error)
    parameter_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    for dynamic in (False, True):
        mode, loaded = build_fake(spec, options, torch.float32, dynamic_shapes=dynamic)
        try:
            with mode:
                return loaded, loaded.split(trace_required=True)
        except TraceFailed as error:
            failure = str(error)
    free = _free_memory_bytes()
    if free is not None and parameter_bytes <= free // 4:
        loaded = build_model(spec, options, device="cpu")
        loaded.construction = "cpu-trace"
        return loaded, loaded.split()
    shown = f"{parameter_bytes / 2**30:.1f} GiB of parameters, {(free or 0) / 2**30:.1f} GiB free"
    mode, loaded = build_fake(spec, options, torch.float32)
    with mode, warnings.catch_warnings():
        warnings.simplefilter("ignore", SplitWarning)
        layers = loaded.split()
    loaded.order_reason = f"{failure}; too large to trace on real CPU tensors ({shown})"
    warnings.warn(
        f"could not trace a forward pass of {spec} ({loaded.order_reason}); layers are in registration order, "
        "which may differ from execution order",
        SplitWarning,
        stacklevel=2,
    )
    return loaded, layers


def _free_memory_bytes() -> int | None:
    """Memory the system has free now (Linux), or None where it cannot say."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def build_fake(
    spec: str, options: ModelOptions, dtype: torch.dtype = torch.float32, dynamic_shapes: bool = False
) -> tuple[Any, LoadedModel]:
    """The model with fake CPU tensors (FakeTensorMode): its full size is never allocated. A constructor that
    computes with its tensors (a `.tolist()` of a computed tensor) cannot run on fake tensors; such a model is
    built for real on the CPU once and its parameters and buffers replaced by fakes ("cpu"). With
    `dynamic_shapes`, an op whose output shape depends on values (`nonzero`, as mixture-of-experts routing
    runs) gives a symbolic size instead of failing: enough to trace the order, not to count bytes."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    if dynamic_shapes:
        from torch.fx.experimental.symbolic_shapes import ShapeEnv

        mode = FakeTensorMode(shape_env=ShapeEnv())
    else:
        mode = FakeTensorMode()
    try:
        with mode:
            loaded = build_model(spec, options, device="cpu", dtype=dtype)
        loaded.construction = "fake"
        return mode, loaded
    except LayerprofError:
        raise
    except Exception:  # noqa: BLE001 - DataDependentOutputException and the like
        loaded = build_model(spec, options, device="cpu", dtype=dtype)
    to_fake(loaded.model, mode)
    loaded.construction = "cpu"
    return mode, loaded


def to_fake(model: nn.Module, mode: Any) -> None:
    """Parameters and buffers replaced by fakes of the same shape and dtype (a tensor held twice stays one)."""
    fakes: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None:
                if id(param) not in fakes:
                    fakes[id(param)] = nn.Parameter(mode.from_tensor(param.detach()), requires_grad=param.requires_grad)
                module._parameters[name] = fakes[id(param)]  # type: ignore[assignment]
        for name, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[name] = fakes.setdefault(id(buffer), mode.from_tensor(buffer))
