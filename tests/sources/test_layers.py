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


def test_unwrap_by_name_matches_a_class_defined_inside_a_function() -> None:
    class LocalBlock(nn.Module):  # its __qualname__ is "test_...<locals>.LocalBlock", its __name__ "LocalBlock"
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x))

    model = nn.Sequential(nn.Linear(4, 4), LocalBlock())
    layers = split_layers(model, unwrap=["LocalBlock"], run_forward=lambda m: m(torch.randn(2, 4)))
    assert [layer.name for layer in layers] == ["0", "1.a", "1.b"]


def test_tracing_leaves_no_hook_on_the_model() -> None:
    model = HeadFirst()
    split_layers(model, run_forward=lambda m: m(torch.randn(2, 4)))
    assert [name for name, module in model.named_modules() if module._forward_pre_hooks] == []


def test_tracing_leaves_batch_norm_statistics_and_modes_as_they_were() -> None:
    """The traced forward runs batch norm in eval mode (no batch statistics: on meta they cost half a ResNet's
    trace): a real model's running statistics and step count stay untouched, each norm keeps its own mode (one
    training, one in eval, one tracking no statistics), and the split is the one the forward order gives."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.Conv2d(4, 4, 3),
        nn.BatchNorm2d(4),
        nn.BatchNorm2d(4, track_running_stats=False),
    )
    model[3].eval()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    layers = split_layers(model, run_forward=lambda m: m(torch.randn(2, 1, 8, 8)))
    assert [layer.name for layer in layers] == ["0", "1", "2", "3", "4"]
    assert [module.training for module in model] == [True, True, True, False, True]
    after = model.state_dict()
    assert all(torch.equal(after[name], value) for name, value in before.items()), "the trace changed the model"
    assert int(after["1.num_batches_tracked"]) == 0


def test_registration_order_counts_every_layer_as_run_once() -> None:
    layers = split_layers(HeadFirst())  # no forward pass given
    assert [(layer.name, layer.calls) for layer in layers] == [("head", 1), ("body.0", 1), ("body.2", 1)]


class Detour(nn.Module):
    """`spare` never runs; `position` is added after `a` ran, so it joins `b`."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.spare = nn.Linear(4, 4)
        self.position = nn.Parameter(torch.zeros(4))
        self.b = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x) + self.position)


def test_a_layer_that_never_runs_is_placed_first_and_shifts_nothing_else() -> None:
    with pytest.warns(SplitWarning, match="never ran in the traced forward pass are placed first: spare"):
        layers = split_layers(Detour(), run_forward=lambda m: m(torch.randn(2, 4)))
    assert [layer.name for layer in layers] == ["spare", "a", "b"]
    assert layers[2].parameter_names == ("b.weight", "b.bias", "position")
    assert [layer.params for layer in layers] == [20, 20, 14]  # 4*4+4, 4*4+4, 4*2+2 + 4


class Temperature(nn.Module):
    """A parameter of its own used after the last layer ran (a logit temperature)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)
        self.temperature = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)) / self.temperature


def test_a_parameter_used_after_the_last_layer_joins_the_last_layer() -> None:
    layers = split_layers(Temperature(), run_forward=lambda m: m(torch.randn(2, 4)))
    assert [(layer.name, layer.params) for layer in layers] == [("body", 20), ("head", 16)]  # 4*3+3 + 1
    assert layers[-1].parameter_names == ("head.weight", "head.bias", "temperature")


class Gained(nn.Module):
    """Unwrapped: holds a parameter of its own and two layers."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(4))
        self.first = nn.Linear(4, 4)
        self.second = nn.Linear(4, 4)


class Offset(nn.Module):
    """Unwrapped: holds only a parameter, no layer."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = nn.Parameter(torch.zeros(3))


class Holder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.body = Gained()
        self.shift = Offset()


def test_without_a_trace_container_parameters_join_the_first_layer_inside_else_the_first_layer() -> None:
    layers = split_layers(Holder(), unwrap=[Gained, Offset])  # no forward: registration order
    assert [layer.name for layer in layers] == ["stem", "body.first", "body.second"]
    assert layers[0].parameter_names == ("stem.weight", "stem.bias", "shift.offset")
    assert layers[1].parameter_names == ("body.first.weight", "body.first.bias", "body.gain")
    assert [layer.params for layer in layers] == [23, 24, 20]


class Twin(nn.Module):
    """One Linear registered under two names, then a second Linear: a leaf that holds a tensor twice."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = self.a
        self.c = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.b(self.a(x)))


def test_a_tensor_a_layer_holds_under_two_names_counts_once() -> None:
    model = nn.Sequential(nn.Linear(4, 4), Twin())
    layers = split_layers(model, run_forward=lambda m: m(torch.randn(2, 4)))
    twin = layers[1]
    assert twin.parameter_names == ("1.a.weight", "1.a.bias", "1.b.weight", "1.b.bias", "1.c.weight", "1.c.bias")
    assert twin.params == 30  # 4*4+4 once, then 4*2+2
    assert twin.new_trainable_params == 30 and twin.shared_with == ()
    assert total_params(layers) == 50


def test_a_layer_with_two_batchnorms_is_named_once() -> None:
    from layerprof.sources.layers import batchnorm_layers

    block = nn.Sequential(nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    model = nn.Sequential(nn.Conv2d(3, 4, 3), Pair(block))
    layers = split_layers(model, run_forward=lambda m: m(torch.randn(1, 3, 5, 5)))
    assert [layer.name for layer in layers] == ["0", "1"]
    assert batchnorm_layers(model, layers) == ["1"]


class Pair(nn.Module):
    """A leaf wrapping a block (not descended into)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class PlainTransformer(nn.Module):
    """A plain PyTorch text classifier: embedding, nn.TransformerEncoder of 3 layers (with a final norm), head."""

    def __init__(self, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, width)
        block = nn.TransformerEncoderLayer(width, nhead=2, dim_feedforward=32, batch_first=True)
        self.encoder = nn.TransformerEncoder(block, depth, norm=nn.LayerNorm(width), enable_nested_tensor=False)
        self.head = nn.Linear(width, 4)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(1))


def test_a_torch_transformer_encoder_splits_into_its_blocks_without_unwrap() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: nothing left to unwrap
        layers = split_layers(PlainTransformer(), run_forward=lambda m: m(torch.randint(0, 50, (2, 5))))
    names = [layer.name for layer in layers]
    assert names == ["embed", "encoder.layers.0", "encoder.layers.1", "encoder.layers.2", "encoder.norm", "head"]
    assert [layer.type for layer in layers][1:4] == ["TransformerEncoderLayer"] * 3
    assert total_params(layers) == sum(p.numel() for p in PlainTransformer().parameters())


class Blocks(nn.Module):
    """A user's own encoder class: a ModuleList of alike blocks that is not a torch stack layerprof knows."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(32, 32) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class OwnEncoderModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(8, 32)
        self.encoder = Blocks()
        self.head = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.stem(x)))


def test_a_layer_holding_most_parameters_in_alike_blocks_names_the_unwrap_that_splits_it() -> None:
    def forward(model: nn.Module) -> None:
        model(torch.randn(2, 8))

    with pytest.warns(SplitWarning) as caught:
        layers = split_layers(OwnEncoderModel(), run_forward=forward)
    assert [layer.name for layer in layers] == ["stem", "encoder", "head"]
    assert [str(w.message) for w in caught] == [
        "layer encoder (Blocks) holds 92% of the parameters in 4 alike Linear blocks; --unwrap Blocks splits it "
        "into them (in Python: unwrap=['Blocks'])"
    ]  # 4 x 1,056 of 4,578 parameters
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layers = split_layers(OwnEncoderModel(), unwrap=["Blocks"], run_forward=forward)
    assert len(layers) == 6


def test_the_paper_models_and_torchvision_split_without_an_unwrap_hint() -> None:
    for spec in ("paper-resnet18-cifar100", "paper-gpt-14m", "vit_b_16", "alexnet"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", SplitWarning)
            meta_split(spec)
