"""Split granularity: splits at other depths, FLOP staircases composed from one per-layer trace, the choice."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.fidelity.granularity import SplitChoice, best_choice, composed_flops, splits_by_depth
from layerprof.predict.estimate import estimate_model
from layerprof.predict.layercosts import layer_costs
from layerprof.profile import SweepSettings
from layerprof.sources.models import ModelOptions
from tests.cli.test_cli import TINY_LM


@pytest.mark.parametrize(
    ("spec", "options"),
    [
        ("paper-resnet18-cifar100", ModelOptions()),  # residual blocks with an in-place add after the last norm
        ("pythia-14m", ModelOptions(seq_len=32, overrides={"padded_vocab_size": 512})),
    ],
)
def test_the_composed_staircase_equals_every_estimated_cell(spec: str, options: ModelOptions) -> None:
    split = splits_by_depth(spec, options, 0)[0]
    n = len(split.layers)
    flops = composed_flops(layer_costs(spec, options, 2), split.layers, split.layers)
    cells = estimate_model(spec, options, SweepSettings((2,), tuple(range(1, n + 1)), target="cuda"))
    assert {row.trainable_layers: row.flops for row in cells.rows} == flops


def test_a_deeper_split_descends_into_the_blocks() -> None:
    splits = splits_by_depth("paper-resnet18-cifar100", ModelOptions(), 2)
    assert [s.depth for s in splits] == [0, 1]  # below the convolutions and norms there is nothing to descend into
    assert splits[1].unwrap == ("BasicBlock",) and len(splits[0].layers) == 11 and len(splits[1].layers) == 41
    # the finer split's staircase from the same trace: full training costs the same at every depth
    costs = layer_costs("paper-resnet18-cifar100", ModelOptions(unwrap=("BasicBlock",)), 2)
    coarse = composed_flops(costs, splits[1].layers, splits[0].layers)
    fine = composed_flops(costs, splits[1].layers, splits[1].layers)
    assert coarse[11] == fine[41] and coarse[1] == fine[1]  # the head alone, and everything


def choice(depth: int, rungs: int, close: bool, distance: float) -> SplitChoice:
    return SplitChoice(depth, (), 10, {}, list(range(rungs)), close, distance)


def test_the_best_split_has_the_most_rungs_close_to_eta() -> None:
    assert best_choice([choice(0, 2, True, 0.1), choice(1, 3, True, 0.3)]).depth == 1  # more close rungs
    assert best_choice([choice(0, 2, True, 0.3), choice(1, 4, False, 0.1)]).depth == 0  # close beats many
    assert best_choice([choice(0, 3, True, 0.3), choice(1, 3, True, 0.1)]).depth == 1  # nearer to eta
    assert best_choice([choice(0, 3, True, 0.2), choice(1, 3, True, 0.2)]).depth == 0  # the coarser at a tie
    assert best_choice([choice(0, 1, False, math.inf), choice(1, 1, False, math.inf)]).depth == 0


def test_layers_depth_and_ladder_split_auto(tmp_path) -> None:  # noqa: ANN001
    runner = CliRunner()
    result = runner.invoke(app, ["layers", *TINY_LM, "--depth", "1", "--format", "md"])
    assert result.exit_code == 0, result.output
    assert "--unwrap Block" in result.output and "transformer.h.0.attn" in result.output
    out = tmp_path / "estimate.json"
    assert runner.invoke(app, ["estimate", *TINY_LM, "--batch-sizes", "2", "--out", str(out)]).exit_code == 0
    ladder = runner.invoke(app, ["ladder", str(out), "--split", "auto", "--json"])
    assert ladder.exit_code == 0, ladder.output
    split = json.loads(ladder.output)["split"]
    assert [c["depth"] for c in split["choices"]] == [0, 1, 2]
    assert sum(c["chosen"] for c in split["choices"]) == 1 and split["reason"].startswith("depth ")
    wrong = runner.invoke(app, ["ladder", str(out), "--split", "deep"])
    assert wrong.exit_code == 2 and "'deep' is not one of" in wrong.output
