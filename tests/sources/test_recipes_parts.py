"""sources/recipes.py part by part (issue 40's mutation survivors): LoRA's targets (named, by default, the head
and grouped convolutions left out, GPT-2's Conv1D), adapters initialised as PEFT does and removed with the config
they brought, the recipe undone once, and checkpointing only where asked."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from layerprof.errors import LayerprofError
from layerprof.profile import Layer, SweepSettings
from layerprof.sources.recipes import AppliedRecipe, Checkpointed, LoraAdapters, apply_recipe, lora_targets

LORA = SweepSettings((2,), (1,), adapter="lora")


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.k, self.q = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q(self.k(x))


def split(model: nn.Module) -> list[Layer]:
    return [Layer(i, name, type(m).__name__, 0, (), 0) for i, (name, m) in enumerate(model.named_children())]


def test_named_targets_match_any_name_or_suffix_in_each_layer() -> None:
    model = nn.Sequential(Block(), Block())
    layers = split(model)
    assert lora_targets(model, layers, 2, SweepSettings((2,), (1,), adapter="lora", adapter_targets=("q",))) == [
        "0.q",
        "1.q",
    ]  # k comes first in each block and is passed over
    both = SweepSettings((2,), (1,), adapter="lora", adapter_targets=("q", "1.k"))
    assert lora_targets(model, layers, 2, both) == ["0.q", "1.k", "1.q"]


def test_the_default_targets_leave_out_the_head_and_grouped_convolutions() -> None:
    model = nn.Sequential(
        nn.Conv1d(4, 4, 1, groups=2), nn.Conv1d(4, 4, 1), nn.Linear(4, 100), Conv1D(100, 4), Conv1D(8, 4)
    )
    layers = split(model)
    # a projection onto the vocabulary (100), as Linear or as GPT-2's Conv1D, is the head; grouped convs stay plain
    assert lora_targets(model, layers, 5, LORA, vocab_size=100) == ["1", "4"]
    assert lora_targets(model, layers, 5, LORA, vocab_size=101) == ["1", "2", "3", "4"]
    conv = nn.Sequential(nn.Conv1d(4, 4, 3))  # a convolution is never the head, whatever its kernel's width
    assert lora_targets(conv, split(conv), 1, LORA, vocab_size=3) == ["0"]


def test_adapters_start_as_peft_starts_them_and_leave_with_the_config_they_brought() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(Block(), Block())
    adapters = LoraAdapters(model, ["1.q"], LORA)
    lora_a, lora_b = model[1].q.lora_A["default"].weight, model[1].q.lora_B["default"].weight
    assert lora_a.abs().sum() > 0 and torch.equal(lora_b, torch.zeros_like(lora_b))  # A Kaiming-uniform, B zeros
    assert lora_targets(model, split(model), 2, LORA) == [
        "0.k",
        "0.q",
        "1.k",
    ]  # not PEFT's wrapper, base layer or adapters
    adapters.remove()
    adapters.remove()  # a second remove undoes nothing more
    assert isinstance(model[1].q, nn.Linear) and not hasattr(model, "peft_config")
    model.peft_config = {"theirs": "kept"}  # a model that came with PEFT's config keeps it
    LoraAdapters(model, ["1.q"], LORA).remove()
    assert model.peft_config["theirs"] == "kept"


def test_no_target_names_where_it_looked() -> None:
    model = nn.Sequential(nn.Conv1d(4, 4, 1, groups=2), nn.Linear(4, 4))
    loaded = SimpleNamespace(model=model)
    every = SweepSettings((2,), (1,), adapter="lora", adapter_layers="all", adapter_targets=("v",))
    with pytest.raises(LayerprofError, match=r"^--adapter lora: no target module \(v\) in the model; "):
        apply_recipe(loaded, split(model), 1, every)
    with pytest.raises(LayerprofError, match=r"no target module \(the family's default\) in the last 1 layer\(s\)"):
        apply_recipe(
            SimpleNamespace(model=nn.Sequential(nn.Linear(4, 4), nn.Conv1d(4, 4, 1, groups=2))), split(model), 1, LORA
        )


def test_checkpointing_only_where_asked_and_a_recipe_undone_once() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    plain = apply_recipe(SimpleNamespace(model=model), split(model), 1, SweepSettings((2,), (1,)))
    assert plain.parts == [] and "forward" not in model[1].__dict__
    recipe = apply_recipe(
        SimpleNamespace(model=model), split(model), 1, SweepSettings((2,), (1,), checkpointing="trainable")
    )
    assert [type(part) for part in recipe.parts] == [Checkpointed] and "forward" in model[1].__dict__
    recipe.remove()
    recipe.remove()  # a second remove undoes nothing more
    assert "forward" not in model[1].__dict__
    checkpointed = Checkpointed(model, split(model), 2)
    checkpointed.remove()
    checkpointed.remove()  # each part alone too
    assert "forward" not in model[0].__dict__

    undone = []
    parts = [SimpleNamespace(remove=lambda n=n: undone.append(n)) for n in (1, 2)]
    applied = AppliedRecipe(parts[0], None, parts[1])
    applied.remove()
    applied.remove()
    assert undone == [2, 1]  # the last applied first, once
