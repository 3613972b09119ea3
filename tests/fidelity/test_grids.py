"""Grids for `correlate`: the presets' sizes, the expansion's SGD rule, and every refusal of a grid file."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from layerprof.errors import LayerprofError
from layerprof.fidelity.grids import (
    DEFAULTS,
    GRID_PRESETS,
    HYPERPARAMETERS,
    SearchSpace,
    expand_grid,
    load_grid,
    paper_grid,
    small_grid,
)


def test_every_hyperparameter_has_a_default_and_the_defaults_are_the_papers() -> None:
    assert tuple(DEFAULTS) == HYPERPARAMETERS
    assert DEFAULTS == {
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "optimizer": "adam",
        "beta1": 0.9,
        "beta2": 0.99,
        "warmup_fraction": 0.0,
        "cooldown_fraction": 0.0,
    }


@pytest.mark.parametrize(
    ("task", "preset", "configs"),
    [
        # vision: 3 lr x 4 wd x 3 beta1 x (adam: 3 beta2 + sgd: beta2 dropped) = 108 + 36
        ("digits", paper_grid, 144),
        # language: 3 lr x 4 wd x 1 optimizer x 2 x 2 betas x 3 warm-up x 3 cool-down
        ("pydoc-lm", paper_grid, 432),
        ("digits", small_grid, 12),
        ("pydoc-lm", small_grid, 12),
    ],
)
def test_each_preset_expands_to_its_size(task: str, preset: Callable[[str], SearchSpace], configs: int) -> None:
    space = preset(task)
    assert len(expand_grid(space)) == configs
    assert set(space) <= set(HYPERPARAMETERS)


def test_the_presets_are_the_grid_functions() -> None:
    assert {"small": small_grid, "paper": paper_grid} == GRID_PRESETS


def test_the_language_presets_use_adamw_and_the_vision_ones_adam() -> None:
    assert small_grid("pydoc-lm")["optimizer"] == ["adamw", "sgd"]
    assert small_grid("digits")["optimizer"] == ["adam", "sgd"]
    assert paper_grid("pydoc-lm")["optimizer"] == ["adamw"]
    assert paper_grid("digits")["optimizer"] == ["adam", "sgd"]
    assert "warmup_fraction" in paper_grid("pydoc-lm") and "warmup_fraction" not in paper_grid("digits")


def test_sgd_drops_beta2_and_the_duplicates_it_leaves() -> None:
    space = {"optimizer": ["SGD", "adam"], "beta2": [0.9, 0.99], "learning_rate": [0.1]}
    assert expand_grid(space) == [
        {"learning_rate": 0.1, "optimizer": "SGD"},
        {"beta2": 0.9, "learning_rate": 0.1, "optimizer": "adam"},
        {"beta2": 0.99, "learning_rate": 0.1, "optimizer": "adam"},
    ]


def test_a_grid_without_an_optimizer_keeps_beta2() -> None:
    assert expand_grid({"beta2": [0.9, 0.99]}) == [{"beta2": 0.9}, {"beta2": 0.99}]


def test_grid_files_load_from_json_and_yaml(tmp_path: Path) -> None:
    json_file = tmp_path / "grid.json"
    json_file.write_text('{"learning_rate": [0.001, 0.01], "optimizer": ["adam"]}', encoding="utf-8")
    assert load_grid(json_file, HYPERPARAMETERS) == {"learning_rate": [0.001, 0.01], "optimizer": ["adam"]}
    for suffix in (".yaml", ".yml"):
        yaml_file = tmp_path / f"grid{suffix}"
        yaml_file.write_text("learning_rate: [0.001]\nbeta1: [0.9, 0.95]\n", encoding="utf-8")
        assert load_grid(yaml_file, HYPERPARAMETERS) == {"learning_rate": [0.001], "beta1": [0.9, 0.95]}


def test_a_task_without_known_names_takes_any_hyperparameter(tmp_path: Path) -> None:
    path = tmp_path / "grid.json"
    path.write_text('{"dropout": [0.1]}', encoding="utf-8")
    assert load_grid(path, None) == {"dropout": [0.1]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "does not parse: Expecting property name enclosed in double quotes"),
        ("[1, 2]", "must map hyperparameter names to lists of values"),
        ("{}", "must map hyperparameter names to lists of values"),
        ('{"learning_rate": 0.1}', "'learning_rate' must be a non-empty list of values"),
        ('{"learning_rate": []}', "'learning_rate' must be a non-empty list of values"),
        ('{"dropout": [0.1]}', "unknown hyperparameter 'dropout'; known: learning_rate, weight_decay, optimizer"),
    ],
)
def test_a_bad_grid_file_is_refused_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "grid.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LayerprofError) as raised:
        load_grid(path, HYPERPARAMETERS)
    assert str(raised.value).startswith(f"grid {str(path)!r}")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_missing_grid_file_is_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "missing.json"
    with pytest.raises(LayerprofError) as raised:
        load_grid(path, HYPERPARAMETERS)
    assert str(raised.value) == f"cannot read grid {str(path)!r}: {os.strerror(errno.ENOENT)}"
