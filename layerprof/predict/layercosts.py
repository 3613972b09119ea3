"""Per-layer costs of a training step, in forward order: why the staircase steps where it does.

One full-training step (every layer trains) runs on fake tensors, as an estimate's cells do, with every operation
attributed to the layer that ran it: forward operations by the layer's forward hooks, backward ones by a hook on
each layer's output that runs when the gradient reaches that layer (autograd walks the layers top down). A
backward matrix product that takes one of the layer's parameters passes the gradient down (input-gradient FLOPs);
one that does not makes a parameter's gradient (weight-gradient FLOPs); a convolution's backward is split by its
output mask. Tensors a layer's forward saves for backward are counted with autograd's
saved-tensor hooks. What a layer adds when it trains is its parameters' gradients and optimizer state, read after
the step.

The columns add up to the full-training cell of `estimate` (FLOPs exactly; operations outside every layer, such
as the loss, have a row of their own). Freezing the bottom n - z layers removes their weight-gradient FLOPs and
trainable bytes, the input-gradient FLOPs of those layers and of the lowest trainable one, and their saved
activations — which is what the per-z cells measure.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch.utils._pytree import tree_flatten

from layerprof.measure.instruments import OpClass, OpRecorder, Phase, detached, plain_tensors
from layerprof.parsing import check_batch_size
from layerprof.profile import RecipeSettings, SweepSettings
from layerprof.sources.layers import Layer
from layerprof.sources.models import ModelOptions

if TYPE_CHECKING:
    from layerprof.measure.cells import Cell

OUTSIDE = -1  # the index of the row for operations outside every layer (the loss, a model's glue code)


@dataclass
class LayerCost:
    """One layer's share of a full-training step."""

    index: int  # forward order; OUTSIDE for the operations of no layer
    name: str
    type: str
    params: int
    trainable_bytes: int = 0  # gradients and optimizer state its parameters add when it trains (the two below)
    trainable_params: int = 0  # what trains when it trains: its parameters, or under LoRA its adapters'
    adapter_params: int = 0  # --adapter lora: the adapters' parameters it holds (0 without adapters)
    gradient_bytes: int = 0  # the gradients of its trainable parameters
    optimizer_state_bytes: int = 0  # their optimizer state (an 8-bit state's codes, scales and code map)
    forward_flops: int = 0
    backward_input_flops: int = 0  # the gradient it passes to the layer below (skipped when it is the lowest)
    backward_weight_flops: int = 0  # its parameters' gradients
    backward_internal_flops: int = 0  # activation gradients inside the layer, needed whenever it trains
    saved_activation_bytes: int = 0  # what its forward keeps for backward when it trains
    output_bytes: int = 0
    recompute_flops: int = 0  # --checkpointing: its forward run again in backward


@dataclass
class LayerCostTable:
    """What each layer costs in one full-training step: FLOPs, saved activations, parameters, output."""

    model: str
    batch_size: int
    precision: str
    target: str
    layers: list[LayerCost]
    recipe: str = ""  # the optimizer and, beyond plain training, the recipe (SweepSettings.recipe_text)
    checkpointing: bool = False  # --checkpointing trainable: recompute_flops counts each layer's forward again

    def to_dict(self) -> dict[str, object]:
        """The table as plain data, with its schema's name and version."""
        return {"schema": "layerprof.layer-costs/1", **asdict(self)}

    def csv(self) -> str:
        """One row per layer (and the row outside every layer), a column per `LayerCost` field."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(LayerCost)], lineterminator="\n")
        writer.writeheader()
        for layer in self.layers:
            writer.writerow(asdict(layer))
        return buffer.getvalue()

    def save(self, path: Path) -> None:
        """Write the table as JSON at `path` and as CSV beside it."""
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        path.with_suffix(".csv").write_text(self.csv())


class LayerAttribution(OpRecorder):
    """An operation recorder that also knows which layer each operation belongs to."""

    def __init__(self, modules: Sequence[torch.nn.Module], costs: list[LayerCost], params: set[int]) -> None:
        super().__init__()
        self.costs = costs
        self.outside = costs[-1]
        self.forward_layer: list[int] = []
        self.backward_layer = OUTSIDE
        self.parameter_storages = params
        self.saved: set[int] = set()
        self.layer_parameters = [{id(p.untyped_storage()) for p in module.parameters()} for module in modules]
        self._casts: list[torch.Tensor] = []  # parameters' casts (`_follow_cast`), kept so no storage id is reused
        self._handles = []
        for index, module in enumerate(modules):
            self._handles.append(module.register_forward_pre_hook(self._enter(index)))
            self._handles.append(module.register_forward_hook(self._leave(index)))

    def cost(self, index: int) -> LayerCost:
        """The row of layer `index`; OUTSIDE's for operations of no layer."""
        return self.outside if index == OUTSIDE else self.costs[index]

    def _enter(self, index: int) -> Callable[[torch.nn.Module, tuple[object, ...]], None]:
        def hook(_module: torch.nn.Module, _args: tuple[object, ...]) -> None:
            self.forward_layer.append(index)

        return hook

    def _leave(self, index: int) -> Callable[[torch.nn.Module, tuple[object, ...], object], None]:
        def hook(_module: torch.nn.Module, _args: tuple[object, ...], output: object) -> None:
            self.forward_layer.pop()
            self.costs[index].output_bytes += sum(
                t.numel() * t.element_size() for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)
            )
            for value in tree_flatten(output)[0]:
                if isinstance(value, torch.Tensor) and value.requires_grad and self.phase is Phase.FORWARD:
                    value.register_hook(lambda grad, index=index: self._reached(index))

        return hook

    def _reached(self, index: int) -> None:
        """The gradient has reached this layer's output: the backward operations from here on are its own."""
        self.backward_layer = index

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        """Autograd saves `tensor` for backward: the current layer keeps it (parameters excepted, once each)."""
        key = id(tensor.untyped_storage())
        if key not in self.parameter_storages and key not in self.saved:
            self.saved.add(key)
            layer = self.forward_layer[-1] if self.forward_layer else OUTSIDE
            self.cost(layer).saved_activation_bytes += tensor.untyped_storage().nbytes()
        return tensor

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        before = len(self.ops)
        out = super().__torch_dispatch__(func, types, args, kwargs)
        if self.phase is Phase.FORWARD and func._overloadpacket is torch.ops.aten._to_copy and args:
            self._follow_cast(args[0], out)
        if len(self.ops) == before:
            return out
        op = self.ops[-1]
        if self.phase is Phase.FORWARD:
            self.cost(self.forward_layer[-1] if self.forward_layer else OUTSIDE).forward_flops += op.flops
        elif op.phase is Phase.RECOMPUTE:  # a checkpointed layer's forward again, for the layer backward is in
            self.cost(self.backward_layer).recompute_flops += op.flops
        elif self.phase is Phase.BACKWARD and op.flops:
            cost = self.cost(self.backward_layer)
            weight = self._weight_flops(op.name, func, args, kwargs or {}, out)
            cost.backward_weight_flops += weight
            cost.backward_input_flops += op.flops - weight
        return out

    def _follow_cast(self, source: object, cast: object) -> None:
        """A parameter cast to another dtype (autocast's lower-precision copy of a weight) stands for it: a backward
        product taking the copy computes the gradient passed down (grad_out @ W), not the weight's."""
        if not isinstance(source, torch.Tensor) or not isinstance(cast, torch.Tensor):
            return
        key = id(source.untyped_storage())
        for owned in self.layer_parameters:
            if key in owned:
                owned.add(id(cast.untyped_storage()))
                self._casts.append(cast)

    def _weight_flops(
        self, name: str, func: torch._ops.OpOverload, args: Sequence[object], kwargs: dict[str, object], out: object
    ) -> int:
        """The part of a backward operation's FLOPs that makes parameters' gradients."""
        if name == "convolution_backward":
            formula = self._formulas[func._overloadpacket]
            mask = list(cast(Sequence[bool], args[-1]))  # convolution_backward's output_mask
            weight_only = [False, mask[1], False]
            return int(formula(*args[:-1], weight_only, **kwargs, out_val=out))
        if self.ops[-1].op_class is not OpClass.GEMM:
            return 0
        params = self.layer_parameters[self.backward_layer] if self.backward_layer != OUTSIDE else set()
        tensors = [a for a in tree_flatten(args)[0] if isinstance(a, torch.Tensor)]
        takes_parameter = any(id(t.untyped_storage()) in params for t in tensors)
        return 0 if takes_parameter else self.ops[-1].flops

    def remove(self) -> None:
        """Take the layers' hooks off the model."""
        for handle in self._handles:
            handle.remove()
        self._casts.clear()


def layer_costs(
    spec: str,
    options: ModelOptions,
    batch_size: int,
    precision: str = "32-true",
    target: str = "cuda",
    recipe: RecipeSettings | None = None,
) -> LayerCostTable:
    """The per-layer costs of MODEL's full-training step at `batch_size`, on fake tensors (no memory, no GPU), under
    `recipe` (SweepSettings fields: the optimizer, adapters, checkpointing) where given."""
    from layerprof.measure.cells import CellContext, prepared_cell
    from layerprof.measure.optimizers import optimizer_spec
    from layerprof.predict.estimate import ESTIMATE_DEVICE, build_fake_model, prime_optimizer, refuse_compile

    check_batch_size(batch_size)
    mode, loaded = build_fake_model(spec, options, precision)
    settings = SweepSettings((batch_size,), (), precision=precision, mode="estimate", target=target, **(recipe or {}))
    refuse_compile(settings)
    optimizer = optimizer_spec(settings.optimizer)
    with mode:
        layers = loaded.split()
        on_cuda = target == "cuda"
        context = CellContext(loaded, layers, settings, ESTIMATE_DEVICE)
        with prepared_cell(
            context, batch_size, len(layers), foreach=on_cuda, cuda_autocast_on_cpu=on_cuda, with_scaler=False
        ) as cell:
            assert cell.optimizer is not None  # a cell that trains every layer has an optimizer
            # the layers as the recipe left them: a Linear layer under LoRA is PEFT's wrapper around it now
            modules = dict(loaded.model.named_modules())
            prime_optimizer(cell.optimizer, cell.params, None, optimizer)  # steady state: its state exists
            cell.optimizer_steps = optimizer.traced
            costs = [LayerCost(layer.index, layer.name, layer.type, layer.params) for layer in layers]
            costs.append(LayerCost(OUTSIDE, "(outside every layer: loss, glue)", "", 0))
            parameters = {id(p.untyped_storage()) for p in loaded.model.parameters()}
            attribution = LayerAttribution([modules[layer.name] for layer in layers], costs, parameters)
            try:
                with attribution, torch.autograd.graph.saved_tensors_hooks(attribution.pack, lambda t: t):
                    loss = cell.forward()
                    attribution.phase = Phase.BACKWARD
                    cell.backward(loss)
                    del loss
                    attribution.phase = Phase.OPTIMIZER
                    _trainable_bytes(layers, loaded.model, cell.optimizer, costs)
                    cell.update()
            finally:
                attribution.remove()
            cell.optimizer.zero_grad(set_to_none=True)
            own = _own_backward_flops(cell, [modules[layer.name] for layer in layers])
    for cost, kept in zip(costs, own, strict=False):
        # everything but the weights' gradients and what is passed down stays inside the layer
        backward = cost.backward_input_flops + cost.backward_weight_flops
        cost.backward_input_flops = backward - kept
        cost.backward_internal_flops = kept - cost.backward_weight_flops
    recipe_text = ", ".join(filter(None, [settings.optimizer, settings.recipe_text]))
    checkpointing = settings.checkpointing != "none"
    return LayerCostTable(spec, batch_size, precision, target, costs, recipe_text, checkpointing)


def _own_backward_flops(cell: Cell, modules: Sequence[torch.nn.Module]) -> list[int]:
    """Each layer's backward FLOPs without the gradient it passes down: a forward with every layer's inputs
    detached (so that no layer asks for its input's gradient), then each layer's backward on its own."""
    outputs: list[list[torch.Tensor]] = [[] for _ in modules]

    def keep(index: int, output: object) -> object:
        """Record the layer's outputs and hand the model clones, so that an in-place operation after the layer (a
        residual `out += identity`) cannot graft other layers' graphs onto them."""
        from torch.utils._pytree import tree_map

        def swap(value: object) -> object:
            if isinstance(value, torch.Tensor) and value.requires_grad:
                outputs[index].append(value)
                return value.clone()
            return value

        return tree_map(swap, output)

    handles = []
    for index, module in enumerate(modules):
        handles.append(
            module.register_forward_pre_hook(
                lambda _m, args, kwargs: (detached(args), detached(kwargs)), with_kwargs=True
            )
        )
        handles.append(module.register_forward_hook(lambda _m, _args, output, index=index: keep(index, output)))
    try:
        cell.forward()
    finally:
        for handle in handles:
            handle.remove()
    own = []
    for tensors in outputs:
        recorder = OpRecorder()
        recorder.phase = Phase.BACKWARD
        if tensors:
            with recorder:
                torch.autograd.backward(tensors, [torch.ones_like(t) for t in tensors])
        own.append(sum(op.flops for op in recorder.ops if op.phase is not Phase.RECOMPUTE))
    return own


def _trainable_bytes(
    layers: Sequence[Layer], model: torch.nn.Module, optimizer: torch.optim.Optimizer, costs: list[LayerCost]
) -> None:
    """Each parameter's gradient and optimizer state, given to the last layer holding it (the first to train)."""
    named = dict(model.named_parameters(remove_duplicate=False))
    owner: dict[int, int] = {}
    for layer in layers:
        for name in layer.parameter_names:
            if name in named:
                owner[id(named[name])] = layer.index
    adapters: set[int] = set()
    for name, param in named.items():  # adapters (LoRA): the layer whose module holds them
        if id(param) not in owner and param.requires_grad:
            holders = [layer for layer in layers if name.startswith(f"{layer.name}.") or not layer.name]
            if holders:
                owner[id(param)] = max(holders, key=lambda layer: len(layer.name)).index
                adapters.add(id(param))
    for param in {id(p): p for p in named.values()}.values():
        if id(param) not in owner:
            continue
        cost = costs[owner[id(param)]]
        state = sum(t.untyped_storage().nbytes() for t in optimizer_state_tensors_of(optimizer, param))
        grad = param.grad.numel() * param.grad.element_size() if param.grad is not None else 0
        cost.gradient_bytes += grad
        cost.optimizer_state_bytes += state
        cost.trainable_bytes += grad + state
        if param.requires_grad:
            cost.trainable_params += param.numel()
        if id(param) in adapters:
            cost.adapter_params += param.numel()


def optimizer_state_tensors_of(optimizer: torch.optim.Optimizer, param: torch.nn.Parameter) -> list[torch.Tensor]:
    """The optimizer's state tensors of one parameter (Adam's moments, momentum buffers; an 8-bit state's codes,
    scales and code map)."""
    state = optimizer.state.get(param, {}).values()
    return [plain for v in state if isinstance(v, torch.Tensor) for plain in plain_tensors(v)]
