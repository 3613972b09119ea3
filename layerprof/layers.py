"""Splitting a model into layers (the paper's Algorithm 1, in forward order) and freezing all but the last z.

Algorithm 1 descends into `nn.Sequential` and into classes the user names; everything else is a leaf, and the
leaves that own parameters are the layers. Three things are added here to make it hold on real models:

* the model's own class is always descended into (otherwise every torchvision model is one layer), and so are
  the pure containers `nn.ModuleList` / `nn.ModuleDict`, which have no forward of their own;
* layers are ordered by the forward pass that runs them, found by tracing one forward, not by registration
  order (LitGPT registers `lm_head` first);
* parameters held directly by a descended container (a class token, a positional embedding) join the layer
  that runs next after their first use, so none is left out.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from layerprof.errors import SplitWarning
from layerprof.profile import Layer, total_params, trainable_params

__all__ = ["Layer", "SplitWarning", "split_layers", "freeze_layers", "trainable_params", "total_params"]

CONTAINER_TYPES: tuple[type[nn.Module], ...] = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _unwraps(module: nn.Module, unwrap: Iterable[str | type]) -> bool:
    for item in unwrap:
        if isinstance(item, str):
            if type(module).__name__ == item or type(module).__qualname__ == item:
                return True
        elif isinstance(module, item):
            return True
    return False


def _collect_leaves(
    model: nn.Module, unwrap: Sequence[str | type]
) -> tuple[list[tuple[str, nn.Module]], list[tuple[str, str]]]:
    """Algorithm 1's recursion: leaves in registration order, and parameters held directly by containers."""
    leaves: list[tuple[str, nn.Module]] = []
    container_params: list[tuple[str, str]] = []  # (container name, full parameter name)

    def visit(module: nn.Module, prefix: str, is_root: bool) -> None:
        if is_root or isinstance(module, CONTAINER_TYPES) or _unwraps(module, unwrap):
            for param_name, param in module._parameters.items():
                if param is not None:
                    container_params.append((prefix, f"{prefix}.{param_name}" if prefix else param_name))
            for child_name, child in module.named_children():
                visit(child, f"{prefix}.{child_name}" if prefix else child_name, False)
        else:
            leaves.append((prefix, module))

    visit(model, "", True)
    return leaves, container_params


class _ParameterUseTracker(TorchFunctionMode):
    """Records, for a set of parameters, how many leaves had started when each was first used."""

    def __init__(self, watched: dict[int, str], started: list[str]) -> None:
        super().__init__()
        self.watched = watched
        self.started = started
        self.first_use: dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if len(self.first_use) < len(self.watched):
            for value in tree_flatten((args, kwargs))[0]:
                name = self.watched.get(id(value)) if isinstance(value, torch.Tensor) else None
                if name is not None and name not in self.first_use:
                    self.first_use[name] = len(self.started)
        return func(*args, **kwargs)


def _trace_forward_order(
    model: nn.Module,
    leaves: list[tuple[str, nn.Module]],
    watched_params: dict[int, str],
    run_forward: Callable[[nn.Module], Any],
) -> tuple[list[str], dict[str, int]]:
    """Run one forward; return leaf names in the order they first ran and where watched parameters were used."""
    started: list[str] = []
    handles = []
    for name, module in leaves:

        def hook(_module: nn.Module, _args: Any, _name: str = name) -> None:
            if _name not in started:
                started.append(_name)

        handles.append(module.register_forward_pre_hook(hook))
    tracker = _ParameterUseTracker(watched_params, started)
    try:
        with torch.no_grad(), tracker:
            run_forward(model)
    finally:
        for handle in handles:
            handle.remove()
    return started, tracker.first_use


class TraceFailed(RuntimeError):
    """The traced forward pass failed where the caller asked for the order it gives (`trace_required`)."""


def split_layers(
    model: nn.Module,
    unwrap: Sequence[str | type] = (),
    run_forward: Callable[[nn.Module], Any] | None = None,
    trace_required: bool = False,
) -> list[Layer]:
    """Split `model` into layers in forward-execution order.

    With `trace_required`, a failing traced forward raises TraceFailed instead of falling back.

    `run_forward(model)` runs one forward pass (on the meta device it costs nothing); without it, or when it
    fails, registration order is used and a warning says so.
    """
    leaves, container_params = _collect_leaves(model, unwrap)
    param_leaves = [(name, module) for name, module in leaves if any(True for _ in module.parameters())]
    if not param_leaves:
        raise ValueError("the model has no parameters to train")
    order, first_use = _forward_order(model, param_leaves, container_params, run_forward, trace_required)
    owned = _assign_parameters(dict(param_leaves), order, container_params, first_use)
    layers = _count_parameters(model, order, owned)
    _check_every_parameter_assigned(model, layers)
    if len(layers) < 2:
        warnings.warn(
            f"the model splits into only {len(layers)} layer ({layers[0].name or type(model).__name__}); "
            "pass --unwrap CLASSNAME to descend into a container class",
            SplitWarning,
            stacklevel=2,
        )
    return layers


def _forward_order(
    model: nn.Module,
    param_leaves: list[tuple[str, nn.Module]],
    container_params: list[tuple[str, str]],
    run_forward: Callable[[nn.Module], Any] | None,
    trace_required: bool = False,
) -> tuple[list[str], dict[str, int]]:
    """Leaf names in the order one forward pass runs them, and where container parameters were first used."""
    order = [name for name, _ in param_leaves]
    if run_forward is None:
        return order, {}
    watched = {id(model.get_parameter(full)): full for _, full in container_params}
    try:
        started, first_use = _trace_forward_order(model, param_leaves, watched, run_forward)
    except Exception as error:  # noqa: BLE001 - any failure falls back to registration order
        if trace_required:
            raise TraceFailed(f"{type(error).__name__}: {error}") from error
        warnings.warn(
            f"could not trace a forward pass ({type(error).__name__}: {error}); "
            "layers are in registration order, which may differ from execution order",
            SplitWarning,
            stacklevel=3,
        )
        return order, {}
    never_ran = [name for name in order if name not in started]
    if never_ran:
        warnings.warn(
            f"layers that never ran in the traced forward pass are placed first: {', '.join(never_ran)}",
            SplitWarning,
            stacklevel=3,
        )
    return never_ran + started, {name: position + len(never_ran) for name, position in first_use.items()}


def _assign_parameters(
    module_of: dict[str, nn.Module],
    order: list[str],
    container_params: list[tuple[str, str]],
    first_use: dict[str, int],
) -> dict[str, list[str]]:
    """Each layer's parameter names: its own, plus container parameters adopted by the layer that runs next
    after their first use (never used: the first layer inside the container, else the first layer)."""
    owned = {
        name: [f"{name}.{local}" for local, _ in module_of[name].named_parameters(remove_duplicate=False)]
        for name in order
    }
    for container, full_name in container_params:
        if full_name in first_use:
            owner = order[min(first_use[full_name], len(order) - 1)]
        else:
            inside = [name for name in order if container == "" or name.startswith(f"{container}.")]
            owner = inside[0] if inside else order[0]
        owned[owner].append(full_name)
    return owned


def _count_parameters(model: nn.Module, order: list[str], owned: dict[str, list[str]]) -> list[Layer]:
    """Layers with their parameter counts; a tensor held by several layers (tied weights) counts once per
    layer, and turns trainable with the last of them to run."""
    layers_of_param: dict[int, set[str]] = {}
    for name in order:
        for full_name in owned[name]:
            layers_of_param.setdefault(id(model.get_parameter(full_name)), set()).add(name)
    position_of = {name: index for index, name in enumerate(order)}
    layers = []
    for index, name in enumerate(order):
        seen: set[int] = set()
        count = new = 0
        shared: set[str] = set()
        for full_name in owned[name]:
            param = model.get_parameter(full_name)
            if id(param) in seen:
                continue
            seen.add(id(param))
            count += param.numel()
            holders = layers_of_param[id(param)]
            shared |= holders - {name}
            if all(position_of[holder] <= index for holder in holders):
                new += param.numel()
        layers.append(
            Layer(
                index=index,
                name=name,
                type=type(model.get_submodule(name)).__name__,
                params=count,
                new_trainable_params=new,
                parameter_names=tuple(owned[name]),
                shared_with=tuple(sorted(shared, key=order.index)),
            )
        )
    return layers


def _check_every_parameter_assigned(model: nn.Module, layers: list[Layer]) -> None:
    covered = {id(model.get_parameter(full)) for layer in layers for full in layer.parameter_names}
    missing = [name for name, param in model.named_parameters() if id(param) not in covered]
    if missing:  # a bug in the split, never a user error
        raise AssertionError(f"parameters not assigned to any layer: {', '.join(missing)}")


class FrozenModel:
    """The freezing applied for one trainable-layer count; `remove()` undoes the graph cuts."""

    def __init__(self, model: nn.Module, layers: Sequence[Layer], trainable_layers: int) -> None:
        n = len(layers)
        if not 1 <= trainable_layers <= n:
            raise ValueError(f"trainable_layers must be in 1..{n}, got {trainable_layers}")
        self.trainable_layers = trainable_layers
        self._handles: list[Any] = []
        for param in model.parameters():
            param.requires_grad_(False)
        first_trainable = n - trainable_layers
        for layer in layers[first_trainable:]:
            for full_name in layer.parameter_names:
                model.get_parameter(full_name).requires_grad_(True)
        if trainable_layers == n:
            return
        # Cut the graph at the frozen/trainable boundary. Without tied weights nothing before the boundary
        # requires grad and the cuts cost nothing; with a weight tied into the trainable suffix (an input
        # embedding shared with the output head) they keep the frozen prefix from building a graph whose
        # activations would be held for a backward pass that must not reach it.
        for layer in layers[:first_trainable]:
            if any(model.get_parameter(full).requires_grad for full in layer.parameter_names):
                module = model.get_submodule(layer.name)
                self._handles.append(module.register_forward_hook(_detach_output))
        boundary = model.get_submodule(layers[first_trainable].name)
        self._handles.append(boundary.register_forward_pre_hook(_detach_inputs, with_kwargs=True))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _detach(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return type(value)(*map(_detach, value)) if hasattr(value, "_fields") else tuple(map(_detach, value))
    if isinstance(value, list):
        return [_detach(item) for item in value]
    if isinstance(value, dict):
        return {key: _detach(item) for key, item in value.items()}
    return value


def _detach_output(_module: nn.Module, _args: Any, output: Any) -> Any:
    return _detach(output)


def _detach_inputs(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    return _detach(args), _detach(kwargs)


def freeze_layers(model: nn.Module, layers: Sequence[Layer], trainable_layers: int) -> FrozenModel:
    """Freeze all but the last `trainable_layers` layers and cut the graph at the boundary."""
    return FrozenModel(model, layers, trainable_layers)
