"""The registry of model sources is the one list: every entry resolves a name and builds a model offline, the
places that name sources (the profile schema, the builders, the name table, the help) name the registry's, and an
unknown prefix or source is refused in one line with the choices."""

from __future__ import annotations

import inspect
import json
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import get_args

import pytest
import torch

from layerprof.errors import LayerprofError
from layerprof.profile import ModelSource
from layerprof.sources import builders, names, registry
from layerprof.sources.models import ModelOptions, build_model
from layerprof.sources.registry import SOURCES, known_names, model_help, resolve

FACTORY = """
from torch import nn


def tiny() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
"""

HF_TINY = {
    "num_hidden_layers": "1",
    "hidden_size": "16",
    "intermediate_size": "32",
    "num_attention_heads": "2",
    "num_key_value_heads": "2",
    "vocab_size": "64",
    "max_position_embeddings": "32",
}

# One small model per source, built on the CPU with random weights, nothing downloaded: (MODEL, options, the name
# it resolves to, layers). A source added to the registry without a line here fails the test below.
EXAMPLES: dict[str, tuple[str, ModelOptions, str, int]] = {
    "preset": ("paper-resnet18-cifar100", ModelOptions(), "paper-resnet18-cifar100", 11),
    "torchvision": (
        "torchvision:squeezenet1_1",
        ModelOptions(num_classes=3, input_shape=(3, 32, 32)),
        "squeezenet1_1",
        10,
    ),
    "litgpt": (
        "litgpt:pythia-14m",
        ModelOptions(seq_len=8, overrides={"n_layer": "1", "vocab_size": "64", "padded_vocab_size": "64"}),
        "pythia-14m",
        4,
    ),
    "timm": ("timm:test_vit", ModelOptions(num_classes=3), "test_vit", 9),
    "hf": ("hf:llama", ModelOptions(seq_len=8, overrides=HF_TINY), "llama", 4),
    "user": ("{file}:tiny", ModelOptions(input_shape=(4,)), "{file}:tiny", 2),
}


@pytest.mark.parametrize("source", [entry.name for entry in SOURCES])
def test_every_entry_resolves_a_name_and_builds_a_model(source: str, tmp_path: Path) -> None:
    spec, options, name, layer_count = EXAMPLES[source]
    factory = tmp_path / "factory.py"
    factory.write_text(textwrap.dedent(FACTORY))
    spec, name = spec.format(file=factory), name.format(file=factory)
    entry, resolved = resolve(spec)
    assert (entry.name, resolved) == (source, name)
    loaded = build_model(spec, options)
    assert loaded.source == source and loaded.spec == spec
    assert all(p.device.type == "cpu" for p in loaded.model.parameters())
    layers = loaded.split()  # a forward pass and the loss of the source's workload on a batch of 2
    assert len(layers) == layer_count
    assert sum(layer.params for layer in layers) == sum(p.numel() for p in loaded.model.parameters())


def test_the_profile_schema_the_builders_and_the_name_table_name_the_registrys_sources() -> None:
    assert [entry.name for entry in SOURCES] == list(get_args(ModelSource))
    # every builder of builders.py is an entry's, and every entry's is there with the builder's signature
    defined = {
        name for name, value in vars(builders).items() if name.startswith("build_") and inspect.isfunction(value)
    }
    assert defined == {entry.builder_name for entry in SOURCES}
    for entry in SOURCES:
        assert list(inspect.signature(getattr(builders, entry.builder_name)).parameters) == [
            "spec",
            "name",
            "options",
            "device",
        ]
    table = json.loads(names.NAME_TABLE.read_text())
    assert set(table) == {entry.name for entry in SOURCES if entry.package is not None and entry.lister is not None}
    assert len({entry.prefix for entry in SOURCES if entry.prefix is not None}) == sum(
        entry.prefix is not None for entry in SOURCES
    )


def test_every_prefix_resolves_to_its_entry_and_no_other_prefix_is_taken() -> None:
    for entry in SOURCES:
        if entry.prefix is not None:
            name = "anything" if entry.checked_when_built else entry.names()[0]
            assert resolve(f"{entry.prefix}:{name}")[0] is entry
    with pytest.raises(LayerprofError) as refused:
        resolve("timmm:resnet18")
    assert str(refused.value) == (
        "unknown source prefix 'timmm:' in 'timmm:resnet18' (choose one of torchvision:, litgpt:, timm:, hf:; or "
        "package.module:fn of a module that imports)"
    )
    assert resolve("json:loads")[0].name == "user"  # a module that imports is a factory's, not a prefix


def test_an_unknown_source_is_refused_with_the_choices() -> None:
    with pytest.raises(LayerprofError) as refused:
        known_names("timmm")
    assert str(refused.value) == "--source 'timmm': choose one of preset, torchvision, litgpt, timm, hf"
    with pytest.raises(LayerprofError) as refused:
        registry.source("onnx")
    assert (
        str(refused.value) == "unknown model source 'onnx' (choose one of preset, torchvision, litgpt, timm, hf, user)"
    )


def test_the_help_is_written_from_the_entries() -> None:
    assert model_help() == (
        "A preset (paper-resnet18-cifar100), a torchvision model (resnet50), a LitGPT config (pythia-14m), "
        "timm:NAME, hf:MODEL_TYPE or hf:path/config.json, or a factory: path/to/file.py:fn or package.module:fn. "
        "Prefix torchvision: or litgpt: to disambiguate; `layerprof models` lists the names."
    )
    assert registry.listed_sources() == ["preset", "torchvision", "litgpt", "timm", "hf"]


def test_a_missing_optional_library_is_skipped_in_the_listing_and_named_with_its_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """timm as if it were not installed: the listing leaves it out, asking for it says how to install it."""
    missing = replace(registry.source("timm"), package="no_such_package_xyz")
    monkeypatch.setattr(registry, "SOURCES", tuple(missing if s.name == "timm" else s for s in SOURCES))
    registry.source_names.cache_clear()
    try:
        assert "timm" not in known_names() and "hf" in known_names()
        message = "no_such_package_xyz is not installed: pip install 'layerprof[timm]'"
        for ask in (lambda: known_names("timm"), lambda: resolve("timm:resnet18"), missing.builder):
            with pytest.raises(LayerprofError) as refused:
                ask()
            assert str(refused.value) == message
    finally:
        registry.source_names.cache_clear()


def test_a_name_refused_by_its_source_says_why() -> None:
    with pytest.raises(LayerprofError, match="unknown LitGPT config 'resnet18'"):
        resolve("litgpt:resnet18")
    with pytest.raises(LayerprofError, match="^fasterrcnn_resnet50_fpn is a torchvision detection model"):
        resolve("torchvision:fasterrcnn_resnet50_fpn")
    with pytest.raises(LayerprofError, match="^model 'llama' is a hf name: give hf:llama$"):
        resolve("llama")
    assert resolve("hf:no_such_type")[1] == "no_such_type"  # hf: names are checked where the config is built
    with pytest.raises(LayerprofError, match="unknown Hugging Face causal-LM model type 'no_such_type'"):
        build_model("hf:no_such_type", device=torch.device("meta"))
