"""Turning a MODEL string into a model and its workload, and splitting it without the model's memory.

Accepted forms (`layerprof.sources.registry` holds one entry per source and resolves a MODEL string):

* a preset of the paper (`paper-resnet18-cifar100`, `paper-gpt-14m`, `paper-gpt-600m`);
* `path/to/file.py:factory` or `package.module:factory` — a user factory;
* a torchvision classification model (`resnet18`, `vit_b_16`, ...) or `torchvision:NAME`;
* a LitGPT config name (`pythia-14m`, ...) or `litgpt:NAME`;
* `timm:NAME` and `hf:MODEL_TYPE` / `hf:path/to/config.json` (layerprof.sources.hub_models).

Each source's builder is in `layerprof.sources.builders`. Weights are never downloaded: every model starts from
random init, as in the paper.
"""

from __future__ import annotations

import difflib
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from layerprof.errors import LayerprofError, SplitWarning
from layerprof.profile import Layer, ModelInfo
from layerprof.sources.builders import LoadedModel
from layerprof.sources.layers import TraceFailed
from layerprof.sources.names import ModelOptions
from layerprof.sources.registry import is_user_spec, resolve

if TYPE_CHECKING:
    from torch._subclasses.fake_tensor import FakeTensorMode


def build_model(
    spec: str,
    options: ModelOptions | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """Build MODEL with random weights on `device` ("meta" builds without allocating memory): its source's
    builder (`registry.Source.builder`), then the checks a build can make."""
    options = options or ModelOptions()
    source, name = resolve(spec)
    loaded = source.builder()(spec, name, options, torch.device(device))
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


def model_slug(spec: str) -> str:
    """A file-name-safe form of the MODEL string."""
    stem = spec.rpartition(":")[2] if is_user_spec(spec) else spec.replace(":", "-")
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
) -> tuple[FakeTensorMode, LoadedModel]:
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


def to_fake(model: nn.Module, mode: FakeTensorMode) -> None:
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
