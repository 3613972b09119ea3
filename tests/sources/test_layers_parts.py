"""The layer split part by part (issue 40, `make mutate` survivors of sources/layers.py): the `--unwrap` hint at
each of its edges (half the parameters, three alike blocks, no parameters at all), the largest list of alike blocks,
and a failing traced forward falling back to registration order unless a trace is required."""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import NamedTuple

import pytest
import torch
from torch import nn

from layerprof.sources.layers import (
    Layer,
    _detach,
    freeze_layers,
    repeated_blocks,
    split_layers,
    trace_split,
    unwrap_hint,
)


class Pair(NamedTuple):
    first: torch.Tensor
    second: list[torch.Tensor]


class Encoder(nn.Module):
    """`count` alike blocks of 20 parameters each (a user's class: one layer unless unwrapped)."""

    def __init__(self, count: int, width: int = 4) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(count))


def _layers(model: nn.Module) -> list[Layer]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # registration order, and the hint itself
        return split_layers(model)


def _model(head_outputs: int, blocks: int, width: int = 4) -> nn.Module:
    return nn.Sequential(OrderedDict(head=nn.Linear(4, head_outputs), enc=Encoder(blocks, width)))


def test_a_layer_holding_exactly_half_the_parameters_in_three_alike_blocks_gets_the_hint() -> None:
    """head 4 x 12 + 12 = 60 parameters, enc 3 x 20 = 60: half (the edge is inclusive), three blocks (the least)."""
    model = _model(12, 3)
    assert [layer.params for layer in _layers(model)] == [60, 60]
    assert unwrap_hint(model, _layers(model)) == (
        "layer enc (Encoder) holds 50% of the parameters in 3 alike Linear blocks; --unwrap Encoder splits it into "
        "them (in Python: unwrap=['Encoder'])"
    )


@pytest.mark.parametrize(
    ("head_outputs", "blocks"),
    [
        (18, 3),  # 60 of 150: 40%
        (8, 2),  # 40 of 80 = half, in two blocks
    ],
)
def test_no_hint_below_half_the_parameters_or_three_blocks(head_outputs: int, blocks: int) -> None:
    model = _model(head_outputs, blocks)
    assert unwrap_hint(model, _layers(model)) is None


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_a_model_whose_parameters_are_all_empty_gets_no_hint() -> None:
    """0 parameters in all: no share to speak of (and no division by zero)."""
    model = nn.Sequential(OrderedDict(head=nn.Linear(0, 0), enc=Encoder(3, width=0)))
    assert [layer.params for layer in _layers(model)] == [0, 0]
    assert unwrap_hint(model, _layers(model)) is None


def test_a_model_that_is_one_layer_gets_no_hint() -> None:
    model = Encoder(3)  # the model's own class is descended into: three layers
    assert [layer.name for layer in _layers(model)] == ["blocks.0", "blocks.1", "blocks.2"]
    linear = nn.Linear(4, 4)  # no sub-module: the model itself is its one layer, named ""
    assert unwrap_hint(linear, _layers(linear)) is None


def _linears(count: int) -> list[nn.Module]:
    return [nn.Linear(2, 2) for _ in range(count)]


def _convs(count: int) -> list[nn.Module]:
    return [nn.Conv1d(2, 2, 1) for _ in range(count)]


class _Lists(nn.Module):
    def __init__(self, *lists: nn.ModuleList) -> None:
        super().__init__()
        for index, blocks in enumerate(lists):
            self.add_module(f"list{index}", blocks)


@pytest.mark.parametrize(
    ("lists", "found"),
    [
        ([[nn.Linear(2, 2), nn.Linear(2, 2)]], ("Linear", 2)),  # two are enough
        ([[nn.Linear(2, 2)]], None),  # one is not a list of alike blocks
        ([[nn.Linear(2, 2), nn.Conv1d(2, 2, 1)]], None),  # two kinds
        ([[nn.ReLU(), nn.ReLU(), nn.ReLU()]], None),  # nothing to train
        ([[nn.Linear(2, 2), nn.Conv1d(2, 2, 1)], _linears(2)], ("Linear", 2)),  # the alike one
        ([_linears(2), _convs(3)], ("Conv1d", 3)),  # the largest
        ([_linears(3), _convs(3)], ("Linear", 3)),  # of two as large, the first
    ],
)
def test_the_largest_list_of_alike_blocks_that_train(
    lists: list[list[nn.Module]], found: tuple[str, int] | None
) -> None:
    assert repeated_blocks(_Lists(*(nn.ModuleList(blocks) for blocks in lists))) == found


def test_a_failing_forward_falls_back_to_registration_order_unless_a_trace_is_required() -> None:
    """`trace_split` without `trace_required` (as `audit` calls it) falls back, saying why."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))

    def fails(_model: nn.Module) -> None:
        raise RuntimeError("shapes do not match\nsecond line")

    with pytest.warns(UserWarning, match="could not trace a forward pass \\(RuntimeError: shapes do not match\\)"):
        split = trace_split(model, run_forward=fails)
    assert (split.order, split.reason, [layer.name for layer in split.layers]) == (
        "registration",
        "RuntimeError: shapes do not match",
        ["0", "1"],
    )


def test_removing_the_freezing_gives_every_parameter_its_requires_grad_back_once() -> None:
    """The model's own frozen parameter stays frozen, the others train again; a second `remove` (leaving the `with`
    after an explicit one) leaves alone what the caller set meanwhile."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2))
    model[0].bias.requires_grad_(False)
    frozen = freeze_layers(model, _layers(model), 1)
    assert [p.requires_grad for p in model.parameters()] == [False] * 4 + [True] * 2
    frozen.remove()
    assert [p.requires_grad for p in model.parameters()] == [True, False, True, True, True, True]
    model[2].weight.requires_grad_(False)
    frozen.remove()
    assert [p.requires_grad for p in model.parameters()] == [True, False, True, True, False, True]


def test_frozen_layers_stay_in_train_mode_by_default_and_eval_mode_is_undone_once() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.Linear(2, 2))
    layers = _layers(model)
    with freeze_layers(model, layers, 1):
        assert model[0].training  # as plain requires_grad_(False) leaves it
    frozen = freeze_layers(model, layers, 1, eval_frozen=True)
    assert not model[0].training and model[2].training
    frozen.remove()
    assert model[0].training
    model.eval()
    frozen.remove()  # again: what the caller set since stays
    assert not model[0].training


def test_a_frozen_named_tuple_output_is_cut_and_stays_a_named_tuple() -> None:
    pair = Pair(torch.ones(2, requires_grad=True) * 2, [torch.zeros(1, requires_grad=True)])
    cut = _detach(pair)
    assert type(cut) is Pair and not cut.first.requires_grad and not cut.second[0].requires_grad
