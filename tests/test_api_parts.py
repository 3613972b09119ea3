"""api.py part by part (issue 40's mutation survivors): a workload's `unwrap` joins the split's, `freeze` leaves
frozen layers in train mode unless told, and `ladder_of` hands each option to the ladder as `ladder --json` does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import layerprof
from layerprof.cli.commands import app
from layerprof.errors import LayerprofWarning
from layerprof.sources.workloads import CustomWorkload

DATA = Path(__file__).parent / "data"


class Block(nn.Module):
    """A container of two Linear(3, 3) the split keeps whole unless told to unwrap it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def test_a_workloads_unwrap_joins_the_splits() -> None:
    model = nn.Sequential(Block(), nn.Linear(3, 3))
    sizes = []

    def make_batch(size: int, device: torch.device) -> torch.Tensor:
        sizes.append(size)
        return torch.randn(size, 3, device=device)

    plain = CustomWorkload(model, make_batch, lambda m, batch: m(batch).sum())
    assert [layer.name for layer in layerprof.split_for_freezing(model, workload=plain)] == ["0", "1"]
    unwrapping = CustomWorkload(model, make_batch, lambda m, batch: m(batch).sum(), unwrap=("Block",))
    assert [layer.name for layer in layerprof.split_for_freezing(model, workload=unwrapping)] == ["0.a", "0.b", "1"]
    assert sizes == [2, 2]  # a batch of two is enough for the traced forward pass


def test_frozen_layers_stay_in_train_mode_unless_eval_frozen() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 4))
    layers = layerprof.split_for_freezing(model, torch.randn(2, 4))
    with layerprof.freeze(model, layers, 1):
        assert [model[i].training for i in range(3)] == [True, True, True]
    with layerprof.freeze(model, layers, 1, eval_frozen=True):
        assert [model[i].training for i in range(3)] == [False, False, True]


def test_every_option_of_ladder_of_is_the_same_option_of_ladder_json() -> None:
    path = DATA / "profile-v1-measured.json"
    printed = CliRunner().invoke(
        app,
        [
            "ladder", str(path), "--eta", "2", "--batch-size", "1", "--gpu-memory", "2GiB",
            "--configs", "9", "--budget-steps", "100", "--json",
        ],
    )  # fmt: skip
    assert printed.exit_code == 0, printed.output
    expected = json.loads(printed.output)
    ours = layerprof.ladder_of(path, eta=2, batch_size=1, gpu_memory_bytes=2 * 2**30, configs=9, budget_steps=100)
    assert ours.to_dict() == expected
    assert (expected["batch_size"], expected["gpu_memory_bytes"], expected["configs"]) == (1, 2 * 2**30, 9)
    assert expected["successive_halving"]["configs_per_rung"] == [9, 4, 2]
    assert [rung["steps"] for rung in expected["budget_to_rung"].values()] == [25, 50, 100]  # of --budget-steps 100
    defaults = layerprof.ladder_of(path, eta=2).to_dict()  # batch 2, no memory given, no configs, no steps
    assert (defaults["batch_size"], defaults["gpu_memory_bytes"], defaults["configs"], defaults["joint"]) == (
        2,
        None,
        None,
        None,
    )


def test_an_incomplete_profile_file_is_a_warning_not_an_error() -> None:
    with pytest.warns(LayerprofWarning, match=r"profile-v2-interrupted\.json is incomplete"):
        ladder = layerprof.ladder_of(DATA / "profile-v2-interrupted.json")
    assert [rung.trainable_layers for rung in ladder.rungs] == [1, 3]
