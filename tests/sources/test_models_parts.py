"""models.py part by part (issue 40's mutation survivors): a build in another dtype casts floating parameters and
buffers (tied weights stay one tensor) and leaves the model training; what a build can show about --unwrap and an
empty parameter; the file-name slug of a MODEL string."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest
import torch

from layerprof.errors import LayerprofError
from layerprof.sources.models import QUIET_LOGGERS, build_model, model_slug, quiet_fake_tensor_log
from layerprof.sources.names import ModelOptions

FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(4, 4)
            self.head = nn.Linear(4, 4)
            self.head.weight = self.embed.weight
            self.register_buffer("scale", torch.ones(4))
            self.register_buffer("steps", torch.zeros(1, dtype=torch.long))

        def forward(self, x):
            return self.head(self.embed(x) * self.scale)


    def make():
        return Tied().eval()


    def empty():
        model = Tied()
        model.gap = nn.Parameter(torch.zeros(0, 3))
        return model
    """
)


@pytest.fixture
def factory(tmp_path: Path) -> Path:
    path = tmp_path / "tied.py"
    path.write_text(FACTORY)
    return path


def test_a_build_in_another_dtype_casts_floating_tensors_once_and_trains(factory: Path) -> None:
    model = build_model(f"{factory}:make", ModelOptions(input_shape=(4,)), dtype=torch.bfloat16).model
    assert model.training  # the factory's eval mode is not what a step trains in
    assert (model.embed.weight.dtype, model.embed.bias.dtype, model.scale.dtype) == (torch.bfloat16,) * 3
    assert model.steps.dtype == torch.long  # not a floating buffer
    assert model.head.weight is model.embed.weight  # tied: one tensor still
    assert isinstance(model.head.weight, torch.nn.Parameter) and model.head.weight.requires_grad


def test_a_build_refuses_an_unwrap_class_the_model_lacks_and_an_empty_parameter(factory: Path) -> None:
    options = ModelOptions(input_shape=(4,), unwrap=("Linear",))
    assert build_model(f"{factory}:make", options).model.training  # a class it holds: built
    with pytest.raises(LayerprofError, match=r"--unwrap Lienar: .*tied\.py:make holds no module of class Lienar; "):
        build_model(f"{factory}:make", ModelOptions(input_shape=(4,), unwrap=("Lienar",)))
    with pytest.raises(LayerprofError, match=r"has a parameter with no elements \(gap, shape \(0, 3\)\)"):
        build_model(f"{factory}:empty", ModelOptions(input_shape=(4,)))


@pytest.mark.parametrize(
    ("spec", "slug"),
    [
        ("resnet18", "resnet18"),
        ("timm:vit_tiny_patch16_224", "timm-vit_tiny_patch16_224"),
        ("path/to/my models.py:make_net", "make_net"),  # a factory: its function's name
        ("hf:./configs/tiny.json", "hf-.-configs-tiny.json"),
        ("..:", "model"),
    ],
)
def test_a_model_strings_slug_is_safe_in_a_file_name(spec: str, slug: str) -> None:
    assert model_slug(spec) == slug


def test_torchs_fake_tensor_log_is_quiet_inside_the_block_and_as_it_was_after() -> None:
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    assert QUIET_LOGGERS == ("torch._subclasses.fake_tensor", "torch.utils._pytree")
    before = [logger.level for logger in loggers]
    loggers[0].setLevel(logging.INFO)
    try:
        with quiet_fake_tensor_log():
            assert [logger.level for logger in loggers] == [logging.CRITICAL, logging.CRITICAL]
        assert [logger.level for logger in loggers] == [logging.INFO, before[1]]
    finally:
        loggers[0].setLevel(before[0])
