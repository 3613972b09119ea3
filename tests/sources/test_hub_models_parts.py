"""sources/hub_models.py part by part (issue 40's mutation survivors): the hub switched off while a model is
built and restored after, a timm model's input shape and image size, a transformers config with --set values,
and the wrappers on the way to a model's blocks (nothing downloaded, no hub model built)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from torch import nn

from layerprof.errors import LayerprofError
from layerprof.sources.hub_models import (
    check_timm_set,
    hf_config,
    hf_model,
    hf_unwrap,
    is_encoder,
    offline,
    quiet_transformers,
    timm_model,
    timm_unwrap,
)

KEYS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def test_the_hub_is_off_while_building_and_as_it_was_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    with offline():
        assert [os.environ.get(key) for key in KEYS] == ["1", "1"]
    assert [os.environ.get(key) for key in KEYS] == [None, "0"]


def test_a_timm_models_shape_is_its_own_unless_given_and_a_patch_model_is_told_its_size() -> None:
    assert timm_model("resnet18", 10, None, {})[1:] == ((3, 224, 224), {})
    assert timm_model("vit_tiny_patch16_384", 10, None, {})[1:] == ((3, 384, 384), {})  # its own size, not 224
    assert timm_model("resnet18", 10, (3, 160, 160), {"drop_rate": "0.1"})[1:] == ((3, 160, 160), {"drop_rate": 0.1})
    vit = timm_model("vit_tiny_patch16_224", 10, (3, 160, 160), {})
    assert vit[1:] == ((3, 160, 160), {"img_size": (160, 160)})  # a patch embedding fixes its size when built
    assert timm_model("vit_tiny_patch16_224", 10, (3, 224, 224), {})[2] == {}
    assert timm_model("vit_tiny_patch16_224", 10, (3, 160, 160), {"img_size": "96"})[2] == {"img_size": 96}
    with pytest.raises(LayerprofError, match=r"^--input-shape for resnet18 must be C,H,W, got 3,224$"):
        timm_model("resnet18", 10, (3, 224), {})


def test_a_transformers_config_takes_its_set_values_in_their_fields_types(tmp_path: Path) -> None:
    config = hf_config("gpt2", {"n_layer": "2", "n_inner": "64"})  # n_inner's default is None: read as it looks
    assert (config.n_layer, config.n_inner, config.use_cache, getattr(config, "is_decoder", False)) == (
        2,
        64,
        False,
        False,
    )
    assert hf_config("bert", {}).is_decoder is True  # an encoder trained as a decoder
    assert [is_encoder(name) for name in ("bert", "bart", "gpt2")] == [True, False, False]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config").write_text(json.dumps({"model_type": "gpt2", "n_embd": 32}))
    assert hf_config(str(tmp_path / "mine" / "config"), {}).n_embd == 32  # a path, though not named .json
    with pytest.raises(LayerprofError, match=r"^--set n_layers: not a field of GPT2Config; did you mean n_layer\?$"):
        hf_config("gpt2", {"n_layers": "2"})
    with pytest.raises(
        LayerprofError, match=r"^--set n_e: not a field of GPT2Config; did you mean n_head, n_embd, n_layer\?$"
    ):
        hf_config("gpt2", {"n_e": "2"})  # four close names, three shown
    with pytest.raises(LayerprofError) as unknown:
        hf_config("lama", {})
    assert str(unknown.value).count(",") == 2  # three close names


def test_transformers_warnings_are_quiet_while_building_and_as_they_were_after() -> None:
    from transformers.utils import logging

    before = logging.get_verbosity()
    logging.set_verbosity_info()
    try:
        with quiet_transformers():
            assert logging.get_verbosity() == logging.ERROR
        assert logging.get_verbosity() == logging.INFO
    finally:
        logging.set_verbosity(before)


class Wrapper(nn.Module):
    def __init__(self, **children: nn.Module) -> None:
        super().__init__()
        for name, child in children.items():
            self.add_module(name, child)


class Outer(Wrapper):
    pass


class Inner(Wrapper):
    pass


def blocks(count: int) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(2, 2) for _ in range(count))


def test_the_wrappers_on_the_way_to_the_blocks() -> None:
    # a list of one is no list of blocks; the shallowest list, else the one of the model's block count
    model = Wrapper(a=Outer(heads=blocks(1)), b=Outer(c=Inner(layers=blocks(3))), d=Inner(extra=blocks(2)))
    assert hf_unwrap(model) == ("Inner",)  # d.extra: one wrapper deep
    assert hf_unwrap(model, block_count=3) == ("Outer", "Inner")  # b.c.layers
    typed = Wrapper(b=nn.Sequential(Wrapper(layers=blocks(3))))
    assert hf_unwrap(typed, block_count=3) == ("Sequential", "Wrapper")  # not the model's own class
    assert hf_unwrap(Wrapper(x=nn.Linear(2, 2))) == ()


def test_a_timm_model_without_a_pretrained_config_takes_224_pixels_and_builds_without_weights() -> None:
    # a name timm has no pretrained configuration for: the ImageNet default shape (building it would fail)
    assert timm_model("no_such_timm_model", 10, None, {})[1] == (3, 224, 224)
    build, shape, _ = timm_model("test_convnext", 7, None, {})
    assert shape == (3, 160, 160)
    model = build()  # random weights: asking for pretrained ones would try the (offline) hub
    assert (timm_unwrap(model), model.num_classes) == (("ConvNeXtStage",), 7)
    assert timm_unwrap(timm_model("test_resnet", 7, None, {})[0]()) == ()


class Loose(nn.Module):
    """A model class whose annotations do not resolve (checked by its defaults' types alone)."""

    def __init__(self, width=8, scale: NoSuchType = 1.0, norm=None, **extra) -> None:  # type: ignore[name-defined]  # noqa: ANN001, ANN003, F821
        super().__init__()


def test_a_timm_set_value_is_checked_against_the_classs_annotation_else_its_defaults_type() -> None:
    from timm.models.resnet import ResNet

    resnet = object.__new__(ResNet)  # only its class is read
    with pytest.raises(LayerprofError, match=r"^--set drop_rate: expects a number, got 'abc'$"):
        check_timm_set(resnet, {"drop_rate": "abc"})
    check_timm_set(resnet, {"drop_rate": "0.1", "num_classes": 3})
    loose = Loose()
    with pytest.raises(LayerprofError, match=r"^--set width: expects an integer, got 'abc'$"):
        check_timm_set(loose, {"width": "abc"})
    # a default of None says nothing of the type, a key only **extra takes has none, and parsed values pass
    check_timm_set(loose, {"norm": "abc", "depth": "abc", "width": 2.5})


def test_a_transformers_field_takes_its_defaults_type_and_a_config_file_needs_its_model_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = hf_config("gpt2", {"resid_pdrop": "1", "n_head": "4"})
    assert (config.resid_pdrop, type(config.resid_pdrop), config.n_head) == (1.0, float, 4)  # not the int 1
    monkeypatch.chdir(tmp_path)
    Path("config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 3}))
    assert hf_config("config.json", {}).n_layer == 3  # a file in the working directory, named .json
    Path("other.json").write_text(json.dumps({"n_layer": 3}))
    with pytest.raises(LayerprofError, match=r"^'other.json' is not a Hugging Face config \(no 'model_type'\)$"):
        hf_config("other.json", {})


def test_a_model_with_one_block_is_split_inside_its_base_model() -> None:
    config = hf_config("gpt2", {"n_layer": "1", "n_embd": "8", "n_head": "2", "vocab_size": "16", "n_positions": "8"})
    model = hf_model(config)()
    assert hf_unwrap(model) == ("GPT2Model",)  # no list of two blocks or more: its base model
