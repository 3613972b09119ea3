"""exporters.py part by part (issue 40's mutation survivors): `ladder --export limits` field by field, the exported
header's note on the training function and on where the batch limits come from, `--objective` at its edges (no
colon, a module, three arguments), the searched batch sizes below 8 and the float-log guard at eta = rungs = 10."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from layerprof.errors import LayerprofError
from layerprof.fidelity.ladder import Ladder
from layerprof.outputs.exporters import batch_sizes, export, library_max_budget, parse_objective
from tests.fidelity.test_ladder import geometric_ladder

MIB = 2**20


def three_rungs() -> Ladder:
    """geometric_ladder(3, 3) with a figure of its own in every field `limits` writes."""
    ladder = geometric_ladder(3, 3)
    figures = [(10, 3, 5 * MIB, 64), (30, None, 7 * MIB, None), (90, 1, 9 * MIB, 16)]
    for rung, (steps, slots, need, limit) in zip(ladder.rungs, figures, strict=True):
        rung.steps, rung.parallel_slots, rung.memory_need_bytes, rung.batch_limit = steps, slots, need, limit
    ladder.gpu_memory_bytes = 80 * 1024 * MIB
    ladder.batch_limits_source = "fit on H100"
    return ladder


def test_the_limits_export_writes_every_rungs_limits() -> None:
    assert json.loads(export(three_rungs(), "limits")) == {
        "schema": "layerprof.limits/1",
        "model": "synthetic",
        "batch_size": 8,
        "eta": 3,
        "gpu_memory_bytes": 80 * 1024 * MIB,
        "max_batch_source": "fit on H100",
        "rungs": [
            {"budget_index": 1, "trainable_layers": 1, "steps": 10, "max_batch_size": 64, "gpu_fraction": 0.3333,
             "memory_need_bytes": 5 * MIB},
            {"budget_index": 3, "trainable_layers": 2, "steps": 30, "max_batch_size": None, "gpu_fraction": 1.0,
             "memory_need_bytes": 7 * MIB},  # no slot count: a whole GPU
            {"budget_index": 9, "trainable_layers": 3, "steps": 90, "max_batch_size": 16, "gpu_fraction": 1.0,
             "memory_need_bytes": 9 * MIB},
        ],
    }  # fmt: skip


def words(text: str) -> str:
    return " ".join(text.split())


def test_the_header_names_the_training_function_and_where_the_batch_limits_come_from(tmp_path: Path) -> None:
    objective = tmp_path / "train.py"
    objective.write_text("def fit(config, trainable_layers, steps, state):\n    return 0.0, None\n")
    ladder = three_rungs()
    stand_in = words(export(ladder, "optuna"))
    assert "Replace `train_and_evaluate` with your training" in stand_in
    assert "largest batch that fits one GPU at that rung (fit on H100)" in stand_in
    own = words(export(ladder, "optuna", f"{objective}:fit"))
    assert f"Training: your {objective}:fit, called as `train_and_evaluate(" in own
    assert "Replace `train_and_evaluate`" not in own
    ladder.batch_limits_source = None
    assert "at that rung (none known: every batch is assumed to fit)" in words(export(ladder, "optuna"))


def test_a_long_objective_path_stays_whole_on_its_line_in_every_export(tmp_path: Path) -> None:
    # A path longer than the 110-column wrap, with hyphens: textwrap's defaults cut it mid-word and at a hyphen
    # (found at a 150-character TMPDIR). Read in the raw text, not word-joined, so a cut path fails here.
    folder = tmp_path / ("run-" + "x" * 60 + "-" + "y" * 60)
    folder.mkdir()
    objective = folder / "my-train.py"
    objective.write_text("def fit(config, trainable_layers, steps, state):\n    return 0.0, None\n")
    for library in ("optuna", "ray", "neps", "smac"):
        lines = export(three_rungs(), library, f"{objective}:fit").splitlines()
        assert any(f"{objective}:fit," in line for line in lines), library


def test_an_objective_is_a_file_or_a_module_and_a_function_of_four_arguments(tmp_path: Path) -> None:
    assert parse_objective("json:loads") == ("json", "loads")  # a module: not imported, found
    for spec in ("train.py", "train.py:", ":fit"):  # no colon, no function, no file
        with pytest.raises(LayerprofError, match=rf"^--objective '{spec}': expected FILE\.py:FUNCTION"):
            parse_objective(spec)
    three = tmp_path / "three.py"
    three.write_text(
        textwrap.dedent(
            """
            def fit(config, trainable_layers, steps):
                return 0.0


            def fit_all(*arguments):
                return 0.0, None
            """
        )
    )
    with pytest.raises(LayerprofError, match=r"fit takes 3 positional argument\(s\); the contract is"):
        parse_objective(f"{three}:fit")
    assert parse_objective(f"{three}:fit_all") == (str(three.resolve()), "fit_all")


def test_searched_batch_sizes_start_at_one_and_the_float_log_guard_holds_at_eta_ten() -> None:
    assert batch_sizes({1: 3}) == [1, 2, 4]  # up to the first power of two above 3
    assert batch_sizes({1: 100, 3: 20}) == [8, 16, 32, 64, 128]
    assert library_max_budget(10, 10) == 10**9 + 1  # log(1e9) / log(10) = 8.999...: one more than 10^9
    assert (library_max_budget(10, 4), library_max_budget(3, 1), library_max_budget(3, 2)) == (1001, 1, 3)
