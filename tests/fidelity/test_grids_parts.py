"""The grid presets value by value (issue 40, `make mutate` survivors of fidelity/grids.py: the sizes alone let
any value change): the paper's Table 1 spaces for the language and the vision family, and the small slice."""

from __future__ import annotations

from layerprof.fidelity.grids import paper_grid, small_grid


def test_the_paper_grids_hold_table_1s_values() -> None:
    assert paper_grid("pydoc-lm") == {
        "learning_rate": [1e-4, 1e-3, 1e-2],
        "weight_decay": [0.0, 1e-6, 1e-4, 1e-2],
        "optimizer": ["adamw"],
        "beta1": [0.9, 0.95],
        "beta2": [0.95, 0.99],
        "warmup_fraction": [0.05, 0.1, 0.25],
        "cooldown_fraction": [0.1, 0.25, 0.5],
    }
    assert paper_grid("digits") == {
        "learning_rate": [1e-4, 1e-3, 1e-2],
        "weight_decay": [1e-5, 1e-4, 1e-3, 1e-2],
        "optimizer": ["adam", "sgd"],
        "beta1": [0.9, 0.95, 0.99],
        "beta2": [0.9, 0.95, 0.99],
    }


def test_the_small_grid_is_three_rates_two_decays_two_optimizers() -> None:
    assert small_grid("digits") == {
        "learning_rate": [1e-4, 1e-3, 1e-2],
        "weight_decay": [1e-5, 1e-2],
        "optimizer": ["adam", "sgd"],
    }
    assert small_grid("pydoc-lm")["optimizer"] == ["adamw", "sgd"]
