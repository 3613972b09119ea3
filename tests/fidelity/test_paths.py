"""The fidelity-path registry (`fidelity.trials.PATH_KINDS`): one entry per named path, from which `simulate
--paths`, `correlate --continue`, their help and their errors follow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.errors import LayerprofError
from layerprof.fidelity.correlate import plan_chains
from layerprof.fidelity.simulate import simulate
from layerprof.fidelity.trials import CONTINUED_PATHS, PATH_KINDS, PATHS, PROFILE_PATHS, study_paths
from tests.cli.test_cli import assert_one_line_error
from tests.fidelity.test_simulate import NINTH, THIRD, perfect, priced_profile, write_study, write_task

# Every registered path's rungs on a study of z 1, 2, 3 and budgets 1/9, 1/3, 1 whose ladder is z 1, 3: a new
# entry in PATH_KINDS fails the first test until its rungs are written here.
EXPECTED_RUNGS = {
    "layers": [(1, 1.0), (2, 1.0), (3, 1.0)],
    "budget": [(3, NINTH), (3, THIRD), (3, 1.0)],
    "diagonal": [(1, NINTH), (2, THIRD), (3, 1.0)],
    "ladder": [(1, 1.0), (3, 1.0)],
    "ladder-joint": [(1, THIRD), (3, 1.0)],
}
UNKNOWN = "--paths: unknown path 'zigzag'; choose from layers, budget, diagonal, ladder, ladder-joint"


def tiny_study(tmp_path: Path) -> Path:
    """Nine configurations on z 1, 2, 3 x budgets 1/9, 1/3, 1, carrying the ladder z 1, 3 at eta 3."""
    study = write_study(tmp_path / "s", 9, perfect, task=write_task(tmp_path))
    meta = json.loads((study / "study.json").read_text())
    meta["ladders"] = {"3": {"layers": [1, 3], "profile": "synthetic-model", "device": "test"}}
    (study / "study.json").write_text(json.dumps(meta))
    return study


def test_every_registered_path_builds_its_rungs_on_a_tiny_study(tmp_path: Path) -> None:
    assert list(PATH_KINDS) == list(EXPECTED_RUNGS) == list(PATHS)
    result = simulate(tiny_study(tmp_path), eta=3, repeats=3, profile=priced_profile(), paths=list(PATH_KINDS))
    assert [path.name for path in result.paths] == list(EXPECTED_RUNGS)
    for name, rungs in EXPECTED_RUNGS.items():
        path = result.path(name)
        assert path is not None
        assert [(rung.trainable_layers, rung.budget_fraction) for rung in path.rungs] == rungs, name
        assert path.about == PATH_KINDS[name].help


def test_the_flags_of_an_entry_decide_what_simulate_and_correlate_take(tmp_path: Path) -> None:
    assert PROFILE_PATHS == ("ladder", "ladder-joint")
    assert CONTINUED_PATHS == ("budget", "layers", "diagonal")  # the baseline first, as --continue's help says
    # without a profile, simulate replays every path that needs none
    plain = simulate(tiny_study(tmp_path), eta=3, repeats=3)
    assert [path.name for path in plain.paths] == ["layers", "budget", "diagonal"]
    # --continue takes each continuable entry by name and builds its chain over the study's values
    chains = plan_chains(["budget,layers,diagonal"], (1, 2, 3), (NINTH, THIRD, 1.0), 3)
    for name in CONTINUED_PATHS:
        assert tuple(EXPECTED_RUNGS[name]) in chains, name
    with pytest.raises(LayerprofError, match=r"name paths \(budget, layers, diagonal\)"):
        plan_chains(["ladder"], (1, 2, 3), (NINTH, THIRD, 1.0), 3)  # its rungs need a profile


def test_a_path_the_study_cannot_pair_is_left_out_with_a_note() -> None:
    paths, notes = study_paths(PATHS, [1, 2, 3], [1.0], [1, 3])
    assert [path.name for path in paths] == ["layers", "budget", "diagonal", "ladder"]
    assert notes == [
        "ladder-joint left out: the ladder has 2 rung(s) and the study 1 budget fraction(s); it pairs 2 or more "
        "rungs with as many of the largest fractions"
    ]


def test_an_unknown_path_is_refused_with_the_list(tmp_path: Path) -> None:
    with pytest.raises(LayerprofError) as raised:
        study_paths(["layers", "zigzag"], [1, 2, 3], [NINTH, THIRD, 1.0], None)
    assert str(raised.value) == UNKNOWN
    runner = CliRunner()
    result = runner.invoke(app, ["simulate", str(tiny_study(tmp_path)), "--paths", "layers,zigzag"])
    assert_one_line_error(result, UNKNOWN)
    result = runner.invoke(app, ["correlate", "digits", "--continue", "zigzag", "--out", str(tmp_path / "c")])
    assert_one_line_error(
        result, "--continue 'zigzag': name paths (budget, layers, diagonal) or give rungs like 1@0.25,3@0.5,6@1"
    )
