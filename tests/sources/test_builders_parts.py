"""builders.py part by part (issue 40's mutation survivors): each builder called directly with a spec that differs
from the name it resolved, on the meta device where the model is big; each refusal at its edge (the last good value
beside the first bad one) with its one-line message; how `construct` places a model's tensors; the lazy imports
that keep Lightning out of a LitGPT build; a user factory's arguments, its checks and what it may return."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
import textwrap
import warnings
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch
from torch import nn

from layerprof.errors import LayerprofError, ModelWarning, SplitWarning
from layerprof.sources import builders
from layerprof.sources.builders import (
    LoadedModel,
    build_hf,
    build_litgpt,
    build_preset,
    build_timm,
    build_torchvision,
    build_user,
    call_factory,
    construct,
    load_factory,
    typed_overrides,
)
from layerprof.sources.names import ModelOptions
from layerprof.sources.workloads import CustomWorkload, Workload
from tests.sources.test_registry import HF_TINY

META = torch.device("meta")
CPU = torch.device("cpu")


# ---------------------------------------------------------------- LoadedModel.split


class Backwards(nn.Module):
    """Two layers registered in the reverse of the order the forward pass runs them."""

    def __init__(self) -> None:
        super().__init__()
        self.second = nn.Linear(3, 2)
        self.first = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


def backwards_loaded(forward_fails: bool = False) -> tuple[LoadedModel, list[tuple[int, torch.device]]]:
    """A LoadedModel of `Backwards` whose batches record their size and device."""
    made: list[tuple[int, torch.device]] = []

    def make_batch(batch_size: int, device: torch.device) -> torch.Tensor:
        made.append((batch_size, device))
        return torch.randn(batch_size, 4, device=device)

    def loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        if forward_fails:
            raise RuntimeError("no forward here")
        return model(batch).sum()

    model = Backwards()
    custom = CustomWorkload(model=model, make_batch=make_batch, loss=loss)
    workload = Workload(family="custom", custom=custom)
    return LoadedModel("spec", "user", "name", model, workload, (), {}), made


def test_a_split_runs_one_forward_pass_on_a_batch_of_two_and_keeps_its_order() -> None:
    loaded, made = backwards_loaded()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "never ran" warning: the loss ran the model
        layers = loaded.split()
    assert [layer.name for layer in layers] == ["first", "second"]
    assert made == [(2, CPU)]
    assert (loaded.order, loaded.order_reason) == ("forward", "")


def test_a_split_whose_forward_fails_falls_back_to_registration_order_unless_a_trace_is_required() -> None:
    loaded, _ = backwards_loaded(forward_fails=True)
    with pytest.warns(SplitWarning, match="could not trace a forward pass"):
        layers = loaded.split()
    assert [layer.name for layer in layers] == ["second", "first"]
    assert (loaded.order, loaded.order_reason) == ("registration", "RuntimeError: no forward here")
    with pytest.warns(SplitWarning, match="could not trace a forward pass"):
        assert loaded.trace().order == "registration"  # the same, asked for the order too
    with pytest.raises(Exception, match="RuntimeError: no forward here"):
        loaded.split(trace_required=True)


# ---------------------------------------------------------------- the lazy imports of LitGPT


def test_a_deferred_module_imports_the_real_one_when_a_function_is_called_not_when_it_is_looked_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "lp_deferred_probe.py").write_text("def double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    name = "lp_deferred_probe"
    stand_in = builders._deferred_module(name, ("double",))
    monkeypatch.setitem(sys.modules, name, stand_in)
    double = stand_in.double  # looked up: nothing imported yet
    assert not hasattr(stand_in, "__path__")  # the import system's questions import nothing either
    assert sys.modules[name] is stand_in
    assert double(21) == 42
    real = sys.modules[name]
    assert real is not stand_in and real.double(4) == 8
    assert stand_in.double(5) == 10  # later calls go to the real module as well


class FakeLoader:
    """A loader that records its runs, standing in for litgpt's `__init__` (which imports Lightning)."""

    def __init__(self) -> None:
        self.runs = 0

    def create_module(self, spec: object) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        self.runs += 1
        module.LLM = "the API"  # type: ignore[attr-defined]


def test_the_litgpt_package_is_registered_unexecuted_and_runs_its_init_on_first_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    builders.litgpt_classes()  # litgpt registered as a build registers it: put back after the test
    loader = FakeLoader()
    spec = importlib.util.spec_from_loader("litgpt", loader)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: spec if n == "litgpt" else real_find_spec(n, *a))
    monkeypatch.delitem(sys.modules, "litgpt")
    builders.litgpt_classes()  # its modules are there already: only the package is registered, unexecuted
    package = sys.modules["litgpt"]
    assert loader.runs == 0 and package.__name__ == "litgpt" and package.__spec__ is spec
    assert not hasattr(package, "__wrapped__")  # a dunder question runs nothing
    assert loader.runs == 0
    assert package.LLM == "the API" and loader.runs == 1  # the first other use runs the package's __init__
    assert package.LLM == "the API" and loader.runs == 1  # once
    builders._litgpt_package()  # registered already: left as it is
    assert sys.modules["litgpt"] is package and loader.runs == 1


def test_a_missing_litgpt_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    builders.litgpt_classes()  # litgpt registered as a build registers it: put back after the test
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "litgpt" else real_find_spec(n, *a))
    monkeypatch.delitem(sys.modules, "litgpt")
    with pytest.raises(LayerprofError, match=r"^LitGPT is not installed; install layerprof's dependencies"):
        builders._litgpt_package()
    no_loader = importlib.util.spec_from_loader("litgpt", None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: no_loader if n == "litgpt" else None)
    with pytest.raises(LayerprofError, match=r"^LitGPT is not installed"):
        builders._litgpt_package()


def test_litgpt_model_is_imported_with_the_checkpoint_converter_deferred(monkeypatch: pytest.MonkeyPatch) -> None:
    builders.litgpt_classes()  # litgpt and litgpt.model as the process has them
    package, model_module = sys.modules["litgpt"], sys.modules["litgpt.model"]
    converter = "litgpt.scripts.convert_hf_checkpoint"
    monkeypatch.setattr(package, "model", model_module, raising=False)  # restored after the fresh import below
    monkeypatch.delitem(sys.modules, "litgpt.model")
    monkeypatch.delitem(sys.modules, converter, raising=False)
    config, gpt = builders.litgpt_classes()
    fresh = sys.modules["litgpt.model"]
    assert fresh is not model_module and gpt is fresh.GPT and config.__name__ == "Config"
    assert converter not in sys.modules  # neither the stand-in left behind nor the real one (Lightning) imported
    assert fresh.qkv_reassemble.__name__ == "<lambda>"  # the stand-in's: imports the converter when called
    deferred: list[str] = []
    monkeypatch.setattr(builders, "_deferred_module", lambda name, functions: deferred.append(name))
    assert builders.litgpt_classes()[1] is fresh.GPT  # imported already: nothing deferred again
    assert deferred == [] and converter not in sys.modules


# ---------------------------------------------------------------- --set values and placing tensors


def test_set_values_take_the_types_their_targets_declare_and_undeclared_ones_read_as_they_look() -> None:
    typed = typed_overrides({"name": "12", "rate": "0.5", "free": "12"}, {"name": str, "rate": float})
    assert typed == {"name": "12", "rate": 0.5, "free": 12}
    assert typed_overrides({}, {"name": str}) == {}


def test_parameters_go_to_meta_as_registered_and_registration_is_restored_after() -> None:
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer
    on_meta = nn.Parameter(torch.empty(2, device="meta"))
    with builders._parameters_on_meta():
        layer = nn.Linear(2, 3)
        layer.register_buffer("steps", torch.zeros(2))
        layer.register_buffer("scratch", torch.ones(1), persistent=False)
        layer.register_buffer("empty", None)
        layer.register_parameter("frozen", nn.Parameter(torch.ones(2), requires_grad=False))
        layer.register_parameter("held", on_meta)
        layer.register_parameter("nothing", None)
        computed = torch.arange(3).tolist()  # anything else stays a real tensor
    assert computed == [0, 1, 2]
    assert {name: p.device.type for name, p in layer.named_parameters()} == dict.fromkeys(
        ("weight", "bias", "frozen", "held"), "meta"
    )
    assert type(layer.weight) is nn.Parameter and layer.weight.requires_grad and not layer.frozen.requires_grad
    assert layer.held is on_meta  # on the meta device already: kept, not wrapped again
    assert layer.nothing is None and layer.empty is None
    assert layer.steps.device.type == "meta" and layer.scratch.device.type == "meta"
    assert set(layer.state_dict()) == {"weight", "bias", "steps", "frozen", "held"}  # persistent as asked
    assert (nn.Module.register_parameter, nn.Module.register_buffer) == (register_parameter, register_buffer)
    assert nn.Linear(2, 2).weight.device.type == "cpu"


class ComputesWithATensor(nn.Module):
    """A constructor that asks a computed tensor for its values (fails on the meta device)."""

    def __init__(self) -> None:
        super().__init__()
        self.width = int(torch.ones(3).sum())
        self.layer = nn.Linear(2, self.width)


class ComputesWithItsWeights(nn.Module):
    """A constructor that asks its own parameters for their values (fails with them on meta too)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 2)
        self.scale = float(self.layer.weight.detach().sum()) + 100


def test_construct_builds_on_the_device_and_on_meta_falls_back_to_meta_parameters_then_the_cpu() -> None:
    model, how = construct(lambda: nn.Linear(2, 2), CPU)
    assert how == "cpu" and model.weight.device.type == "cpu"
    model, how = construct(lambda: nn.Linear(2, 2), META)
    assert how == "meta" and model.weight.device.type == "meta"
    model, how = construct(ComputesWithATensor, META)
    assert how == "meta-parameters" and model.width == 3 and model.layer.weight.device.type == "meta"
    model, how = construct(ComputesWithItsWeights, META)
    assert how == "cpu" and model.scale > 90 and model.layer.weight.device.type == "meta"
    with pytest.raises(ZeroDivisionError):  # a constructor that fails everywhere fails as itself
        construct(lambda: 1 / 0, META)


def test_a_moved_build_moves_a_module_or_the_model_an_object_holds_and_leaves_anything_else() -> None:
    layer = nn.Linear(2, 2)
    assert builders._moved(layer, META) is layer and layer.weight.device.type == "meta"
    held = SimpleNamespace(model=nn.Linear(2, 2))
    assert builders._moved(held, META) is held and held.model.weight.device.type == "meta"
    assert builders._moved("text", META) == "text"


# ---------------------------------------------------------------- presets and torchvision


def test_a_torchvision_preset_builds_in_the_papers_shapes_unless_the_options_change_them() -> None:
    loaded = build_preset("as-written", "paper-resnet18-cifar100", ModelOptions(), META)
    assert (loaded.spec, loaded.source, loaded.name) == ("as-written", "preset", "resnet18")
    assert loaded.description == "ResNet-18 (torchvision) on CIFAR-100 shapes: 3x32x32 inputs, 100 classes"
    assert (loaded.workload.num_classes, loaded.workload.input_shape) == (100, (3, 32, 32))
    assert loaded.model.fc.out_features == 100
    changed = build_preset("as-written", "paper-resnet18-cifar100", ModelOptions(7, (3, 64, 64)), META)
    assert (changed.workload.num_classes, changed.workload.input_shape) == (7, (3, 64, 64))


def test_a_litgpt_preset_ties_its_head_to_the_embedding() -> None:
    loaded = build_preset("as-written", "paper-gpt-14m", ModelOptions(), META)
    assert (loaded.spec, loaded.source, loaded.name) == ("as-written", "preset", "paper-gpt-14m")
    assert loaded.model.config.name == "paper-gpt-14m" and loaded.model.config.n_embd == 128
    assert loaded.model.lm_head.weight is loaded.model.transformer.wte.weight
    assert loaded.workload.seq_len == 512  # block size 1024, at most DEFAULT_MAX_SEQ_LEN
    assert loaded.description.startswith("GPT-2 style 14M (LitGPT)")


@pytest.mark.filterwarnings("ignore:The default weight initialization of inception_v3:FutureWarning")
def test_a_torchvision_model_takes_its_natural_shape_and_a_thousand_classes_by_default() -> None:
    loaded = build_torchvision("as-written", "resnet18", ModelOptions(), META)
    assert (loaded.spec, loaded.source, loaded.name) == ("as-written", "torchvision", "resnet18")
    workload = loaded.workload
    assert (workload.family, workload.input_shape, workload.num_classes) == (
        "image-classification",
        (3, 224, 224),
        1000,
    )
    assert workload.default_batch_sizes == (32,)
    assert loaded.model.fc.out_features == 1000
    assert (loaded.unwrap, loaded.overrides, loaded.construction) == ((), {}, "meta")
    assert loaded.description == "torchvision resnet18, random init"
    inception = build_torchvision("as-written", "inception_v3", ModelOptions(unwrap=("InceptionA",)), META)
    assert inception.workload.input_shape == (3, 299, 299)
    assert inception.unwrap == ("InceptionA",)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ModelOptions(seq_len=8), "--seq-len applies to language models; resnet18 takes --input-shape C,H,W"),
        (ModelOptions(input_shape=(3, 32)), "--input-shape for resnet18 must be C,H,W, got 3,32"),
        (ModelOptions(input_shape=(1, 3, 32, 32)), "--input-shape for resnet18 must be C,H,W, got 1,3,32,32"),
        (ModelOptions(overrides={"depth": "3"}), "torchvision could not build resnet18 with {'depth': 3}: "),
    ],
)
def test_a_torchvision_model_refuses_what_does_not_fit_it(options: ModelOptions, message: str) -> None:
    with pytest.raises(LayerprofError, match="^" + re.escape(message)):
        build_torchvision("as-written", "resnet18", options, META)


def test_a_vit_takes_square_images_of_whole_patches_and_descends_into_its_encoder() -> None:
    natural = build_torchvision("as-written", "vit_b_16", ModelOptions(), META)
    assert (natural.unwrap, natural.overrides) == (("Encoder",), {})  # 224: ViT's own size, nothing set
    small = build_torchvision(
        "as-written", "vit_b_16", ModelOptions(input_shape=(3, 32, 32), unwrap=("Encoder",)), META
    )
    assert (small.unwrap, small.overrides) == (("Encoder",), {"image_size": 32})
    assert small.model.image_size == 32 and small.workload.input_shape == (3, 32, 32)
    given = ModelOptions(input_shape=(3, 32, 32), overrides={"image_size": "32"})
    assert build_torchvision("as-written", "vit_b_16", given, META).overrides == {"image_size": 32}


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((3, 32, 48), "vit_b_16 needs square images, got --input-shape (3, 32, 48)"),
        ((3, 224, 232), "vit_b_16 needs square images, got --input-shape (3, 224, 232)"),
        (
            (3, 33, 33),
            "vit_b_16 cuts images into 16x16 patches: --input-shape 3,33,33 is not a multiple of 16; "
            "e.g. --input-shape 3,32,32",
        ),
        ((1, 7, 7), "--input-shape 1,7,7 is not a multiple of 16; e.g. --input-shape 1,16,16"),
        ((3, 40, 40), "--input-shape 3,40,40 is not a multiple of 16; e.g. --input-shape 3,32,32"),
        ((3, 56, 56), "--input-shape 3,56,56 is not a multiple of 16; e.g. --input-shape 3,64,64"),
    ],
)
def test_a_vit_refuses_images_that_are_not_square_or_not_whole_patches(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(LayerprofError, match=re.escape(message) + "$"):
        build_torchvision("as-written", "vit_b_16", ModelOptions(input_shape=shape), META)


# ---------------------------------------------------------------- LitGPT

TINY_GPT = {"n_layer": "1", "n_embd": "16", "n_head": "2", "vocab_size": "64", "padded_vocab_size": "64"}


def test_a_litgpt_model_takes_the_block_size_up_to_512_tokens_and_typed_set_values() -> None:
    loaded = build_litgpt("as-written", "pythia-14m", ModelOptions(overrides=TINY_GPT, unwrap=("Block",)), META)
    assert (loaded.spec, loaded.source, loaded.name) == ("as-written", "litgpt", "pythia-14m")
    assert loaded.overrides == {"n_layer": 1, "n_embd": 16, "n_head": 2, "vocab_size": 64, "padded_vocab_size": 64}
    workload = loaded.workload
    assert (workload.family, workload.seq_len, workload.vocab_size) == ("causal-lm", 512, 64)
    assert workload.default_batch_sizes == (4,)
    assert loaded.model.max_seq_length == 512 and loaded.unwrap == ("Block",)
    assert loaded.model.lm_head.weight is not loaded.model.transformer.wte.weight  # tied in presets only
    assert loaded.description == "LitGPT pythia-14m, random init" and loaded.construction == "meta"
    longer = build_litgpt("x", "pythia-14m", ModelOptions(overrides={**TINY_GPT, "block_size": "1024"}), META)
    assert longer.workload.seq_len == 512
    shorter = build_litgpt("x", "pythia-14m", ModelOptions(overrides={**TINY_GPT, "block_size": "64"}), META)
    assert shorter.workload.seq_len == 64 and shorter.model.max_seq_length == 64


@pytest.mark.parametrize("seq_len", [1, 8, 64])
def test_a_litgpt_model_takes_any_seq_len_up_to_its_block_size(seq_len: int) -> None:
    options = ModelOptions(seq_len=seq_len, overrides={**TINY_GPT, "block_size": "64"})
    loaded = build_litgpt("x", "pythia-14m", options, META)
    assert loaded.workload.seq_len == seq_len and loaded.model.max_seq_length == seq_len


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ModelOptions(seq_len=65, overrides={**TINY_GPT, "block_size": "64"}),
            "--seq-len must be in 1..64 (the block size of pythia-14m), got 65",
        ),
        (
            ModelOptions(seq_len=-1, overrides=TINY_GPT),
            "--seq-len must be in 1..512 (the block size of pythia-14m), got -1",
        ),
        (
            ModelOptions(input_shape=(3, 32, 32)),
            "--input-shape and --num-classes apply to image models; pythia-14m takes --seq-len",
        ),
        (ModelOptions(num_classes=10), "--input-shape and --num-classes apply to image models; pythia-14m takes"),
        (ModelOptions(overrides={"n_layyer": "1"}), "--set n_layyer: not a litgpt.Config field; did you mean n_layer?"),
        (
            ModelOptions(overrides={"n_head_": "1", "n_layyer": "1"}),  # the first unknown key, three suggestions
            "--set n_head_: not a litgpt.Config field; did you mean n_head, lm_head_bias, head_size?",
        ),
        (
            ModelOptions(overrides={"n_layer": "1", "zzzz": "1"}),
            "--set zzzz: not a litgpt.Config field",
        ),
        (ModelOptions(overrides={"n_head": "3", "n_embd": "16"}), "LitGPT rejected the config for pythia-14m: "),
    ],
)
def test_a_litgpt_model_refuses_what_does_not_fit_it(options: ModelOptions, message: str) -> None:
    with pytest.raises(LayerprofError, match="^" + re.escape(message)):
        build_litgpt("as-written", "pythia-14m", options, META)


# ---------------------------------------------------------------- timm


def test_a_timm_model_takes_a_thousand_classes_by_default() -> None:
    loaded = build_timm("as-written", "test_vit", ModelOptions(unwrap=("Block",)), META)
    assert (loaded.spec, loaded.source, loaded.name) == ("as-written", "timm", "test_vit")
    assert (loaded.workload.family, loaded.workload.num_classes) == ("image-classification", 1000)
    assert loaded.workload.input_shape == (3, 160, 160) and loaded.workload.default_batch_sizes == (32,)
    assert loaded.unwrap == ("Block",) and loaded.description == "timm test_vit, random init"
    assert build_timm("x", "test_vit", ModelOptions(num_classes=3), META).workload.num_classes == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ModelOptions(seq_len=8), "--seq-len applies to language models; test_vit takes --input-shape C,H,W"),
        (ModelOptions(overrides={"qkv_bias": "abc"}), "--set qkv_bias: expects "),
        (ModelOptions(overrides={"depth": "1.5"}), "timm could not build test_vit with {'depth': 1.5}: "),
    ],
)
def test_a_timm_model_refuses_what_does_not_fit_it(options: ModelOptions, message: str) -> None:
    with pytest.raises(LayerprofError, match="^" + re.escape(message)):
        build_timm("as-written", "test_vit", options, META)


# ---------------------------------------------------------------- Hugging Face

TINY_LLAMA = HF_TINY  # a one-block llama of width 16 (tests/sources/test_registry.py)


def test_an_hf_model_takes_its_positions_as_seq_len_up_to_512() -> None:
    loaded = build_hf("as-written", "llama", ModelOptions(overrides=TINY_LLAMA), META)
    assert (loaded.spec, loaded.source, loaded.name) == ("as-written", "hf", "llama")
    workload = loaded.workload
    assert (workload.family, workload.seq_len, workload.vocab_size) == ("causal-lm", 32, 64)
    assert workload.default_batch_sizes == (4,)
    assert loaded.overrides["max_position_embeddings"] == 32 and loaded.overrides["hidden_size"] == 16
    assert loaded.unwrap == ("LlamaModel",)
    assert loaded.description == "Hugging Face LlamaForCausalLM, random init"
    longer = build_hf("x", "llama", ModelOptions(overrides={**TINY_LLAMA, "max_position_embeddings": "1024"}), META)
    assert longer.workload.seq_len == 512


@pytest.mark.parametrize("seq_len", [1, 8, 32])
def test_an_hf_model_takes_any_seq_len_up_to_its_positions(seq_len: int) -> None:
    assert build_hf("x", "llama", ModelOptions(seq_len=seq_len, overrides=TINY_LLAMA), META).workload.seq_len == seq_len


def test_an_hf_model_without_positions_takes_any_seq_len_and_512_by_default(tmp_path: Path) -> None:
    tiny = {"hidden_size": "16", "n_layer": "1", "n_head": "2", "vocab_size": "64"}
    assert build_hf("x", "bloom", ModelOptions(overrides=tiny), META).workload.seq_len == 512
    assert build_hf("x", "bloom", ModelOptions(seq_len=4096, overrides=tiny), META).workload.seq_len == 4096
    config = tmp_path / "config.json"  # positions named as GPT-2 names them
    config.write_text(json.dumps({"model_type": "bloom", "n_positions": 48, **{k: int(v) for k, v in tiny.items()}}))
    assert build_hf("x", str(config), ModelOptions(), META).workload.seq_len == 48
    with pytest.raises(LayerprofError, match=r"^--seq-len must be in 1\.\.48 \(the positions of "):
        build_hf("x", str(config), ModelOptions(seq_len=49), META)


def test_an_hf_encoder_is_built_as_a_decoder_and_says_so() -> None:
    tiny = {**TINY_LLAMA, "intermediate_size": "32"}
    del tiny["num_key_value_heads"]
    with pytest.warns(ModelWarning, match=r"^as-written is an encoder: it is built as BertLMHeadModel with is_decoder"):
        loaded = build_hf("as-written", "bert", ModelOptions(overrides=tiny), META)
    assert loaded.description == (
        "Hugging Face BertLMHeadModel, random init, an encoder trained as a causal LM (is_decoder=True)"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ModelOptions(seq_len=33, overrides=TINY_LLAMA),
            "--seq-len must be in 1..32 (the positions of llama), got 33",
        ),
        (
            ModelOptions(overrides={**TINY_LLAMA, "num_hidden_layers": "0"}),
            "llama declares 0 blocks (num_hidden_layers); a model to profile needs at least 1",
        ),
        (
            ModelOptions(input_shape=(3, 32, 32)),
            "--input-shape and --num-classes apply to image models; llama takes --seq-len",
        ),
        (ModelOptions(num_classes=10), "--input-shape and --num-classes apply to image models; llama takes --seq-len"),
    ],
)
def test_an_hf_model_refuses_what_does_not_fit_it(options: ModelOptions, message: str) -> None:
    with pytest.raises(LayerprofError, match="^" + re.escape(message)):
        build_hf("as-written", "llama", options, META)


@pytest.mark.parametrize(
    ("config", "blocks"),
    [
        ({"num_hidden_layers": 3, "n_layer": 4}, 3),
        ({"n_layer": 4, "num_layers": 5}, 4),
        ({"num_layers": 5, "decoder_layers": 6}, 5),
        ({"decoder_layers": 6}, 6),
        ({"num_hidden_layers": None, "n_layer": 2}, 2),
        ({"num_hidden_layers": "3"}, None),
        ({}, None),
    ],
)
def test_the_block_count_is_the_first_whole_number_under_transformers_names(config: dict, blocks: int | None) -> None:
    assert builders._block_count(SimpleNamespace(**config)) == blocks  # type: ignore[arg-type]


# ---------------------------------------------------------------- user factories

FACTORIES = textwrap.dedent(
    """
    import torch
    from torch import nn

    import layerprof

    LIMIT = 3


    def make(width: int = 4, name: str = "x"):
        return nn.Sequential(nn.Linear(width, 3), nn.Linear(3, 2))


    def mark1(): ...
    def mark2(): ...
    def mark3(): ...
    def mark4(): ...
    def _hidden(): ...


    def needs(a, b=1, *rest, c, d=2, **more):
        return nn.Linear(2, 2)


    def strict(a: int = 1):
        return nn.Linear(2, 2)


    def unresolved(n: "Undefined" = 1):  # noqa: F821
        return nn.Linear(n, 2)


    def on_the_cpu():
        return nn.Sequential(nn.Linear(2, 2, device="cpu"), nn.Linear(2, 2, device="cpu"))


    def half_on_the_cpu():
        return nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2, device="cpu"))


    def no_parameters():
        return nn.ReLU()


    def text():
        return "a model"


    def custom():
        return layerprof.CustomWorkload(
            model=nn.Linear(2, 2), make_batch=lambda b, d: torch.randn(b, 2, device=d), loss=lambda m, x: m(x).sum()
        )


    def custom_without_a_module():
        return layerprof.CustomWorkload(model="a model", make_batch=lambda b, d: None, loss=lambda m, x: None)


    class Plain:
        def __init__(self, **extra):
            self.model = nn.Linear(2, 2)
            self.make_batch = lambda b, d: torch.randn(b, 2, device=d)
            self.loss = lambda m, x: m(x).sum()
            self.__dict__.update(extra)


    def plain():
        return Plain()


    def plain_with_everything():
        return Plain(
            unwrap=["Linear"], items_per_sample="8", item_name=5, optimizer="opt", scheduler="sched", step="step"
        )


    def fails():
        raise KeyError("nothing")
    """
)


@pytest.fixture
def factories(tmp_path: Path) -> Path:
    path = tmp_path / "factories.py"
    path.write_text(FACTORIES)
    return path


def test_a_factory_is_loaded_from_a_file_by_path_or_name_or_from_a_module(
    factories: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_factory(f"{factories}:make").__name__ == "make"
    monkeypatch.chdir(factories.parent)
    assert load_factory("factories.py:make").__name__ == "make"  # a file name without a folder
    assert load_factory("json:dumps") is json.dumps  # a module


def test_a_factory_that_cannot_be_loaded_is_one_line(factories: Path) -> None:
    folder, text = factories.parent, factories.with_suffix(".txt")
    text.write_text("x = 1\n")
    cases = {
        f"{folder}:make": f"model file {str(folder)!r} is a directory; expected path/to/file.py:factory",
        f"{folder}/nothing.py:make": f"model file '{folder}/nothing.py' does not exist; expected path/to/file.py:",
        f"{text}:make": f"cannot import {str(text)!r} as Python; expected a .py file",
        f"{factories}:mak": f"{factories} has no callable 'mak'; did you mean make, mark4, mark3?",
        f"{factories}:LIMIT": f"{factories} has no callable 'LIMIT'; it defines make, mark1, mark2, mark3, mark4, ",
        f"{factories}:zzzzzz": f"{factories} has no callable 'zzzzzz'; it defines make, mark1, mark2, mark3, mark4, "
        "needs, strict, unresolved",
        "lp_no_such_module_here:make": "cannot import module 'lp_no_such_module_here': No module named ",
        "json:zzzz": "json has no callable 'zzzz'; it defines ",
    }
    for spec, message in cases.items():
        with pytest.raises(LayerprofError, match="^" + re.escape(message)):
            load_factory(spec)
    (folder / "raises.py").write_text("raise ValueError('bad')\n")
    with pytest.raises(LayerprofError, match=re.escape(f"importing {folder}/raises.py raised ValueError: bad")):
        load_factory(f"{folder}/raises.py:make")


def test_a_factory_is_called_with_its_set_values_typed_by_its_annotations(factories: Path) -> None:
    model, how, kwargs = call_factory(f"{factories}:make", {"width": "5", "name": "7"}, META)
    assert (how, kwargs) == ("meta", {"width": 5, "name": "7"})
    assert model[0].in_features == 5 and model[0].weight.device.type == "meta"
    model, how, kwargs = call_factory(f"{factories}:unresolved", {"n": "3"}, CPU)  # read as it looks
    assert (how, kwargs, model.in_features) == ("cpu", {"n": 3}, 3)


def test_a_factory_call_that_does_not_fit_its_signature_names_what_is_missing(factories: Path) -> None:
    cases = [
        ("needs", {"a": "1"}, "has required arguments without defaults: give --set c=VALUE"),
        ("needs", {"b": "1"}, "has required arguments without defaults: give --set a=VALUE --set c=VALUE"),
        ("strict", {"z": "1"}, "does not accept --set z: got an unexpected keyword argument 'z'"),
        ("fails", {}, "raised KeyError: 'nothing'"),
    ]
    for name, overrides, message in cases:
        spec = f"{factories}:{name}"
        with pytest.raises(LayerprofError, match=re.escape(f"factory {spec} {message}") + "$"):
            call_factory(spec, overrides, CPU)


def test_a_factorys_module_is_built_with_input_shape_and_moved_where_it_built_elsewhere(factories: Path) -> None:
    spec = f"{factories}:make"
    loaded = build_user(spec, "resolved", ModelOptions(input_shape=(4,), overrides={"width": "4"}), CPU)
    assert (loaded.spec, loaded.source, loaded.name) == (spec, "user", spec)
    assert (loaded.workload.family, loaded.workload.input_shape, loaded.workload.num_classes) == (
        "tensor-input",
        (4,),
        None,
    )
    assert (loaded.overrides, loaded.description) == ({"width": 4}, f"user factory {spec}")
    classes = build_user(spec, "resolved", ModelOptions(num_classes=2, input_shape=(4,), unwrap=("X",)), CPU)
    assert (classes.workload.family, classes.workload.num_classes, classes.unwrap) == (
        "image-classification",
        2,
        ("X",),
    )
    for name in ("on_the_cpu", "half_on_the_cpu"):
        loaded = build_user(f"{factories}:{name}", "resolved", ModelOptions(input_shape=(2,)), META)
        assert {p.device.type for p in loaded.model.parameters()} == {"meta"}, name


def test_a_factorys_workload_is_taken_as_it_is_or_read_from_any_object_with_its_fields(factories: Path) -> None:
    loaded = build_user(f"{factories}:custom", "resolved", ModelOptions(), CPU)
    assert loaded.workload.family == "custom" and loaded.model is loaded.workload.custom.model
    assert loaded.workload.default_batch_sizes == (32,)
    plain = build_user(f"{factories}:plain", "resolved", ModelOptions(unwrap=("Linear",)), CPU).workload.custom
    assert isinstance(plain, CustomWorkload)
    assert (plain.unwrap, plain.items_per_sample, plain.item_name) == ((), 1, "samples")
    assert (plain.optimizer, plain.scheduler, plain.step) == (None, None, None)
    full = build_user(f"{factories}:plain_with_everything", "resolved", ModelOptions(), CPU)
    custom = full.workload.custom
    assert (custom.unwrap, custom.items_per_sample, custom.item_name) == (("Linear",), 8, "5")
    assert (custom.optimizer, custom.scheduler, custom.step) == ("opt", "sched", "step")
    assert full.unwrap == ("Linear",)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        (
            "make",
            ModelOptions(seq_len=8),
            "--seq-len applies to LitGPT and hf: language models; {spec} takes --input-shape (per sample), or pass "
            "its sequence length to the factory with --set",
        ),
        (
            "make",
            ModelOptions(),
            "{spec} returned a bare nn.Module: pass --input-shape (per sample, e.g. 3,32,32), or return a "
            "layerprof.CustomWorkload with make_batch and loss",
        ),
        (
            "custom",
            ModelOptions(input_shape=(2,)),
            "{spec} returns its own make_batch and loss, which --input-shape would not change; leave it out, or pass "
            "such sizes to the factory with --set",
        ),
        ("custom", ModelOptions(num_classes=2), "which --num-classes would not change; leave it out"),
        (
            "plain",
            ModelOptions(num_classes=2, input_shape=(2,)),
            "which --input-shape and --num-classes would not change; leave them out",
        ),
        (
            "no_parameters",
            ModelOptions(input_shape=(2,)),
            "factory {spec} gave no nn.Module with parameters to profile",
        ),
        ("custom_without_a_module", ModelOptions(), "factory {spec} gave no nn.Module with parameters to profile"),
        (
            "text",
            ModelOptions(input_shape=(2,)),
            "factory {spec} returned str; expected an nn.Module or an object with model, make_batch(batch_size, "
            "device) and loss(model, batch)",
        ),
    ],
)
def test_what_a_factory_returns_is_refused_where_it_does_not_fit_the_options(
    factories: Path, name: str, options: ModelOptions, message: str
) -> None:
    spec = f"{factories}:{name}"
    with pytest.raises(LayerprofError, match=re.escape(message.format(spec=spec))):
        build_user(spec, "resolved", options, CPU)
