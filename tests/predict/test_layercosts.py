"""Per-layer costs: columns that add up to the full-training cell, analytic counts for Linear layers, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.outputs.tables import layer_costs_view
from layerprof.predict.estimate import estimate_model
from layerprof.predict.layercosts import OUTSIDE, layer_costs
from layerprof.profile import SweepSettings
from layerprof.sources.models import ModelOptions
from tests.cli.test_cli import TINY_LM, assert_one_line_error

EXAMPLE = str(Path(__file__).parents[2] / "examples" / "custom_model.py")


@pytest.mark.parametrize(
    ("spec", "options", "batch"),
    [
        ("paper-resnet18-cifar100", ModelOptions(), 4),
        ("pythia-14m", ModelOptions(seq_len=32, overrides={"padded_vocab_size": 512}), 2),
        (f"{EXAMPLE}:mlp", ModelOptions(input_shape=(64,), num_classes=10), 8),
    ],
)
def test_the_columns_add_up_to_the_full_training_cell(spec: str, options: ModelOptions, batch: int) -> None:
    table = layer_costs(spec, options, batch)
    n = len(table.layers) - 1  # the last row is outside every layer
    cell = estimate_model(spec, options, SweepSettings((batch,), (n,), target="cuda")).rows[0]
    assert cell.ok
    assert sum(c.forward_flops for c in table.layers) == cell.forward_flops
    backward = sum(c.backward_input_flops + c.backward_weight_flops + c.backward_internal_flops for c in table.layers)
    assert backward == cell.backward_flops
    trained = sum(c.trainable_bytes for c in table.layers)
    assert (
        trained == cell.optimizer_state_bytes + sum(c.params for c in table.layers) * 4
    )  # float32 gradients of every parameter
    assert table.layers[0].backward_input_flops == 0  # nothing below the first layer needs its input gradient
    assert table.layers[-1].index == OUTSIDE


def test_linear_layers_split_backward_into_input_and_weight_gradients() -> None:
    # mlp(width=256, depth=6, features=64, classes=10): input Linear 64->256, six residual blocks, head 256->10
    table = layer_costs(f"{EXAMPLE}:mlp", ModelOptions(input_shape=(64,), num_classes=10), 8)
    first, block, head = table.layers[0], table.layers[1], table.layers[7]
    assert first.forward_flops == 2 * 8 * 64 * 256 and first.backward_weight_flops == 2 * 8 * 64 * 256
    assert first.backward_input_flops == 0
    assert block.forward_flops == 2 * 8 * 256 * 256
    # a residual block x + linear(gelu(norm(x))): its linear's input gradient is needed inside (to reach the norm's
    # weights); what it passes down goes through the norm and the residual add, which count no FLOPs
    assert block.backward_weight_flops == block.backward_internal_flops == 2 * 8 * 256 * 256
    assert block.backward_input_flops == 0
    assert head.backward_weight_flops == head.backward_input_flops == 2 * 8 * 256 * 10
    assert head.backward_internal_flops == 0
    # AdamW: gradient, two moments, a step counter per tensor: 3 x 4 bytes per parameter + 4 per tensor
    assert head.trainable_bytes == 3 * 4 * (256 * 10 + 10) + 2 * 4
    assert head.output_bytes == 8 * 10 * 4
    assert block.saved_activation_bytes > 0 and first.saved_activation_bytes == 8 * 64 * 4  # its input


def test_layers_costs_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "costs.json"
    result = runner.invoke(app, ["layers", *TINY_LM, "--costs", "--batch-size", "2", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["schema"] == "layerprof.layer-costs/1" and data["batch_size"] == 2
    assert json.loads(out.read_text()) == data and out.with_suffix(".csv").read_text().startswith("index,name,")
    table = runner.invoke(app, ["layers", *TINY_LM, "--costs", "--format", "md"])
    assert "| total |" in table.output and "bwd weight GF" in table.output
    assert_one_line_error(
        runner.invoke(app, ["layers", *TINY_LM, "--costs", "--out", str(tmp_path / "x.txt")]), "--out must end in .json"
    )


MLP = (f"{EXAMPLE}:mlp", ModelOptions(input_shape=(64,), num_classes=10), 4)


@pytest.mark.parametrize(
    ("model", "recipe"),
    [
        (MLP, {"adapter": "lora", "adapter_rank": 4}),
        (("paper-resnet18-cifar100", ModelOptions(), 2), {"checkpointing": "trainable", "optimizer": "sgd"}),
        (MLP, {"adapter": "lora", "checkpointing": "trainable", "optimizer": "adamw8bit"}),
    ],
)
def test_the_columns_add_up_to_the_full_training_cell_under_a_recipe(model: tuple, recipe: dict) -> None:
    spec, options, batch = model
    table = layer_costs(spec, options, batch, target="cpu", recipe=recipe)
    n = len(table.layers) - 1
    cell = estimate_model(spec, options, SweepSettings((batch,), (n,), target="cpu", **recipe)).rows[0]
    assert cell.ok
    assert table.recipe.startswith(recipe.get("optimizer", "adamw"))
    assert sum(c.forward_flops for c in table.layers) == cell.forward_flops
    backward = sum(c.backward_input_flops + c.backward_weight_flops + c.backward_internal_flops for c in table.layers)
    assert backward == cell.backward_flops
    assert sum(c.recompute_flops for c in table.layers) == (cell.recompute_flops or 0)
    assert cell.recompute_flops > 0 if spec.startswith("paper") else True  # ResNet blocks recompute their convs
    # what training adds: the trainable parameters' gradients (float32) and their optimizer state, to the byte
    assert sum(c.trainable_bytes for c in table.layers) == cell.optimizer_state_bytes + 4 * cell.trainable_params


CONVS = """
from torch import nn

def convs():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Conv2d(8, 8, 3, padding=1, bias=False),
                         nn.Flatten(), nn.Linear(8 * 8 * 8, 4, bias=False))
"""


def test_convolutions_split_backward_into_input_and_weight_gradients(tmp_path: Path) -> None:
    """Part by part, by hand (issue 40: a convolution's input gradient counted as its weight gradient doubled the
    weight column and made the inside one negative, the sums unchanged). A 3x3 convolution at batch 2 on 8x8: 2 x
    batch x C_out x 64 positions x C_in x 9 FLOPs forward, as many for each of its two gradients."""
    (tmp_path / "convs.py").write_text(CONVS)
    table = layer_costs(f"{tmp_path / 'convs.py'}:convs", ModelOptions(input_shape=(3, 8, 8), num_classes=4), 2)
    first, second, head = table.layers[0], table.layers[1], table.layers[2]
    assert first.forward_flops == 2 * 2 * 8 * 64 * 3 * 9 == 55_296
    assert (first.backward_weight_flops, first.backward_input_flops, first.backward_internal_flops) == (55_296, 0, 0)
    assert second.forward_flops == 2 * 2 * 8 * 64 * 8 * 9 == 147_456
    assert (second.backward_weight_flops, second.backward_input_flops, second.backward_internal_flops) == (
        147_456, 147_456, 0,
    )  # fmt: skip
    assert head.backward_weight_flops == head.backward_input_flops == 2 * 2 * 512 * 4


SMALL_MLP = ModelOptions(input_shape=(16,), num_classes=10, overrides={"width": 32, "depth": 2, "features": 16})


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_per_layer_bytes_under_lora_and_checkpointing_equal_the_cpu_tracker(optimizer: str) -> None:
    """mlp(width=32, depth=2, features=16): Linear 16->32, two residual blocks (LayerNorm, Linear 32->32), head
    32->10, LoRA r=4 in every Linear. Adapters A (4 x in) and B (out x 4): 64 + 128, 128 + 128 and 128 + 40
    parameters. AdamW keeps two float32 moments and a float32 step per tensor, SGD one momentum buffer; the
    totals are the real optimizer's after a real step on the CPU (the tracker), to the byte."""
    import torch

    from layerprof.measure.cells import CellContext, run_cell
    from layerprof.sources.models import build_model

    recipe = {"adapter": "lora", "adapter_rank": 4, "checkpointing": "trainable", "optimizer": optimizer}
    spec = f"{EXAMPLE}:mlp"
    table = layer_costs(spec, SMALL_MLP, 4, target="cpu", recipe=recipe)
    first, block, _, head, outside = table.layers
    assert [c.adapter_params for c in table.layers] == [192, 256, 256, 168, 0]
    assert [c.trainable_params for c in table.layers] == [192, 256, 256, 168, 0]
    assert first.gradient_bytes == 192 * 4 and head.gradient_bytes == 168 * 4
    per_tensor_state = {"adamw": (8, 4), "sgd": (4, 0)}[optimizer]  # bytes per parameter, bytes per tensor
    assert block.optimizer_state_bytes == per_tensor_state[0] * 256 + 2 * per_tensor_state[1]
    assert block.trainable_bytes == block.gradient_bytes + block.optimizer_state_bytes
    # each adapter's FLOPs in its own layer (issue 34: a Linear layer's adapters were hooked outside it, since PEFT
    # wraps the very module that is the layer): forward 2 x batch x in x out per product
    assert first.forward_flops == 2 * 4 * (16 * 32 + 16 * 4 + 4 * 32) and outside.forward_flops == 0
    assert all(c.backward_internal_flops >= 0 for c in table.layers)
    # checkpointing: each layer's forward again in backward, up to the last tensor it saved: the base Linear and
    # adapter A; adapter B's output is saved by nothing, and non-reentrant checkpointing stops before it
    assert block.recompute_flops == 2 * 4 * (32 * 32 + 32 * 4) and outside.recompute_flops == 0
    assert table.checkpointing and "recompute GF" in layer_costs_view(table).markdown()
    # the real step on the CPU: the optimizer's state after the step, its parameters and recompute FLOPs
    real = build_model(spec, SMALL_MLP)
    layers = real.split()
    settings = SweepSettings((4,), (4,), warmup_steps=1, min_steps=1, max_steps=1, target="cpu", **recipe)
    measured, _ = run_cell(CellContext(real, layers, settings, torch.device("cpu")), 4, len(layers))
    assert measured.ok, measured.message
    assert measured.trainable_params == sum(c.trainable_params for c in table.layers) == 872
    assert measured.optimizer_state_bytes == sum(c.optimizer_state_bytes for c in table.layers)
    assert sum(c.gradient_bytes for c in table.layers) == 872 * 4  # the tracker's peak falls before the first's
    assert measured.recompute_flops == sum(c.recompute_flops for c in table.layers)
