"""The public Python API (layerprof/api.py): a user's model split as the command line splits it, frozen for z with
the profiler's cut, and a profile's ladder as the data `ladder --json` prints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import layerprof
from layerprof.cli.commands import app
from layerprof.errors import LayerprofError
from layerprof.sources.layers import split_layers
from layerprof.sources.models import ModelOptions, build_model
from layerprof.sources.workloads import CustomWorkload
from tests.sources.test_layers import HeadFirst

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_training.py"


def example_module():  # noqa: ANN201
    """examples/own_training.py, imported as the exported script imports it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("own_training", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_split_is_the_command_lines_split_of_the_same_model() -> None:
    digits_model = example_module().digits_model
    cli = build_model(f"{EXAMPLE}:digits_model", ModelOptions(input_shape=(64,), num_classes=10), device="cpu")
    ours = layerprof.split_for_freezing(digits_model(), torch.randn(2, 64))
    assert ours == cli.split()
    assert [(layer.name, layer.params) for layer in ours] == [("0", 4160), ("2", 4160), ("4", 4160), ("6", 650)]


def test_the_split_is_in_forward_order_where_registration_order_differs() -> None:
    layers = layerprof.split_for_freezing(HeadFirst(), torch.randn(2, 4))
    assert [layer.name for layer in layers] == ["body.0", "body.2", "head"]
    with pytest.warns(UserWarning, match="registration order"):  # what split_layers without a forward gives
        assert [layer.name for layer in split_layers(HeadFirst())] == ["head", "body.0", "body.2"]


def test_examples_may_be_a_tuple_a_dict_or_a_workload() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.late = nn.Linear(3, 3)
            self.early = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
            return self.late(self.early(x) * scale)

    x, scale = torch.randn(2, 3), torch.ones(1)
    expected = ["early", "late"]
    assert [layer.name for layer in layerprof.split_for_freezing(TwoInputs(), (x, scale))] == expected
    assert [layer.name for layer in layerprof.split_for_freezing(TwoInputs(), {"x": x, "scale": scale})] == expected
    model = TwoInputs()
    workload = CustomWorkload(
        model, lambda size, device: torch.randn(size, 3, device=device), lambda m, batch: m(batch, 1.0).sum()
    )
    assert [layer.name for layer in layerprof.split_for_freezing(model, workload=workload)] == expected


def test_a_forward_that_fails_on_the_example_is_an_error_not_registration_order() -> None:
    with pytest.raises(LayerprofError, match=r"^the forward pass on the example failed \(RuntimeError: .*shapes"):
        layerprof.split_for_freezing(HeadFirst(), torch.randn(2, 5))
    with pytest.raises(LayerprofError, match="needs one of example"):
        layerprof.split_for_freezing(HeadFirst())


def test_freezing_trains_the_last_z_and_freezing_again_moves_the_cut() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(4, 4) for _ in range(4)))
    layers = layerprof.split_for_freezing(model, torch.randn(2, 4))
    frozen = layerprof.freeze(model, layers, 1)
    assert [id(p) for p in frozen.trainable_parameters()] == [id(model[3].weight), id(model[3].bias)]
    frozen = layerprof.freeze(model, layers, 3)  # the next rung: the z=1 cut (before model[3]) must be gone
    model(torch.randn(2, 4)).sum().backward()
    assert [model[i].weight.grad is not None for i in range(4)] == [False, True, True, True]
    assert len(frozen.trainable_parameters()) == 6
    with frozen:
        pass
    assert not model[0]._forward_hooks and not model._forward_pre_hooks  # the with block undid the cut


def test_the_ladder_is_the_data_ladder_json_prints(tmp_path: Path) -> None:
    from layerprof.profile import load_profile

    profile_path = Path(__file__).parent / "data" / "profile-v1-measured.json"
    printed = CliRunner().invoke(app, ["ladder", str(profile_path), "--eta", "2", "--json"])
    assert printed.exit_code == 0, printed.output
    expected = json.loads(printed.output)
    ours = layerprof.ladder_of(profile_path, eta=2)
    assert ours.to_dict() == expected
    assert layerprof.ladder_of(load_profile(profile_path), eta=2).to_dict() == expected
    assert [(rung.budget_index, rung.trainable_layers) for rung in ours.rungs] == [
        (int(index), rung["trainable_layers"]) for index, rung in expected["budget_to_rung"].items()
    ]
