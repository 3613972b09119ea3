"""One builder per model source: a MODEL string's resolved name to a `LoadedModel` (the module, its workload,
the classes to split inside), with random weights on any device, the meta device included.

`layerprof.sources.registry` names each source's builder here (`Source.builder`); `build_model`
(`layerprof.sources.models`) resolves a MODEL string and calls it. A builder takes `(spec, name, options,
device)`: the MODEL string as given, the name its source resolved, the command line's `ModelOptions`, the device.
Weights are never downloaded: every model starts from random init, as in the paper.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import sys
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import torch
from torch import nn

from layerprof.errors import LayerprofError, ModelWarning
from layerprof.parsing import coerce
from layerprof.profile import Family, Layer, ModelInfo, ModelSource
from layerprof.sources.layers import Split, total_params, trace_split
from layerprof.sources.names import PRESETS, LitgptPreset, ModelOptions
from layerprof.sources.workloads import CustomWorkload, Workload, WorkloadLike

if TYPE_CHECKING:
    from collections.abc import Sequence
    from dataclasses import Field

    from transformers import PretrainedConfig

T = TypeVar("T")

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
    overrides: dict[str, object]
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


# ---------------------------------------------------------------- LitGPT without Lightning


class LitgptConfig(Protocol):
    """What layerprof reads of a `litgpt.Config` (LitGPT ships no type information)."""

    block_size: int
    padded_vocab_size: int


class LitgptConfigClass(Protocol):
    """`litgpt.Config` itself: a dataclass, built from its fields or from a config name."""

    __dataclass_fields__: ClassVar[dict[str, Field[object]]]

    def __call__(self, **fields: object) -> LitgptConfig:
        """A config from its fields."""
        ...

    def from_name(self, name: str, **overrides: object) -> LitgptConfig:
        """The config named `name`, with `overrides`."""
        ...


def litgpt_classes() -> tuple[LitgptConfigClass, Callable[[LitgptConfig], nn.Module]]:
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

    def finish(attribute: str) -> object:  # the rest of the package, on first use
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        del package.__getattr__
        loader.exec_module(package)
        return getattr(package, attribute)

    package.__getattr__ = finish  # type: ignore[method-assign]
    sys.modules["litgpt"] = package


def _deferred_module(name: str, functions: tuple[str, ...]) -> ModuleType:
    """A stand-in for module `name` whose `functions` import the real module when first called."""
    stand_in = ModuleType(name)

    def real() -> ModuleType:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
        return importlib.import_module(name)

    def rest(attribute: str) -> object:  # the import system's own questions (__path__, ...) load nothing
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return getattr(real(), attribute)

    def calling(function: str) -> Callable[..., object]:
        return lambda *args, **kwargs: getattr(real(), function)(*args, **kwargs)

    for function in functions:
        setattr(stand_in, function, calling(function))
    stand_in.__getattr__ = rest  # type: ignore[method-assign]
    return stand_in


def typed_overrides(overrides: Mapping[str, object], hints: Mapping[str, object]) -> dict[str, object]:
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


def construct(build: Callable[[], T], device: torch.device) -> tuple[T, str]:
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


def _moved(built: T, device: torch.device) -> T:
    module = built if isinstance(built, nn.Module) else getattr(built, "model", None)
    if isinstance(module, nn.Module):
        module.to(device)
    return built


# ---------------------------------------------------------------- the builders, one per source


def build_preset(spec: str, name: str, options: ModelOptions, device: torch.device) -> LoadedModel:
    """A preset of the paper: a torchvision or LitGPT model in the paper's shapes."""
    preset = PRESETS[name]
    if preset["source"] == "torchvision":
        loaded = _torchvision(
            spec,
            preset["name"],
            options,
            options.num_classes or preset["num_classes"],
            options.input_shape or preset["input_shape"],
            device,
        )
    else:
        loaded = _litgpt(spec, name, preset, options, device)
    loaded.source = "preset"
    loaded.description = preset["description"]
    return loaded


def build_torchvision(spec: str, name: str, options: ModelOptions, device: torch.device) -> LoadedModel:
    """A torchvision classifier."""
    return _torchvision(spec, name, options, options.num_classes, options.input_shape, device)


def _torchvision(
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


def build_litgpt(spec: str, name: str, options: ModelOptions, device: torch.device) -> LoadedModel:
    """A LitGPT model from its config name."""
    return _litgpt(spec, name, None, options, device)


def _litgpt(
    spec: str, name: str, preset: LitgptPreset | None, options: ModelOptions, device: torch.device
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
    model.max_seq_length = seq_len  # type: ignore[assignment]  # a property of GPT; nn.Module types tensors and modules
    if preset is not None and preset["tie_embeddings"]:
        model.get_submodule("lm_head").weight = model.get_submodule("transformer.wte").weight
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


def build_timm(spec: str, name: str, options: ModelOptions, device: torch.device) -> LoadedModel:
    """A timm model (`timm:NAME`), its stage classes split inside."""
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


def build_hf(spec: str, name: str, options: ModelOptions, device: torch.device) -> LoadedModel:
    """A Hugging Face causal LM (`hf:MODEL_TYPE` or `hf:path/to/config.json`), each block a layer."""
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


def _block_count(config: PretrainedConfig) -> int | None:
    """The number of blocks a Hugging Face config declares, under the names transformers uses."""
    for key in ("num_hidden_layers", "n_layer", "num_layers", "decoder_layers"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def load_factory(spec: str) -> Callable[..., Any]:
    """The callable named by `file.py:fn` or `pkg.mod:fn`: the user's code, taking and giving whatever it does."""
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


def call_factory(
    spec: str, overrides: Mapping[str, object], device: torch.device
) -> tuple[Any, str, dict[str, object]]:
    """What the factory named by `spec` returns (whatever the user's code gives), called with `overrides` (--set,
    typed by its annotations) with its tensors on `device`; how they got there (`construct`); the arguments it was
    called with."""
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


def build_user(spec: str, name: str, options: ModelOptions, device: torch.device) -> LoadedModel:
    """What a user factory (`path/to/file.py:fn`, `package.module:fn`) returns: a module, or a `CustomWorkload`
    (or any object with its `model`, `make_batch` and `loss`)."""
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
    elif isinstance(result, WorkloadLike):
        given = [
            option
            for option, value in (("--input-shape", options.input_shape), ("--num-classes", options.num_classes))
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


def _as_custom(result: WorkloadLike) -> CustomWorkload:
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
