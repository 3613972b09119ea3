"""The training recipe applied to a frozen model: activation checkpointing of the trainable layers, and LoRA
adapters (PEFT) in their target modules.

LoRA comes from PEFT for every source, LitGPT included: PEFT places adapters in named modules, so that they can
sit in the last z layers only (LitGPT's own `litgpt.lora` sets one rank for the whole model through its Config,
and builds another model class), and LitGPT's projections are plain `nn.Linear`, which PEFT adapts as it does any.
The default targets are the family's: every linear projection below the output head for a causal LM (attention
and MLP), every Linear and Conv layer elsewhere; `--adapter-targets` names others.

Both are applied per cell after the freezing (`layerprof.sources.layers.freeze_layers`) and undone after it, so
that one model serves every z. Checkpointing wraps each trainable layer's forward in
`torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`: the frozen prefix builds no graph and needs none,
and non-reentrant checkpointing gives every trainable parameter its gradient even though the first trainable
layer's input does not require grad (reentrant checkpointing gives that layer none: transformers#21381).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from torch import nn

from layerprof.errors import LayerprofError
from layerprof.profile import Layer, SweepSettings

if TYPE_CHECKING:
    from torch.overrides import TorchFunctionMode

    from layerprof.sources.builders import LoadedModel

_recomputing = [0]  # > 0 while checkpointed forwards run again inside backward


def recomputing() -> bool:
    """Whether a checkpointed layer's forward is running again inside backward (its FLOPs are recompute FLOPs)."""
    return _recomputing[0] > 0


@contextlib.contextmanager
def _recompute_region() -> Iterator[None]:
    _recomputing[0] += 1
    try:
        yield
    finally:
        _recomputing[0] -= 1


def _contexts() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    """checkpoint's `context_fn`: nothing around the first forward; around the second, the recompute region and
    the torch function modes the first ran under. torch restores its own autocast state for the recompute, not a
    function mode's: an estimate for CUDA applies CUDA's autocast rules as one (`measure.amp.CudaAutocastRules`,
    active in forward only), and without it the recompute ran in float32 where the forward had run in bfloat16
    (CheckpointError: recomputed values have different metadata)."""
    from torch.overrides import _get_current_function_mode_stack

    return contextlib.nullcontext(), _recompute_under(list(_get_current_function_mode_stack()))


@contextlib.contextmanager
def _recompute_under(modes: list[TorchFunctionMode]) -> Iterator[None]:
    """The recompute region, inside those of `modes` that are not active already."""
    from torch.overrides import _get_current_function_mode_stack

    active = {id(mode) for mode in _get_current_function_mode_stack()}
    with contextlib.ExitStack() as stack:
        for mode in modes:
            if id(mode) not in active:
                stack.enter_context(mode)
        with _recompute_region():
            yield


class Checkpointed:
    """Each trainable layer's forward recomputed in backward (non-reentrant); `remove()` restores the forwards."""

    # What users of reentrant checkpointing must add by hand (transformers' enable_input_require_grads); a test
    # plants True here to show that the frozen prefix then takes the first trainable layer's gradients away.
    use_reentrant = False

    def __init__(self, model: nn.Module, layers: Sequence[Layer], trainable_layers: int) -> None:
        self._wrapped: list[nn.Module] = []
        for layer in layers[len(layers) - trainable_layers :]:
            module = model.get_submodule(layer.name)
            if "forward" in module.__dict__:  # already wrapped (a layer listed twice cannot be; be safe)
                continue
            module.forward = self._wrap(module.forward)
            self._wrapped.append(module)

    def _wrap(self, forward: Callable[..., object]) -> Callable[..., object]:
        from torch.utils.checkpoint import checkpoint

        use_reentrant = self.use_reentrant

        run: Callable[..., object] = checkpoint  # the layer's own arguments, passed through

        def checkpointed(*args: object, **kwargs: object) -> object:
            if use_reentrant:
                return run(forward, *args, use_reentrant=True, **kwargs)
            return run(forward, *args, use_reentrant=False, context_fn=_contexts, **kwargs)

        return checkpointed

    def remove(self) -> None:
        """Every wrapped layer runs its own forward again."""
        for module in self._wrapped:
            del module.forward
        self._wrapped.clear()


def checkpoint_layers(model: nn.Module, layers: Sequence[Layer], trainable_layers: int) -> Checkpointed:
    """Checkpoint the last `trainable_layers` layers of `model` (`Checkpointed`)."""
    return Checkpointed(model, layers, trainable_layers)


class Removable(Protocol):
    """A change to a model that can be undone (`Checkpointed`, `LoraAdapters`)."""

    def remove(self) -> None:
        """Undo it."""
        ...


class AppliedRecipe:
    """What one cell's recipe changed in the model (checkpointing, adapters); `remove()` undoes it all."""

    def __init__(self, *parts: Removable | None) -> None:
        self.parts: list[Removable] = [part for part in parts if part is not None]

    def remove(self) -> None:
        """Undo the parts, the last applied first."""
        for part in reversed(self.parts):
            part.remove()
        self.parts.clear()


def _adaptable_types() -> tuple[type[nn.Module], ...]:
    """The module types PEFT's LoRA adapts here: Linear and Conv1d/2d, and transformers' GPT-2 Conv1D."""
    types: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)
    try:
        from transformers.pytorch_utils import Conv1D

        types += (Conv1D,)
    except ImportError:  # transformers is optional
        pass
    return types


def _out_features(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    weight = getattr(module, "weight", None)
    return int(weight.shape[-1]) if weight is not None and type(module).__name__ == "Conv1D" else 0


def lora_targets(
    model: nn.Module,
    layers: Sequence[Layer],
    trainable_layers: int,
    settings: SweepSettings,
    vocab_size: int | None = None,
) -> list[str]:
    """The full names of the modules that get adapters: in the last z layers (`settings.adapter_layers`
    "trainable") or in every layer ("all"); `settings.adapter_targets` (names or name suffixes), or the family's
    default: every adaptable module, less a causal LM's output head (a projection onto the vocabulary) and
    grouped convolutions."""
    chosen = layers if settings.adapter_layers == "all" else layers[len(layers) - trainable_layers :]
    adaptable = _adaptable_types()
    names = []
    for layer in chosen:
        root = model.get_submodule(layer.name)
        for local, module in root.named_modules():
            name = f"{layer.name}.{local}".strip(".") if local else layer.name
            if not isinstance(module, adaptable) or "lora_" in name or "base_layer" in name:
                continue
            if settings.adapter_targets:
                if not any(name == t or name.endswith(f".{t}") for t in settings.adapter_targets):
                    continue
            # the default leaves out an LM's output head and grouped/depthwise convolutions (PEFT needs the rank
            # divisible by the groups)
            elif (vocab_size and _out_features(module) >= vocab_size) or getattr(module, "groups", 1) > 1:
                continue
            names.append(name)
    return names


def _materialise_adapters(model: nn.Module) -> None:
    """Every LoRA adapter still on the meta device made on its base layer's device, in its dtype, and initialised
    as PEFT initialises it (A Kaiming-uniform, B zeros)."""
    import torch
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        weight = module.get_base_layer().weight
        assert isinstance(weight, torch.Tensor)  # Linear, Conv and Conv1D hold their weight as a tensor
        for adapter_name in module.active_adapters:
            for adapters in (module.lora_A, module.lora_B):
                for sub in adapters[adapter_name].modules():
                    for key, param in list(sub._parameters.items()):
                        if param is not None and param.device.type == "meta":
                            made = torch.empty(param.shape, dtype=weight.dtype, device=weight.device)
                            sub._parameters[key] = nn.Parameter(made, requires_grad=param.requires_grad)
            module.reset_lora_parameters(adapter_name, True)


class LoraAdapters:
    """LoRA adapters (PEFT) in named modules, only they trainable; `remove()` puts the plain modules back."""

    def __init__(self, model: nn.Module, targets: Sequence[str], settings: SweepSettings) -> None:
        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError:
            raise LayerprofError(
                "--adapter lora needs PEFT: pip install 'layerprof[recipes]' (or pip install peft)"
            ) from None
        self.model = model
        self.targets = list(targets)
        had_config = hasattr(model, "peft_config")
        config = LoraConfig(
            r=settings.adapter_rank,
            lora_alpha=settings.adapter_alpha,  # type: ignore[arg-type]  # PEFT annotates int; it scales by alpha / r
            lora_dropout=settings.adapter_dropout,
            target_modules=self.targets,
            bias="none",
        )
        # PEFT places new adapters on the meta device here and materialises nothing: each is then made on its base
        # layer's device in its dtype (where PEFT would move it) and initialised by PEFT. On fake tensors (an
        # estimate) PEFT's own move cannot run: `Module.to` swaps fake parameters, and a swap with itself fails.
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        with unset_fake_temporarily():  # the adapters on the real meta device, which PEFT leaves where it is
            inject_adapter_in_model(config, model, low_cpu_mem_usage=True)
        _materialise_adapters(model)
        self._drop_config = not had_config

    def remove(self) -> None:
        """Every adapted module replaced by the module it wraps (PEFT's `base_layer`)."""
        for name in self.targets:
            parent_name, _, child = name.rpartition(".")
            parent = self.model.get_submodule(parent_name)
            wrapper = getattr(parent, child)
            setattr(parent, child, wrapper.base_layer)
        if self._drop_config and hasattr(self.model, "peft_config"):
            del self.model.peft_config
        self.targets.clear()


def apply_recipe(
    loaded: LoadedModel,
    layers: Sequence[Layer],
    trainable_layers: int,
    settings: SweepSettings,
    vocab_size: int | None = None,
) -> AppliedRecipe:
    """The settings' recipe on a model frozen to `trainable_layers`: LoRA adapters (`settings.adapter`) in the
    target modules of the trainable layers, everything else frozen; then activation checkpointing of the trainable
    layers (`settings.checkpointing`)."""
    adapters = checkpointed = None
    if settings.adapter == "lora":
        targets = lora_targets(loaded.model, layers, trainable_layers, settings, vocab_size)
        if not targets:
            where = "the model" if settings.adapter_layers == "all" else f"the last {trainable_layers} layer(s)"
            named = ",".join(settings.adapter_targets) or "the family's default"
            raise LayerprofError(
                f"--adapter lora: no target module ({named}) in {where}; a larger z, or --adapter-targets naming "
                "modules there"
            )
        adapters = LoraAdapters(loaded.model, targets, settings)
    if settings.checkpointing == "trainable":
        checkpointed = checkpoint_layers(loaded.model, layers, trainable_layers)
    return AppliedRecipe(adapters, checkpointed)
