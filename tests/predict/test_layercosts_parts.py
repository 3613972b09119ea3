"""Per-layer costs part by part (issue 40, `make mutate` survivors): which row a saved tensor lands in (the
layer running, the row outside every layer between layers and for the loss, a tensor saved twice counted once,
parameters never), a convolution at batch 1, an attention's backward, and the CSV's rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerprof.errors import LayerprofError
from layerprof.parsing import MAX_BATCH_SIZE
from layerprof.predict.layercosts import OUTSIDE, LayerCost, LayerCostTable, layer_costs
from layerprof.sources.models import ModelOptions

TWO_LINEARS = """
import torch.nn.functional as F
from torch import nn


def two_linears():
    return nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))


def one_conv():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 4 * 4, 2, bias=False))


class Attend(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(8, 24, bias=False)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, 2, 4).unbind(2)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2).reshape(b, t, 8)


def attend():
    return nn.Sequential(Attend(), nn.Flatten(), nn.Linear(4 * 8, 2, bias=False))


def two_convs():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.Conv2d(4, 4, 3, padding=1, bias=False),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 2, bias=False),
    )


def normed():
    return nn.Sequential(nn.Linear(4, 4, bias=False), nn.LayerNorm(4), nn.Linear(4, 2, bias=False))


def tied():
    first, last = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
    last.weight = first.weight
    return nn.Sequential(first, nn.ReLU(), last)
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("layercosts") / "models.py"
    path.write_text(TWO_LINEARS)
    return path


@pytest.fixture(scope="module")
def table(models: Path) -> LayerCostTable:
    return layer_costs(f"{models}:two_linears", ModelOptions(input_shape=(4,), num_classes=2), 2)


def test_saved_activations_land_in_the_row_of_the_layer_or_outside_every_layer(table: LayerCostTable) -> None:
    """Batch 2, float32. Linear 4->3 saves its input (2 x 4 x 4 = 32 bytes; its weight is a parameter: not an
    activation). The ReLU between the layers is no layer: its output (2 x 3 x 4 = 24) is saved outside every layer.
    Linear 3->2 saves its input, the ReLU's output, already counted: 0. The loss saves log-softmax's output
    (2 x 2 x 4 = 16), the int64 targets (2 x 8 = 16) and nll_loss's total weight (4): outside, 24 + 36 = 60."""
    first, second, outside = table.layers
    assert (first.name, second.name, outside.index) == ("0", "2", OUTSIDE)
    assert [row.saved_activation_bytes for row in table.layers] == [32, 0, 60]
    assert [row.forward_flops for row in table.layers] == [2 * 2 * 4 * 3, 2 * 2 * 3 * 2, 0]
    assert [row.output_bytes for row in table.layers] == [24, 16, 0]
    assert (first.backward_input_flops, second.backward_input_flops, second.backward_weight_flops) == (0, 24, 24)
    assert (table.recipe, table.checkpointing) == ("adamw", False)
    assert (table.batch_size, table.precision, table.target) == (2, "32-true", "cuda")
    assert table.model.endswith("models.py:two_linears")


def test_a_convolution_at_batch_one_splits_its_backward(models: Path) -> None:
    """The output mask is convolution_backward's last argument (its second, the input, has one row at batch 1).
    A 3x3 convolution 3->4 on 4x4 at batch 1: 2 x 1 x 4 x 16 x 3 x 9 = 3,456 FLOPs forward, as many for its
    weight gradient, none for its input's (the lowest layer)."""
    table = layer_costs(f"{models}:one_conv", ModelOptions(input_shape=(3, 4, 4), num_classes=2), 1)
    conv, head = table.layers[0], table.layers[1]
    assert (conv.forward_flops, conv.backward_weight_flops, conv.backward_input_flops) == (3_456, 3_456, 0)
    assert (head.forward_flops, head.backward_weight_flops, head.backward_input_flops) == (256, 256, 256)


def test_an_attention_layers_backward_is_inside_it_not_a_weight_gradient(models: Path) -> None:
    """Batch 2, 4 tokens of 8 features, 2 heads of 4. The qkv Linear 8->24: 2 x 8 x 8 x 24 = 3,072 FLOPs forward
    and as many for its weight gradient. The attention (on the CUDA target, one fused kernel each way): QK^T and AV,
    2 x 2 x 2 x 4 x 4 x 4 = 512 each, 1,024 forward, 2,048 backward, all of it inside the layer."""
    table = layer_costs(f"{models}:attend", ModelOptions(input_shape=(4, 8), num_classes=2), 2, target="cuda")
    attention = table.layers[0]
    assert attention.forward_flops == 3_072 + 1_024
    split = (attention.backward_weight_flops, attention.backward_internal_flops, attention.backward_input_flops)
    assert split == (3_072, 2_048, 0)


def test_a_batch_size_out_of_range_is_refused_before_the_model_is_built(models: Path) -> None:
    """`layers --costs --batch-size 99999999999` printed figures (issue 40); the library function refuses it."""
    spec = f"{models}:two_linears"
    with pytest.raises(LayerprofError, match="^--batch-size must be at least 1, got 0$"):
        layer_costs(spec, ModelOptions(input_shape=(4,), num_classes=2), 0)
    with pytest.raises(LayerprofError, match="^--batch-size 16,777,217 is beyond the largest this takes, 16,777,216$"):
        layer_costs(spec, ModelOptions(input_shape=(4,), num_classes=2), MAX_BATCH_SIZE + 1)


def test_a_checkpointing_recipe_is_recorded_in_the_table(models: Path) -> None:
    options = ModelOptions(input_shape=(4,), num_classes=2)
    table = layer_costs(f"{models}:two_linears", options, 2, recipe={"checkpointing": "trainable"})
    assert table.checkpointing is True and "checkpointing" in table.recipe


def test_a_tied_weight_trains_with_the_last_layer_holding_it(models: Path) -> None:
    """One 4x4 weight in the first and the last layer: its gradient (64 bytes) and AdamW state (two moments, 128,
    and a step, 4) are the last layer's, the first to train; the first layer adds nothing when it trains too."""
    table = layer_costs(f"{models}:tied", ModelOptions(input_shape=(4,), num_classes=4), 2)
    assert [row.trainable_bytes for row in table.layers] == [0, 64 + 128 + 4, 0]
    assert [row.trainable_params for row in table.layers] == [0, 16, 0]


def test_a_compiled_recipe_is_refused(models: Path) -> None:
    """Per-layer costs trace the eager step on fake tensors: torch.compile is measured only."""
    with pytest.raises(LayerprofError, match="^--compile is measured only"):
        layer_costs(
            f"{models}:two_linears",
            ModelOptions(input_shape=(4,), num_classes=2),
            2,
            recipe={"compile_mode": "default"},
        )


def test_the_csv_has_a_row_per_layer_and_the_row_outside_every_layer(tmp_path: Path) -> None:
    table = LayerCostTable(
        model="m",
        batch_size=2,
        precision="32-true",
        target="cuda",
        layers=[LayerCost(0, "fc", "Linear", 12, forward_flops=48), LayerCost(OUTSIDE, "outside", "", 0)],
    )
    lines = table.csv().splitlines()
    assert lines[0].startswith("index,name,type,params,trainable_bytes,")
    assert lines[1:] == ["0,fc,Linear,12,0,0,0,0,0,48,0,0,0,0,0,0", "-1,outside,,0,0,0,0,0,0,0,0,0,0,0,0,0"]
    table.save(tmp_path / "costs.json")
    assert (tmp_path / "costs.csv").read_text() == table.csv()


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize(("target", "norm_bytes"), [("cuda", 4), ("cpu", 2)])
def test_mixed_precision_follows_the_targets_autocast(
    models: Path, precision: str, target: str, norm_bytes: int
) -> None:
    """CUDA's autocast runs layer_norm in float32, the CPU's in the lower precision: the LayerNorm's output (2 x 4
    elements) and what it saves (its input, cast to float32 on CUDA, and mean and rstd: 8 + 2 + 2 elements) take
    4 bytes an element on the CUDA target, 2 on the CPU (mutants 76-78 traced both targets alike). The Linear layers
    run in the lower precision on both: their outputs 2 x 4 and 2 x 2 elements of 2 bytes."""
    options = ModelOptions(input_shape=(4,), num_classes=2)
    table = layer_costs(f"{models}:normed", options, 2, precision=precision, target=target)
    assert [row.output_bytes for row in table.layers] == [16, 8 * norm_bytes, 8, 0]
    assert table.layers[1].saved_activation_bytes == 12 * norm_bytes


def test_a_convolution_that_passes_its_gradient_down_splits_its_backward(models: Path) -> None:
    """The second 3x3 convolution 4->4 on 4x4 at batch 1: 2 x 4 x 16 x 4 x 9 = 4,608 FLOPs forward, as many for its
    weight gradient and as many for the gradient it passes down to the first; nothing inside (mutant 53 counted
    the input's gradient as the weight's too: 9,216, and -4,608 inside)."""
    table = layer_costs(f"{models}:two_convs", ModelOptions(input_shape=(3, 4, 4), num_classes=2), 1)
    second = table.layers[1]
    assert (second.forward_flops, second.backward_weight_flops, second.backward_input_flops) == (4_608, 4_608, 4_608)
    assert second.backward_internal_flops == 0


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_a_mixed_precision_backward_splits_as_a_full_precision_one(models: Path, precision: str) -> None:
    """Autocast multiplies by a lower-precision copy of the weight: the last Linear's product with it is the gradient
    passed down (2 x 2 x 2 x 4 = 32 FLOPs), its product with the input the weight's gradient (32), nothing inside;
    the first Linear passes nothing down and its weight's gradient is 2 x 4 x 2 x 4 = 64. Before the copy was known
    as the weight, mixed precision counted both products as the weight's (64, and -32 inside)."""
    table = layer_costs(f"{models}:normed", ModelOptions(input_shape=(4,), num_classes=2), 2, precision=precision)
    splits = [
        (row.backward_input_flops, row.backward_weight_flops, row.backward_internal_flops) for row in table.layers
    ]
    assert splits == [(0, 64, 0), (0, 0, 0), (32, 32, 0), (0, 0, 0)]
