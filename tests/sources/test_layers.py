"""The split: Algorithm 1 in forward order, container parameters adopted, tied weights, --unwrap."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from layerprof.sources.layers import SplitWarning, split_layers, total_params, trainable_params
from layerprof.sources.models import ModelOptions, build_model


def meta_split(spec: str, **options: object) -> list:
    return build_model(spec, ModelOptions(**options), device="meta").split()


def test_resnet18_splits_into_eleven_named_layers() -> None:
    layers = meta_split("resnet18")
    assert [layer.name for layer in layers] == [
        "conv1", "bn1", "layer1.0", "layer1.1", "layer2.0", "layer2.1",
        "layer3.0", "layer3.1", "layer4.0", "layer4.1", "fc",
    ]  # fmt: skip
    assert [layer.type for layer in layers][2:10] == ["BasicBlock"] * 8
    assert total_params(layers) == 11_689_512  # torchvision's documented ResNet-18 size


def test_litgpt_layers_run_in_forward_order_not_registration_order() -> None:
    model = build_model("pythia-14m", device="meta").model
    assert next(iter(model.named_children()))[0] == "lm_head"  # LitGPT registers the head first
    layers = meta_split("pythia-14m")
    names = [layer.name for layer in layers]
    assert names == ["transformer.wte", *(f"transformer.h.{i}" for i in range(6)), "transformer.ln_f", "lm_head"]


def test_pythia_1_4b_splits_into_27_layers_on_meta_without_memory() -> None:
    layers = meta_split("pythia-1.4b")
    assert len(layers) == 27
    # the Pythia paper (Biderman et al. 2023, Table 1) and EleutherAI's model card: 1,414,647,808 parameters
    assert total_params(layers) == 1_414_647_808
    assert [layer.params for layer in layers[1:25]] == [50_358_272] * 24  # 12 d^2 + 13 d per block, d = 2048


def test_tied_embeddings_are_shared_and_counted_once() -> None:
    layers = meta_split("paper-gpt-14m")
    wte, head = layers[0], layers[-1]
    assert head.shared_with == ("transformer.wte",) and wte.shared_with == ("lm_head",)
    # the tied tensor turns trainable with the head, so the embedding adds nothing new at z = n
    assert wte.new_trainable_params == 0
    assert trainable_params(layers, 1) == head.params
    assert trainable_params(layers, len(layers) - 1) == trainable_params(layers, len(layers))
    model = build_model("paper-gpt-14m", device="meta").model
    assert total_params(layers) == sum(p.numel() for p in model.parameters())


def test_parameters_on_an_unwrapped_container_join_the_layer_that_runs_next() -> None:
    layers = meta_split("vit_b_16")
    by_name = {layer.name: layer for layer in layers}
    first_block = by_name["encoder.layers.encoder_layer_0"]
    assert "class_token" in first_block.parameter_names
    assert "encoder.pos_embedding" in first_block.parameter_names
    model = build_model("vit_b_16", device="meta").model
    assert total_params(layers) == sum(p.numel() for p in model.parameters())


class HeadFirst(nn.Module):
    """Registers its head before its body and holds a parameter of its own: both must be handled."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 2)
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
        self.scale = nn.Parameter(torch.ones(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x) * self.scale)


def test_custom_model_order_and_own_parameter() -> None:
    model = HeadFirst()
    layers = split_layers(model, run_forward=lambda m: m(torch.randn(2, 4)))
    assert [layer.name for layer in layers] == ["body.0", "body.2", "head"]
    # `scale` is used after body.2 ran, before head: it joins the head
    assert "scale" in layers[-1].parameter_names
    assert total_params(layers) == sum(p.numel() for p in model.parameters())


def test_without_a_trace_registration_order_is_used_with_a_warning() -> None:
    model = HeadFirst()

    def broken(_model: nn.Module) -> None:
        raise RuntimeError("no forward here")

    with pytest.warns(SplitWarning, match="registration order"):
        layers = split_layers(model, run_forward=broken)
    assert [layer.name for layer in layers][0] == "head"


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(torch.relu(self.a(x)))


class Wrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Block()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_single_layer_split_warns_and_unwrap_descends() -> None:
    with pytest.warns(SplitWarning, match="--unwrap"):
        assert len(split_layers(Wrapper(), run_forward=lambda m: m(torch.randn(2, 4)))) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layers = split_layers(Wrapper(), unwrap=["Block"], run_forward=lambda m: m(torch.randn(2, 4)))
    assert [layer.name for layer in layers] == ["inner.a", "inner.b"]
    layers = split_layers(Wrapper(), unwrap=[Block], run_forward=lambda m: m(torch.randn(2, 4)))
    assert len(layers) == 2


def test_layer_round_trips_through_dict() -> None:
    from layerprof.sources.layers import Layer

    for layer in meta_split("paper-gpt-14m"):
        assert Layer.from_dict(layer.to_dict()) == layer
