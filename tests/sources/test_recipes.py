"""The recipe applied to a frozen model: activation checkpointing of the trainable layers (every trainable
parameter gets its gradient at every z, recompute FLOPs counted apart) and LoRA adapters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from layerprof.measure.instruments import OpRecorder, Phase, phase_flops
from layerprof.sources.layers import freeze_layers, split_layers
from layerprof.sources.recipes import Checkpointed, checkpoint_layers


class Block(nn.Module):
    """A layer of two products: checkpointed, backward recomputes the first (the second's saved tensors are its
    inputs, which recomputation stops at: torch's early stop)."""

    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


def blocks() -> tuple[nn.Module, list]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), Block(), Block(), nn.Linear(16, 4))
    return model, split_layers(model, run_forward=lambda m: m(torch.zeros(2, 8)))


def checkpointed_step(model: nn.Module, layers: list, z: int) -> OpRecorder:
    frozen, checkpointed = freeze_layers(model, layers, z), checkpoint_layers(model, layers, z)
    recorder = OpRecorder()
    try:
        with recorder:
            loss = model(torch.randn(2, 8)).sum()
            recorder.phase = Phase.BACKWARD
            loss.backward()
    finally:
        checkpointed.remove()
        frozen.remove()
    return recorder


@pytest.mark.parametrize("z", [1, 2, 3, 4])
def test_every_trainable_parameter_gets_its_gradient_under_checkpointing_at_every_z(z: int) -> None:
    """transformers#21381: with a frozen prefix the first trainable layer's input does not require grad; reentrant
    checkpointing then gives that layer no gradient. Non-reentrant gives every trainable parameter its own."""
    model, layers = blocks()
    checkpointed_step(model, layers, z)
    trainable = {name for layer in layers[len(layers) - z :] for name in layer.parameter_names}
    for name, param in model.named_parameters():
        if name in trainable:
            assert param.grad is not None and param.grad.abs().sum() > 0, (z, name)
        else:
            assert param.grad is None, (z, name)


def test_reentrant_checkpointing_leaves_no_parameter_a_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the test above guards against (and what a planted use_reentrant=True makes): with reentrant
    checkpointing and a frozen prefix no checkpointed output requires grad, so no parameter gets a gradient and the
    loss cannot even be differentiated (transformers#21381)."""
    monkeypatch.setattr(Checkpointed, "use_reentrant", True)
    model, layers = blocks()
    with (
        pytest.warns(UserWarning, match="None of the inputs have requires_grad=True"),
        pytest.raises(RuntimeError, match="does not require grad"),
    ):
        checkpointed_step(model, layers, 2)
    assert all(param.grad is None for param in model.parameters())


def test_recompute_flops_are_their_own_category_and_backward_is_unchanged() -> None:
    model, layers = blocks()
    plain = freeze_layers(model, layers, 3)
    recorder = OpRecorder()
    with recorder:
        loss = model(torch.randn(2, 8)).sum()
        recorder.phase = Phase.BACKWARD
        loss.backward()
    plain.remove()
    model.zero_grad(set_to_none=True)
    checkpointed = checkpointed_step(model, layers, 3)
    for phase in (Phase.FORWARD, Phase.BACKWARD):
        assert phase_flops(checkpointed.ops, phase) == phase_flops(recorder.ops, phase)
    # each Block recomputes its first product (batch 2 x 16 -> 32: 2 * 2 * 16 * 32); the lone Linear nothing
    assert phase_flops(checkpointed.ops, Phase.RECOMPUTE) == 2 * (2 * 2 * 16 * 32)
    assert phase_flops(recorder.ops, Phase.RECOMPUTE) == 0


def test_checkpointing_is_undone_after_the_cell() -> None:
    model, layers = blocks()
    checkpointed = checkpoint_layers(model, layers, 4)
    assert all("forward" in model.get_submodule(layer.name).__dict__ for layer in layers)
    checkpointed.remove()
    assert not any("forward" in module.__dict__ for module in model.modules())
