"""The training recipe applied to a frozen model: activation checkpointing of the trainable layers, and LoRA
adapters (PEFT) in their target modules.

Both are applied per cell after the freezing (`layerprof.sources.layers.freeze_layers`) and undone after it, so
that one model serves every z. Checkpointing wraps each trainable layer's forward in
`torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`: the frozen prefix builds no graph and needs none,
and non-reentrant checkpointing gives every trainable parameter its gradient even though the first trainable
layer's input does not require grad (reentrant checkpointing gives that layer none: transformers#21381).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from torch import nn

from layerprof.profile import Layer

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
    """checkpoint's `context_fn`: nothing around the first forward, the recompute region around the second."""
    return contextlib.nullcontext(), _recompute_region()


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

    def _wrap(self, forward: Any) -> Any:
        from torch.utils.checkpoint import checkpoint

        use_reentrant = self.use_reentrant

        def checkpointed(*args: Any, **kwargs: Any) -> Any:
            if use_reentrant:
                return checkpoint(forward, *args, use_reentrant=True, **kwargs)
            return checkpoint(forward, *args, use_reentrant=False, context_fn=_contexts, **kwargs)

        return checkpointed

    def remove(self) -> None:
        """Every wrapped layer runs its own forward again."""
        for module in self._wrapped:
            del module.forward
        self._wrapped.clear()


def checkpoint_layers(model: nn.Module, layers: Sequence[Layer], trainable_layers: int) -> Checkpointed:
    """Checkpoint the last `trainable_layers` layers of `model` (`Checkpointed`)."""
    return Checkpointed(model, layers, trainable_layers)


class AppliedRecipe:
    """What one cell's recipe changed in the model (checkpointing, adapters); `remove()` undoes it all."""

    def __init__(self, *parts: Any) -> None:
        self.parts = [part for part in parts if part is not None]

    def remove(self) -> None:
        """Undo the parts, the last applied first."""
        for part in reversed(self.parts):
            part.remove()
        self.parts.clear()


def apply_recipe(loaded: Any, layers: Sequence[Layer], trainable_layers: int, settings: Any) -> AppliedRecipe:
    """The settings' recipe on a model frozen to `trainable_layers`: activation checkpointing of the trainable
    layers (`settings.checkpointing`)."""
    checkpointed = None
    if settings.checkpointing == "trainable":
        checkpointed = checkpoint_layers(loaded.model, layers, trainable_layers)
    return AppliedRecipe(checkpointed)
