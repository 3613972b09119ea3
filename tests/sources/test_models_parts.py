"""models.py part by part (issue 40's mutation survivors): a build in another dtype casts floating parameters and
buffers (tied weights stay one tensor) and leaves the model training; what a build can show about --unwrap and an
empty parameter; the file-name slug of a MODEL string."""

from __future__ import annotations

import logging
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from layerprof.errors import LayerprofError
from layerprof.sources import models
from layerprof.sources.layers import SplitWarning
from layerprof.sources.models import QUIET_LOGGERS, build_model, model_slug, quiet_fake_tensor_log
from layerprof.sources.names import ModelOptions

FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Tied(nn.Module):
        class Scale(nn.Module):  # a nested class: its qualified name is Tied.Scale
            def forward(self, x):
                return x

        def __init__(self):
            super().__init__()
            self.scaler = Tied.Scale()
            self.embed = nn.Linear(4, 4)
            self.unbiased = nn.Linear(4, 4, bias=False)  # a parameter slot holding None
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
    for held in ("Linear", "Scale", "Tied.Scale"):  # a class it holds, by its name or its qualified name: built
        assert build_model(f"{factory}:make", ModelOptions(input_shape=(4,), unwrap=(held,))).model.training
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


VALUED = textwrap.dedent(
    """
    from torch import nn
    from torch._subclasses.fake_tensor import FakeTensor


    class Valued(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Linear(4, 4)
            self.second = nn.Linear(4, 4)

        def forward(self, x):
            if x.is_meta or isinstance(x, FakeTensor):  # as `.item()` fails there, without torch's slow first guard
                raise RuntimeError("this model reads its input's values")
            return self.second(self.first(x))


    def make():
        return Valued()
    """
)
VALUED_BYTES = 2 * (4 * 4 + 4) * 4  # two Linear(4, 4) in float32


@pytest.mark.parametrize(
    ("free_bytes", "construction"),
    [(4 * VALUED_BYTES, "cpu-trace"), (4 * VALUED_BYTES - 4, "fake"), (None, "fake")],
)
def test_a_model_no_meta_or_fake_trace_can_run_is_traced_on_the_cpu_where_it_fits_a_quarter_of_free_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free_bytes: int | None, construction: str
) -> None:
    (tmp_path / "valued.py").write_text(VALUED)
    monkeypatch.setattr(models, "_free_memory_bytes", lambda: free_bytes)
    options = ModelOptions(input_shape=(4,))
    if construction == "cpu-trace":
        loaded, layers = models.split_without_memory(f"{tmp_path / 'valued.py'}:make", options)
        assert (loaded.construction, loaded.order, loaded.order_reason) == ("cpu-trace", "forward", "")
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loaded, layers = models.split_without_memory(f"{tmp_path / 'valued.py'}:make", options)
        said = [str(w.message) for w in caught if issubclass(w.category, SplitWarning)]
        assert len(said) == 1 and "layers are in registration order" in said[0]  # one warning, not the split's too
        shown = f"0.0 GiB of parameters, {(free_bytes or 0) / 2**30:.1f} GiB free"
        assert loaded.construction == "fake" and loaded.order_reason.endswith(f"({shown})")  # built on fakes
    assert [layer.name for layer in layers] == ["first", "second"]
