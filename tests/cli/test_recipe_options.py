"""The recipe's options on `profile`, `estimate` and `fit`: parsed once (`with_recipe_options`), stored in the
profile's settings, refused in one line where they do not fit together."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.profile import load_profile
from tests.cli.test_cli import assert_one_line_error

EXAMPLE = str(Path(__file__).parents[2] / "examples" / "custom_model.py")
MLP = [f"{EXAMPLE}:mlp", "--input-shape", "64", "--num-classes", "10"]


def test_estimate_stores_the_recipe_it_was_given(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    result = runner.invoke(app, ["estimate", *MLP, "--target", "cpu", "--batch-sizes", "2", "--layers", "2",
                                 "--adapter", "lora", "--lora-rank", "4", "--lora-alpha", "8",
                                 "--checkpointing", "trainable",
                                 "--optimizer", "sgd-plain", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    settings = load_profile(out).settings
    assert (settings.adapter, settings.adapter_rank, settings.adapter_alpha) == ("lora", 4, 8.0)
    assert settings.adapter_targets == () and settings.checkpointing == "trainable"
    assert settings.optimizer == "sgd-plain" and settings.compile_mode == "eager"
    assert load_profile(out).row(2, 2).recompute_flops is not None


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (["estimate", *MLP, "--compile"], "--compile is measured only"),
        (["fit", *MLP, "--memory", "1GiB", "--compile"], "--compile is measured only"),
        (["estimate", *MLP, "--adapter-targets", "qkv"], "--adapter-layers and --adapter-targets need --adapter lora"),
        (["profile", *MLP, "--adapter-layers", "all"], "--adapter-layers and --adapter-targets need --adapter lora"),
        (["estimate", *MLP, "--adapter", "lora", "--adapter-targets", " , "], "names no module"),
    ],
)
def test_recipe_options_that_do_not_fit_are_one_line(runner: CliRunner, arguments: list[str], fragment: str) -> None:
    assert_one_line_error(runner.invoke(app, arguments), fragment)
