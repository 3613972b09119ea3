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
from layerprof.sources.hub_models import hf_config, hf_unwrap, is_encoder, offline, quiet_transformers, timm_model

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
