"""Freezing to z: only the last z layers learn, and the graph never crosses the boundary."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from layerprof.measure.cells import CellContext, run_cell
from layerprof.profile import SweepSettings, total_params, trainable_params
from layerprof.sources.layers import freeze_layers, split_layers
from layerprof.sources.models import LoadedModel, ModelOptions, build_model
from layerprof.sources.workloads import Workload
from tests.conftest import linear_stack


@pytest.mark.parametrize("trainable_layers", [1, 2, 4])
def test_frozen_layers_get_no_gradient_and_do_not_change(trainable_layers: int) -> None:
    model = linear_stack(depth=4)
    layers = split_layers(model, run_forward=lambda m: m(torch.randn(2, 32)))
    frozen = freeze_layers(model, layers, trainable_layers)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(8, 32)).pow(2).mean().backward()
    first_trainable = 4 - trainable_layers
    for index, param in enumerate(model.parameters()):
        assert (param.grad is not None) == (index >= first_trainable)
    optimizer.step()
    for index, (param, old) in enumerate(zip(model.parameters(), before, strict=True)):
        assert torch.equal(param, old) == (index < first_trainable)
    frozen.remove()


def test_out_of_range_z_is_rejected() -> None:
    model = linear_stack(depth=3)
    layers = split_layers(model)
    with pytest.raises(ValueError, match="1..3"):
        freeze_layers(model, layers, 0)
    with pytest.raises(ValueError, match="1..3"):
        freeze_layers(model, layers, 4)


def test_tied_embedding_prefix_builds_no_graph() -> None:
    loaded = build_model("paper-gpt-14m", device="cpu")
    loaded.model.max_seq_length = 8
    loaded.workload.seq_len = 8
    layers = loaded.split()
    model = loaded.model
    seen: dict[str, bool] = {}
    model.transformer.h[0].register_forward_hook(lambda m, a, out: seen.__setitem__("block0", out.requires_grad))
    model.transformer.ln_f.register_forward_hook(lambda m, a, out: seen.__setitem__("ln_f", out.requires_grad))
    frozen = freeze_layers(model, layers, 1)  # only lm_head, whose weight is the embedding's
    assert model.transformer.wte.weight.requires_grad  # the tied tensor trains
    batch = loaded.workload.make_batch(2, torch.device("cpu"))
    loaded.workload.loss(model, batch).backward()
    assert seen == {"block0": False, "ln_f": False}  # nothing before the head records a graph
    frozen.remove()
    # with every layer trainable the embedding output is part of the graph again
    frozen = freeze_layers(model, layers, len(layers))
    loaded.workload.loss(model, batch).backward()
    assert seen == {"block0": True, "ln_f": True}
    frozen.remove()


def test_remove_restores_an_uncut_graph() -> None:
    model = linear_stack(depth=3)
    layers = split_layers(model)
    frozen = freeze_layers(model, layers, 1)
    frozen.remove()
    for param in model.parameters():
        param.requires_grad_(True)
    model(torch.randn(2, 32)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


class PositionBeforeBlocks(nn.Module):
    """ViT's shape: a parameter of the model itself is added after the stem, before the first block, and so
    joins that block (the layer that runs next after its first use)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.position = nn.Parameter(torch.zeros(4))
        self.blocks = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x) + self.position)


def test_a_parameter_used_just_before_the_boundary_layer_gets_its_gradient() -> None:
    model = PositionBeforeBlocks()
    layers = split_layers(model, run_forward=lambda m: m(torch.randn(2, 4)))
    assert [layer.name for layer in layers] == ["stem", "blocks.0", "blocks.1"]
    assert layers[1].parameter_names == ("blocks.0.weight", "blocks.0.bias", "position")
    frozen = freeze_layers(model, layers, 2)  # blocks.0 is the boundary; `position` trains with it
    model(torch.randn(3, 4)).sum().backward()
    with_gradient = sorted(name for name, p in model.named_parameters() if p.grad is not None)
    # a cut at the boundary layer's inputs left `position` trainable but without a gradient
    assert with_gradient == ["blocks.0.bias", "blocks.0.weight", "blocks.1.bias", "blocks.1.weight", "position"]
    frozen.remove()


def test_an_input_that_requires_grad_gets_none_through_the_frozen_prefix() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    layers = split_layers(model, run_forward=lambda m: m(torch.randn(2, 4)))
    frozen = freeze_layers(model, layers, 2)
    x = torch.randn(3, 4, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is None  # the backward pass stops where the frozen prefix ends
    assert model[1].weight.grad is not None
    frozen.remove()


class AttributeDict(dict):
    """A layer output read by attribute, as Hugging Face's ModelOutput is."""

    __getattr__ = dict.__getitem__


class NamedOutputLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> AttributeDict:
        return AttributeDict(hidden=self.proj(x), attentions=None)  # as a ModelOutput leaves unasked fields


class ReadsByAttribute(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = NamedOutputLayer()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).hidden)


def test_a_frozen_layer_output_that_carries_no_graph_keeps_its_type() -> None:
    model = ReadsByAttribute()
    layers = split_layers(model, run_forward=lambda m: m(torch.randn(2, 4)))
    frozen = freeze_layers(model, layers, 1)
    model(torch.randn(3, 4)).sum().backward()  # a plain dict in its place has no `.hidden`
    assert model.head.weight.grad is not None and model.encoder.proj.weight.grad is None
    frozen.remove()


def test_a_workload_that_calls_only_the_parts_gets_a_cut_at_every_frozen_call() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    layers = split_layers(model, run_forward=lambda m: m(torch.randn(2, 4)))
    frozen = freeze_layers(model, layers, 2)
    x = torch.randn(3, 4, requires_grad=True)
    first = model[0](x)  # the model itself is never called
    model[1](first)
    again = model[0](x)  # after the boundary layer ran, the frozen layer is still cut
    assert (first.requires_grad, again.requires_grad) == (False, False)
    frozen.remove()
    assert model[0](x).requires_grad  # no cut once removed


class WithMask(nn.Module):
    """A layer returning its hidden state with a mask that carries no graph, as a tuple or as a dict."""

    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.as_dict = as_dict

    def forward(self, x: torch.Tensor) -> object:
        hidden, mask = self.proj(x), torch.ones(x.shape[0], dtype=torch.bool)
        return {"hidden": hidden, "mask": mask} if self.as_dict else (hidden, mask)


class MaskedModel(nn.Module):
    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.encoder = WithMask(as_dict)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.encoder(x)
        hidden = out["hidden"] if isinstance(out, dict) else out[0]
        return self.head(hidden)


@pytest.mark.parametrize("as_dict", [False, True])
def test_a_frozen_output_is_cut_when_any_part_of_it_carries_a_graph(as_dict: bool) -> None:
    model = MaskedModel(as_dict)
    layers = split_layers(model, run_forward=lambda m: m(torch.randn(2, 4)))
    frozen = freeze_layers(model, layers, 1)
    x = torch.randn(3, 4, requires_grad=True)  # the hidden state carries a graph, the mask does not
    model(x).sum().backward()
    assert x.grad is None
    frozen.remove()


USER_FROZEN = str(Path(__file__).parents[2] / "examples" / "audit" / "user_frozen.py") + ":model"


def test_the_models_own_frozen_parameters_stay_frozen_at_every_z() -> None:
    """Issue 35: a factory freezing its stem, a middle block and the head's bias trains 1,376 of 2,986 parameters;
    layerprof used to train all 2,986 at full training."""
    loaded = build_model(USER_FROZEN, ModelOptions(input_shape=(16,), num_classes=10))
    layers = loaded.split()
    assert [layer.frozen_params for layer in layers] == [544, 0, 1056, 10]
    assert layers[3].frozen_names == ("head.bias",)
    assert total_params(layers) == 2986
    assert [trainable_params(layers, z) for z in (1, 2, 3, 4)] == [320, 320, 1376, 1376]
    for z in (1, 2, 3, 4):
        frozen = freeze_layers(loaded.model, layers, z)
        trained = {name for name, param in loaded.model.named_parameters() if param.requires_grad}
        assert trained == {"block1.weight", "block1.bias", "head.weight"} - (
            {"block1.weight", "block1.bias"} if z < 3 else set()
        )
        frozen.remove()
    # removing the freezing gives the user's own flags back, not those of the last z
    assert {n for n, p in loaded.model.named_parameters() if not p.requires_grad} == {
        "stem.weight", "stem.bias", "block2.weight", "block2.bias", "head.bias"
    }  # fmt: skip


def test_a_z_whose_layers_the_user_froze_whole_fails_its_cell_saying_so() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    model[2].requires_grad_(False)
    loaded = LoadedModel(
        "frozen-head", "user", "frozen-head", model, Workload("tensor-input", input_shape=(4,)), (), {}
    )
    layers = loaded.split()
    context = CellContext(loaded, layers, SweepSettings((2,), (1,), warmup_steps=1, min_steps=1, max_steps=1),
                          torch.device("cpu"))  # fmt: skip
    row, _ = run_cell(context, 2, 1)
    assert row.status == "error"
    assert (
        row.message
        == "LayerprofError: z=1 trains nothing: the model's own code froze every parameter of 2; choose a larger z"
    )
    assert run_cell(context, 2, 2)[0].status == "ok"


class TiedStack(nn.Module):
    """An embedding, two blocks and a head whose weight is the embedding's (as a language model ties them)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(16, 8)
        self.blocks = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
        self.head = nn.Linear(8, 16, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.embed(tokens)))


def test_the_cut_holds_at_every_step_not_only_the_first() -> None:
    """Each forward pass starts the frozen prefix anew: from the second step on, the blocks before a trainable
    head tied to the embedding must still build no graph (issue 40: a cut set up for the first pass only would
    change the measured time and memory of every later step)."""
    model = TiedStack()
    tokens = torch.randint(0, 16, (2, 4))
    layers = split_layers(model, run_forward=lambda m: m(tokens))
    assert [layer.name for layer in layers] == ["embed", "blocks.0", "blocks.1", "head"]
    seen: list[bool] = []
    model.blocks[1].register_forward_hook(lambda _m, _a, out: seen.append(out.requires_grad))
    frozen = freeze_layers(model, layers, 1)
    assert model.embed.weight.requires_grad  # tied into the trainable head
    for _ in range(3):
        model(tokens).logsumexp(-1).mean().backward()
    assert seen == [False, False, False]
    assert model.blocks[0].weight.grad is None and model.embed.weight.grad is not None
    frozen.remove()
