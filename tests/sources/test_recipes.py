"""The recipe applied to a frozen model: activation checkpointing of the trainable layers (every trainable
parameter gets its gradient at every z, recompute FLOPs counted apart) and LoRA adapters."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from layerprof.errors import LayerprofError
from layerprof.measure.instruments import OpRecorder, Phase, phase_flops
from layerprof.profile import SweepSettings
from layerprof.sources.layers import freeze_layers, split_layers
from layerprof.sources.recipes import Checkpointed, apply_recipe, checkpoint_layers, lora_targets


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


def lora_settings(**changes) -> SweepSettings:
    return replace(SweepSettings(batch_sizes=(2,), trainable_layer_counts=(1,), adapter="lora"), **changes)


@pytest.mark.parametrize("z", [1, 2, 3, 4])
def test_lora_adapts_the_last_z_layers_only_and_every_adapter_gets_its_gradient(z: int) -> None:
    model, layers = blocks()
    frozen = freeze_layers(model, layers, z)
    recipe = apply_recipe(SimpleNamespace(model=model), layers, z, lora_settings(adapter_rank=2))
    try:
        trainable = {name for name, param in model.named_parameters() if param.requires_grad}
        suffix = tuple(f"{layer.name}." for layer in layers[len(layers) - z :])
        assert trainable and all("lora_" in name and name.startswith(suffix) for name in trainable)
        assert not any("lora_" in name for name, _ in model.named_parameters() if not name.startswith(suffix))
        model(torch.randn(2, 8)).sum().backward()
        for name, param in model.named_parameters():
            assert (param.grad is not None) == (name in trainable), (z, name)
        # rank 2: A is r x in, B is out x r: 2 (in + out) per adapted Linear; a Block adapts 16->32 and 32->16
        expected = {1: 2 * (16 + 4), 2: 40 + 2 * 96, 3: 232 + 2 * 96, 4: 424 + 2 * (8 + 16)}[z]
        assert sum(param.numel() for name, param in model.named_parameters() if name in trainable) == expected
    finally:
        recipe.remove()
        frozen.remove()
    assert not any("lora_" in name for name, _ in model.named_parameters())  # undone: the plain model again
    assert all(type(module) in (nn.Sequential, nn.Linear, Block) for module in model.modules())


def test_lora_targets_by_family_and_by_name() -> None:
    model, layers = blocks()
    assert lora_targets(model, layers, 2, lora_settings()) == ["2.up", "2.down", "3"]
    assert lora_targets(model, layers, 2, lora_settings(adapter_targets=("up",))) == ["2.up"]
    assert lora_targets(model, layers, 1, lora_settings(adapter_layers="all"))[:2] == ["0", "1.up"]
    # a causal LM's output head (onto the vocabulary) gets none: here every Linear as wide as 20 or wider
    assert lora_targets(model, layers, 2, lora_settings(), vocab_size=20) == ["2.down", "3"]
    with pytest.raises(LayerprofError, match=r"no target module \(up\) in the last 1 layer\(s\)"):
        apply_recipe(SimpleNamespace(model=model), layers, 1, lora_settings(adapter_targets=("up",)))
