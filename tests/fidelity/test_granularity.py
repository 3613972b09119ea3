"""Split granularity: splits at other depths, FLOP staircases composed from one per-layer trace, the choice."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.errors import LayerprofError
from layerprof.fidelity import granularity
from layerprof.fidelity.granularity import (
    SplitAtDepth,
    SplitChoice,
    best_choice,
    choose_split,
    composed_flops,
    splits_by_depth,
)
from layerprof.predict.estimate import estimate_model
from layerprof.predict.layercosts import OUTSIDE, LayerCost, LayerCostTable, layer_costs
from layerprof.profile import Layer, SweepSettings
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


def fine_and_coarse() -> tuple[list[Layer], list[Layer]]:
    """Four one-parameter layers, and a split of them into two layers of two."""
    fine = [Layer(i, f"f{i}", "Linear", 1, (f"p{i}",), 1) for i in range(4)]
    coarse = [Layer(0, "c0", "Block", 2, ("p0", "p1"), 2), Layer(1, "c1", "Block", 2, ("p2", "p3"), 2)]
    return fine, coarse


def test_composed_flops_by_hand() -> None:
    """Fine layer i (1-based k = i + 1): forward k, input gradient 10k, weight gradient 100k, internal 1000k; outside
    every layer: forward 5, input gradient 10,000, weight gradient 20,000. Every z pays all forward FLOPs (15) and the
    outside backward (30,000): base 30,015. Each trained fine layer adds its weight and internal FLOPs, each but the
    lowest trained one its input gradient."""
    costs = [LayerCost(i, f"f{i}", "Linear", 1, forward_flops=k, backward_input_flops=10 * k,
                       backward_weight_flops=100 * k, backward_internal_flops=1000 * k)
             for i, k in ((0, 1), (1, 2), (2, 3), (3, 4))]  # fmt: skip
    outside = LayerCost(OUTSIDE, "outside", "", 0, forward_flops=5, backward_input_flops=10_000,
                        backward_weight_flops=20_000)  # fmt: skip
    table = LayerCostTable("m", 2, "32-true", "cuda", [*costs, outside])
    fine, coarse = fine_and_coarse()
    # z=1 trains f2, f3: 3,300 + 4,400 + 40; z=2 all four: 11,000 + 20 + 30 + 40
    assert composed_flops(table, fine, coarse) == {1: 37_755, 2: 41_105}
    # the fine split: f3; f2, f3; f1..f3; all
    assert composed_flops(table, fine, fine) == {1: 34_415, 2: 37_755, 3: 39_985, 4: 41_105}
    straddling = [Layer(0, "g0", "Linear", 2, ("p1", "p2"), 2)]  # across c0 and c1
    with pytest.raises(LayerprofError, match="layer g0 does not sit inside one layer of the coarser split"):
        composed_flops(table, straddling, coarse)


def test_depth_stops_at_the_deepest_asked() -> None:
    options = ModelOptions(seq_len=32, overrides={"padded_vocab_size": 512})
    assert [s.depth for s in splits_by_depth("pythia-14m", options, 1)] == [0, 1]  # depth 2 exists (see below)
    assert [s.depth for s in splits_by_depth("pythia-14m", options, 0)] == [0]
    with pytest.raises(LayerprofError, match="--depth must be 0 or more, got -1"):
        splits_by_depth("pythia-14m", options, -1)


USER_BLOCKS = """
from torch import nn


class Activated(nn.Module):  # one sub-module with parameters, one without
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 8)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.linear(x))


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(8, 8)
        self.second = nn.Linear(8, 8)

    def forward(self, x):
        return self.second(self.first(x))


def activated():
    return nn.Sequential(Activated(), Activated(), nn.Linear(8, 2))


def pairs():
    return nn.Sequential(Pair(), Activated(), Pair(), nn.Linear(8, 2))
"""


def test_only_blocks_of_two_parametrised_sub_modules_are_descended(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "blocks.py"
    path.write_text(USER_BLOCKS)
    options = ModelOptions(input_shape=(8,))
    assert [s.depth for s in splits_by_depth(f"{path}:activated", options, 2)] == [0]  # a ReLU holds no parameter
    splits = splits_by_depth(f"{path}:pairs", options, 2)
    assert [(s.depth, s.unwrap) for s in splits] == [(0, ()), (1, ("Pair",))]
    assert [layer.name for layer in splits[1].layers] == ["0.first", "0.second", "1", "2.first", "2.second", "3"]


def test_choose_split_measures_the_distance_from_eta_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """Staircases stand in for the traced FLOPs. Depth 0, FLOPs 10, 20, 90 at eta 3: rungs 1, 2, 3, ratios 2 and 4.5,
    log 2 / log 3 = 0.631 and log 4.5 / log 3 = 1.369 steps of eta, both 0.369 from one. Depth 1, FLOPs 10, 11, 30,
    31, 90, 270: rungs 1, 3, 5, 6 step by exactly 3: distance 0, and four close rungs beat three."""

    def layers(count: int) -> list[Layer]:
        return [Layer(i, f"l{i}", "Linear", 1, (f"p{i}",), 1) for i in range(count)]

    staircases = {3: {1: 10, 2: 20, 3: 90}, 6: {1: 10, 2: 11, 3: 30, 4: 31, 5: 90, 6: 270}}
    splits = [SplitAtDepth(0, (), layers(3)), SplitAtDepth(1, ("Block",), layers(6))]
    monkeypatch.setattr(granularity, "splits_by_depth", lambda spec, options, deepest: splits)
    monkeypatch.setattr(granularity, "layer_costs", lambda *args: None)
    monkeypatch.setattr(granularity, "composed_flops", lambda costs, fine, split: staircases[len(split)])
    report = choose_split("m", ModelOptions(), 2, 3.0)
    coarse, fine = report.choices
    assert (coarse.rungs, coarse.close_to_eta) == ([1, 2, 3], True)
    assert coarse.distance_from_eta == pytest.approx(0.36907, abs=1e-5)
    assert (fine.rungs, fine.close_to_eta, fine.distance_from_eta) == ([1, 3, 5, 6], True, 0.0)
    assert report.best is fine and not coarse.chosen
    assert report.reason == (
        "depth 1 (6 layers) gives 4 rungs within half a step of eta=3 (mean distance 0.00 log steps); "
        "split it so with --unwrap Block"
    )
    staircases[6] = {z: 10 + z for z in range(1, 7)}  # 11 to 16: under half a step in all, full training only
    report = choose_split("m", ModelOptions(), 2, 3.0)
    assert report.choices[1].rungs == [6] and report.choices[1].distance_from_eta == math.inf
    assert report.best.depth == 0
    assert (
        report.reason == "depth 0 (3 layers) gives 3 rungs within half a step of eta=3 (mean distance 0.37 log steps)"
    )


def test_choose_split_passes_each_argument_where_it_belongs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch size, the depth, the precision and the spec are distinct values here (8, 1, bf16-mixed, m), so a
    swap of any two (all are plain values of the same few types) reaches the stubs or the report."""
    calls: dict[str, tuple[object, ...]] = {}
    split = SplitAtDepth(0, ("Unwrapped",), [Layer(0, "l0", "Linear", 1, ("p0",), 1)])

    def splits(spec: str, options: ModelOptions, deepest: int) -> list[SplitAtDepth]:
        calls["splits_by_depth"] = (spec, deepest)
        return [split]

    def costs(spec: str, options: ModelOptions, batch_size: int, precision: str) -> None:
        calls["layer_costs"] = (spec, options.unwrap, batch_size, precision)

    monkeypatch.setattr(granularity, "splits_by_depth", splits)
    monkeypatch.setattr(granularity, "layer_costs", costs)
    monkeypatch.setattr(granularity, "composed_flops", lambda costs, fine, split: {1: 5})
    report = choose_split("m", ModelOptions(), 8, 3.0, precision="bf16-mixed", deepest=1)
    assert calls == {"splits_by_depth": ("m", 1), "layer_costs": ("m", ("Unwrapped",), 8, "bf16-mixed")}
    assert (report.model, report.batch_size, report.eta) == ("m", 8, 3.0)
