"""Splitting a model into layers (the paper's Algorithm 1, in forward order) and freezing all but the last z.

Algorithm 1 descends into `nn.Sequential` and into classes the user names; everything else is a leaf, and the
leaves that own parameters are the layers. Three things are added here to make it hold on real models:

* the model's own class is always descended into (otherwise every torchvision model is one layer), and so are
  the pure containers `nn.ModuleList` / `nn.ModuleDict`, which have no forward of their own, and torch's own
  stacks of repeated blocks (`nn.TransformerEncoder`, `nn.TransformerDecoder`, `nn.Transformer`);
* a layer that holds most of the parameters in a list of alike blocks (a user's encoder class) is named in a
  warning with the `--unwrap` that splits it;
* layers are ordered by the forward pass that runs them, found by tracing one forward, not by registration
  order (LitGPT registers `lm_head` first);
* parameters held directly by a descended container (a class token, a positional embedding) join the layer
  that runs next after their first use, so none is left out;
* a model with no sub-module that owns parameters (a bare `nn.Linear`) is one layer, the model itself;
* a layer the forward pass runs more than once (a shared block) is counted (`Layer.calls`), and freezing cuts
  the graph only where the frozen prefix ends, at the first call of the first trainable layer, so that every
  trainable layer between two calls of a shared one still receives its gradient.

Where no forward pass can be traced, registration order is used and the split says so (`Split.order`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.hooks import RemovableHandle

from layerprof.errors import LayerprofError, SplitWarning
from layerprof.profile import Layer, total_params, trainable_params

__all__ = [
    "Layer",
    "Split",
    "SplitWarning",
    "split_layers",
    "trace_split",
    "freeze_layers",
    "trainable_params",
    "total_params",
]

CONTAINER_TYPES: tuple[type[nn.Module], ...] = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
# torch's stacks of repeated blocks: their forward only runs the blocks in turn (and a final norm), so each block
# is a layer, as it is when the user's model holds the blocks in a ModuleList
BLOCK_STACK_TYPES: tuple[type[nn.Module], ...] = (nn.TransformerEncoder, nn.TransformerDecoder, nn.Transformer)
# a layer holding at least this share of the model's parameters in at least this many alike blocks is named in
# a warning (two blocks are left alone: a stage of torchvision's MaxViT holds 57% in two)
DOMINANT_LAYER_SHARE = 0.5
DOMINANT_LAYER_BLOCKS = 3


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
        if is_root or isinstance(module, CONTAINER_TYPES + BLOCK_STACK_TYPES) or _unwraps(module, unwrap):
            for param_name, param in module._parameters.items():
                if param is not None:
                    container_params.append((prefix, f"{prefix}.{param_name}" if prefix else param_name))
            for child_name, child in module.named_children():
                visit(child, f"{prefix}.{child_name}" if prefix else child_name, False)
        else:
            leaves.append((prefix, module))

    visit(model, "", True)
    if not any(True for _, module in leaves for _ in module.parameters()) and container_params:
        # nothing below the root owns parameters (a bare nn.Linear): the model itself is the one layer
        return [("", model)], []
    return leaves, container_params


class _ParameterUseTracker(TorchFunctionMode):
    """Records, for a set of parameters, how many leaves had started when each was first used."""

    def __init__(self, watched: dict[int, str], started: list[str]) -> None:
        super().__init__()
        self.watched = watched
        self.started = started
        self.first_use: dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
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
    run_forward: Callable[[nn.Module], object],
) -> tuple[list[str], dict[str, int], dict[str, int]]:
    """Run one forward; return leaf names in the order they first ran, where watched parameters were first used,
    and how many times each leaf ran."""
    started: list[str] = []
    calls: dict[str, int] = {}
    handles = []
    for name, module in leaves:

        def hook(_module: nn.Module, _args: tuple[object, ...], _name: str = name) -> None:
            if _name not in calls:
                started.append(_name)
            calls[_name] = calls.get(_name, 0) + 1

        handles.append(module.register_forward_pre_hook(hook))
    tracker = _ParameterUseTracker(watched_params, started)
    # batch norm traced in eval mode: the same modules run in the same order on the same parameters, but no batch
    # statistics are computed (on meta and fake tensors torch's Python decomposition of them was half of a
    # ResNet's traced forward) and no running statistics updated: the trace leaves the model as it was
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    try:
        for norm in norms:
            norm.train(False)
        with torch.no_grad(), tracker:
            run_forward(model)
    finally:
        for norm in norms:
            norm.train(True)
        for handle in handles:
            handle.remove()
    return started, tracker.first_use, calls


class TraceFailed(RuntimeError):
    """The traced forward pass failed where the caller asked for the order it gives (`trace_required`)."""


SplitOrder = Literal["forward", "registration"]
ORDER_TITLES: dict[str, str] = {
    "forward": "forward order",
    "registration": "registration order (no forward pass could be traced)",
}


@dataclass(frozen=True)
class Split:
    """The layers and the order they are in: `forward` (traced) or `registration` (no forward pass could be
    traced; `reason` says why), which may differ from the order the model runs them."""

    layers: list[Layer]
    order: SplitOrder = "forward"
    reason: str = ""

    @property
    def title(self) -> str:
        """The order in words, as a table's title says it."""
        return ORDER_TITLES[self.order]


def split_layers(
    model: nn.Module,
    unwrap: Sequence[str | type] = (),
    run_forward: Callable[[nn.Module], object] | None = None,
    trace_required: bool = False,
) -> list[Layer]:
    """Split `model` into layers in forward-execution order (`trace_split` also says which order it used).

    With `trace_required`, a failing traced forward raises TraceFailed instead of falling back.

    `run_forward(model)` runs one forward pass (on the meta device it costs nothing); without it, or when it
    fails, registration order is used and a warning says so (`layerprof.split_for_freezing` never falls back).
    """
    return trace_split(model, unwrap, run_forward, trace_required).layers


def trace_split(
    model: nn.Module,
    unwrap: Sequence[str | type] = (),
    run_forward: Callable[[nn.Module], object] | None = None,
    trace_required: bool = False,
) -> Split:
    """`split_layers`, with the order the layers are in."""
    leaves, container_params = _collect_leaves(model, unwrap)
    param_leaves = [(name, module) for name, module in leaves if any(True for _ in module.parameters())]
    if not param_leaves:
        raise ValueError("the model has no parameters to train")
    order, first_use, calls, reason = _forward_order(model, param_leaves, container_params, run_forward, trace_required)
    owned = _assign_parameters(dict(param_leaves), order, container_params, first_use)
    layers = [replace(layer, calls=calls.get(layer.name, 1)) for layer in _count_parameters(model, order, owned)]
    _check_every_parameter_assigned(model, layers)
    hint = unwrap_hint(model, layers)
    if hint is not None:
        warnings.warn(hint, SplitWarning, stacklevel=2)
    if len(layers) < 2:
        remedy = (
            "it has no sub-modules: z=1 trains all of it, so there is no lower fidelity to profile"
            if layers[0].name == ""
            else "pass --unwrap CLASSNAME to descend into a container class"
        )
        warnings.warn(
            f"the model splits into only {len(layers)} layer ({layers[0].name or type(model).__name__}); {remedy}",
            SplitWarning,
            stacklevel=2,
        )
    return Split(layers, "registration" if reason else "forward", reason)


def repeated_blocks(module: nn.Module) -> tuple[str, int] | None:
    """The largest list of alike blocks inside `module` (a ModuleList or Sequential whose children, two or more,
    share one class): that class's name and how many; None where there is none."""
    best: tuple[str, int] | None = None
    for child in module.modules():
        if child is module or not isinstance(child, (nn.ModuleList, nn.Sequential)):
            continue
        kinds = {type(block) for block in child.children()}
        count = len(child)
        alike = count >= 2 and len(kinds) == 1 and any(True for _ in child.parameters())
        if alike and (best is None or count > best[1]):
            best = (next(iter(kinds)).__name__, count)
    return best


def unwrap_hint(model: nn.Module, layers: Sequence[Layer]) -> str | None:
    """A warning for a layer that holds at least half the parameters in three or more alike blocks, with the
    `--unwrap` that splits it into them; None where no layer does (the paper's models, torchvision's, LitGPT's)."""
    total = total_params(layers)
    for layer in layers:
        if not layer.name or total == 0 or layer.params < DOMINANT_LAYER_SHARE * total:
            continue
        module = model.get_submodule(layer.name)
        blocks = repeated_blocks(module)
        if blocks is not None and blocks[1] >= DOMINANT_LAYER_BLOCKS:
            name, count = blocks
            return (
                f"layer {layer.name} ({type(module).__name__}) holds {layer.params / total:.0%} of the parameters in "
                f"{count} alike {name} blocks; --unwrap {type(module).__name__} splits it into them (in Python: "
                f"unwrap=[{type(module).__name__!r}])"
            )
    return None


def _forward_order(
    model: nn.Module,
    param_leaves: list[tuple[str, nn.Module]],
    container_params: list[tuple[str, str]],
    run_forward: Callable[[nn.Module], object] | None,
    trace_required: bool = False,
) -> tuple[list[str], dict[str, int], dict[str, int], str]:
    """Leaf names in the order one forward pass runs them, where container parameters were first used, how many
    times each leaf ran, and (registration order) why no forward pass was traced."""
    order = [name for name, _ in param_leaves]
    if run_forward is None:
        warnings.warn(
            "no forward pass was given; layers are in registration order, which may differ from execution order "
            "(layerprof.split_for_freezing(model, example_inputs) traces it)",
            SplitWarning,
            stacklevel=3,
        )
        return order, {}, {}, "no forward pass was given"
    watched = {id(model.get_parameter(full)): full for _, full in container_params}
    try:
        started, first_use, calls = _trace_forward_order(model, param_leaves, watched, run_forward)
    except LayerprofError:  # the workload's own message (an output it cannot train on): nothing to fall back to
        raise
    except Exception as error:  # noqa: BLE001 - any other failure falls back to registration order
        if trace_required:
            raise TraceFailed(f"{type(error).__name__}: {error}") from error
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        warnings.warn(
            f"could not trace a forward pass ({reason.rstrip(': ')}); layers are in registration order, which may "
            "differ from execution order",
            SplitWarning,
            stacklevel=3,
        )
        return order, {}, {}, reason.rstrip(": ")
    never_ran = [name for name in order if name not in started]
    if never_ran:
        warnings.warn(
            f"layers that never ran in the traced forward pass are placed first: {', '.join(never_ran)}",
            SplitWarning,
            stacklevel=3,
        )
    first_use = {name: position + len(never_ran) for name, position in first_use.items()}
    return never_ran + started, first_use, calls, ""


def _assign_parameters(
    module_of: dict[str, nn.Module],
    order: list[str],
    container_params: list[tuple[str, str]],
    first_use: dict[str, int],
) -> dict[str, list[str]]:
    """Each layer's parameter names: its own, plus container parameters adopted by the layer that runs next
    after their first use (never used: the first layer inside the container, else the first layer)."""
    owned = {
        name: [
            f"{name}.{local}" if name else local
            for local, _ in module_of[name].named_parameters(remove_duplicate=False)
        ]
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
    layer, and turns trainable with the last of them to run. Parameters that do not require grad as the model
    stands (its own code froze them) are named in `frozen_names`: no z trains them."""
    layers_of_param: dict[int, set[str]] = {}
    for name in order:
        for full_name in owned[name]:
            layers_of_param.setdefault(id(model.get_parameter(full_name)), set()).add(name)
    position_of = {name: index for index, name in enumerate(order)}
    layers = []
    for index, name in enumerate(order):
        seen: set[int] = set()
        count = new = frozen_new = 0
        shared: set[str] = set()
        frozen: list[str] = []
        for full_name in owned[name]:
            param = model.get_parameter(full_name)
            if not param.requires_grad:
                frozen.append(full_name)
            if id(param) in seen:
                continue
            seen.add(id(param))
            count += param.numel()
            holders = layers_of_param[id(param)]
            shared |= holders - {name}
            if all(position_of[holder] <= index for holder in holders):
                new += param.numel()
                frozen_new += 0 if param.requires_grad else param.numel()
        layers.append(
            Layer(
                index=index,
                name=name,
                type=type(model.get_submodule(name)).__name__,
                params=count,
                new_trainable_params=new,
                parameter_names=tuple(owned[name]),
                shared_with=tuple(sorted(shared, key=order.index)),
                frozen_names=tuple(frozen),
                frozen_params=frozen_new,
            )
        )
    return layers


def _check_every_parameter_assigned(model: nn.Module, layers: list[Layer]) -> None:
    covered = {id(model.get_parameter(full)) for layer in layers for full in layer.parameter_names}
    missing = [name for name, param in model.named_parameters() if id(param) not in covered]
    if missing:  # a bug in the split, never a user error
        raise AssertionError(f"parameters not assigned to any layer: {', '.join(missing)}")


class _Cut:
    """Where one forward pass stands relative to the frozen/trainable boundary. The model's own forward pre-hook
    starts each pass; the boundary layer's first call in it ends the frozen prefix. Only frozen-layer outputs
    before that are cut: a layer the pass runs again later (a shared block) keeps the graph of the trainable
    layers before it, and a trainable parameter used between the last frozen layer and the boundary (a position
    embedding that joined the boundary layer) keeps its gradient. A workload that never calls the model itself
    (only its parts) gets a cut at every call of a frozen layer."""

    def __init__(self) -> None:
        self.driven = False  # the model's own forward runs (its pre-hook fired)
        self.past_boundary = False

    def start_pass(self, *_: object) -> None:
        self.driven = True
        self.past_boundary = False

    def in_prefix(self) -> bool:
        return not (self.driven and self.past_boundary)

    def end_prefix(self, *_: object) -> None:
        self.past_boundary = True

    def detach_output(self, _module: nn.Module, _args: tuple[object, ...], output: object) -> object:
        # an output that carries no graph is left as it is (and keeps its type: a ModelOutput stays one)
        return _detach(output) if self.in_prefix() and _requires_grad(output) else None


class FrozenModel:
    """The freezing applied for one trainable-layer count; `remove()` undoes the graph cuts (and eval mode).

    With `eval_frozen`, the frozen layers run in eval mode: BatchNorm normalises with its running statistics
    and stops updating them, dropout is off. In train mode (the default, as plain `requires_grad_(False)`
    leaves them) a frozen BatchNorm still updates its running statistics on every step."""

    def __init__(
        self, model: nn.Module, layers: Sequence[Layer], trainable_layers: int, eval_frozen: bool = False
    ) -> None:
        n = len(layers)
        if not 1 <= trainable_layers <= n:
            raise ValueError(f"trainable_layers must be in 1..{n}, got {trainable_layers}")
        self.trainable_layers = trainable_layers
        self.model = model
        self._handles: list[RemovableHandle] = []
        self._training: list[tuple[nn.Module, bool]] = []  # modules put in eval mode, with their mode before
        self._requires_grad = [(param, param.requires_grad) for param in model.parameters()]
        for param in model.parameters():
            param.requires_grad_(False)
        first_trainable = n - trainable_layers
        # the model's own frozen parameters stay frozen: a tensor tied into a trainable layer trains only where
        # no layer holding it names it frozen
        user_frozen = {id(model.get_parameter(name)) for layer in layers for name in layer.frozen_names}
        for layer in layers[first_trainable:]:
            for full_name in layer.parameter_names:
                param = model.get_parameter(full_name)
                if id(param) not in user_frozen:
                    param.requires_grad_(True)
        if trainable_layers == n:
            return
        if eval_frozen:
            for layer in layers[:first_trainable]:
                for module in model.get_submodule(layer.name).modules():
                    self._training.append((module, module.training))
                    module.training = False
        # Cut the graph at the frozen layers' outputs. Without tied weights nothing they produce requires grad
        # and the cuts are left alone; with a weight tied into the trainable suffix (an input embedding shared
        # with the output head) they keep the frozen prefix from building a graph whose activations would be held
        # for a backward pass that must not reach it. The boundary layer's inputs are not cut: a trainable
        # parameter used just before it (ViT's class token and position embedding join its first encoder block)
        # keeps its gradient.
        cut = _Cut()
        self._handles.append(model.register_forward_pre_hook(cut.start_pass))
        for layer in layers[:first_trainable]:
            module = model.get_submodule(layer.name)
            self._handles.append(module.register_forward_hook(cut.detach_output))
        boundary = model.get_submodule(layers[first_trainable].name)
        self._handles.append(boundary.register_forward_pre_hook(cut.end_prefix))

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters that train at this z (what to give the optimizer), each tensor once."""
        return [param for param in self.model.parameters() if param.requires_grad]

    def __enter__(self) -> FrozenModel:
        return self

    def __exit__(self, *_: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Undo the freezing: the graph cuts, eval mode, and every parameter's `requires_grad` as it was."""
        for param, requires_grad in self._requires_grad:
            param.requires_grad_(requires_grad)
        self._requires_grad.clear()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for module, training in self._training:
            module.training = training
        self._training.clear()


def batchnorm_layers(model: nn.Module, layers: Sequence[Layer]) -> list[str]:
    """Layers holding a normalisation with running statistics that train mode updates (BatchNorm and the like):
    frozen, they still change unless run in eval mode."""
    found = []
    for layer in layers:
        for module in model.get_submodule(layer.name).modules():
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
                found.append(layer.name)
                break
    return found


def _requires_grad(value: object) -> bool:
    if isinstance(value, torch.Tensor):
        return value.requires_grad
    if isinstance(value, (tuple, list)):
        return any(_requires_grad(item) for item in value)
    if isinstance(value, dict):
        return any(_requires_grad(item) for item in value.values())
    return False


def _detach(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        items = [_detach(item) for item in value]
        named: Callable[..., object] = type(value)  # a namedtuple (ModelOutput-like) takes its fields one by one
        return named(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [_detach(item) for item in value]
    if isinstance(value, dict):
        return {key: _detach(item) for key, item in value.items()}
    return value


def freeze_layers(
    model: nn.Module, layers: Sequence[Layer], trainable_layers: int, eval_frozen: bool = False
) -> FrozenModel:
    """Freeze all but the last `trainable_layers` layers and cut the graph at the boundary; with `eval_frozen`,
    run the frozen layers in eval mode (BatchNorm keeps its running statistics, dropout is off). Parameters the
    model's own code froze (`Layer.frozen_names`) stay frozen at every z."""
    return FrozenModel(model, layers, trainable_layers, eval_frozen)
