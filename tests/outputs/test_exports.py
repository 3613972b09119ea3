"""Every exported snippet, run as a user runs it against the HPO library's real release: every budget the
library asks for maps onto a ladder rung, one rung per distinct budget, and every rung is asked for; and a
promoted trial continues from its own configuration's state at a lower rung (with CONTINUE), or never.

Optuna, SMAC3 and Ray Tune share layerprof's environment (the dev extra); NePS, whose pins clash with
layerprof's, runs in an environment of its own (tests/hpo/environments.py).
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from layerprof.fidelity.ladder import build_ladder
from layerprof.outputs.exporters import export
from tests.conftest import bare_profile
from tests.fidelity.test_ladder import geometric_ladder
from tests.hpo.environments import EnvironmentUnavailable, python_for

RUNNER = Path(__file__).parents[1] / "hpo" / "snippet_runner.py"


@pytest.fixture(scope="session")
def neps_python() -> Path:
    try:
        return python_for("neps")
    except EnvironmentUnavailable as error:
        pytest.skip(str(error))


def run_snippet(
    python: Path | str, library: str, rung_count: int, tmp_path: Path, continued: bool = True, **arguments: object
) -> dict:
    """The record of budgets asked and training calls, with the run's output under "stdout"."""
    source = export(geometric_ladder(rung_count, 3), library)
    snippet = tmp_path / f"{library}_snippet.py"
    snippet.write_text(source)
    record = tmp_path / "record.json"
    command = [
        str(python),
        str(RUNNER),
        str(snippet),
        str(record),
        *(f"{k}={json.dumps(v)}" for k, v in arguments.items()),
    ]
    environment = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    environment["SNIPPET_CONTINUE"] = "1" if continued else "0"
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=environment)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return {**json.loads(record.read_text()), "stdout": done.stdout}


def assert_budgets_are_the_rungs(record: dict) -> None:
    rungs = {int(index): z for index, z in record["rungs"].items()}
    budgets = sorted({budget for budget, _ in record["asked"]})
    asked_layers = [z for _, z in sorted({(b, z) for b, z in record["asked"]})]
    # one distinct budget per rung, none dropped or merged (243 must not look like less than 3^5)...
    assert len(budgets) == len(rungs), budgets
    # ...each the rung's index or just above it, as top-down libraries compute them...
    for budget, index in zip(budgets, sorted(rungs), strict=True):
        assert index <= budget < index * 3, (budget, index)
    # ...and every rung trained
    assert asked_layers == [rungs[index] for index in sorted(rungs)]


def assert_promotions_continue(record: dict, from_the_rung_below: bool = False) -> list:
    """Some training calls continue, each from a state of the same configuration at a lower rung; the
    continued calls are returned."""
    continued = [call for call in record["trained"] if call[1] is not None]
    assert continued, record["trained"]
    below = dict(itertools.pairwise(sorted(record["rungs"].values())))  # z -> the next z up
    for z, previous, same_configuration in continued:
        assert same_configuration is True and previous < z, (z, previous)
        if from_the_rung_below:
            assert below[previous] == z, (z, previous)
    return continued


@pytest.mark.parametrize(("rung_count", "trials"), [(3, 30), (6, 60)])
def test_optuna_snippet(tmp_path: Path, rung_count: int, trials: int) -> None:
    record = run_snippet(sys.executable, "optuna", rung_count, tmp_path, n_trials=trials)
    assert_budgets_are_the_rungs(record)
    # one objective call per trial, which starts afresh once and continues through every later rung it trains
    continued = assert_promotions_continue(record, from_the_rung_below=True)
    assert len(record["trained"]) - len(continued) == trials


def test_optuna_snippet_restarts_every_rung_without_continue(tmp_path: Path) -> None:
    record = run_snippet(sys.executable, "optuna", 3, tmp_path, continued=False, n_trials=30)
    assert_budgets_are_the_rungs(record)
    assert all(previous is None for _, previous, _ in record["trained"])
    assert len(record["trained"]) > 30  # some trials were promoted, and trained their next rung from scratch


@pytest.mark.parametrize(("rung_count", "trials"), [(3, 40), (6, 370)])
def test_smac_snippet(tmp_path: Path, rung_count: int, trials: int) -> None:
    record = run_snippet(sys.executable, "smac", rung_count, tmp_path, n_trials=trials, output_directory="smac")
    assert_budgets_are_the_rungs(record)
    assert_promotions_continue(record)


@pytest.mark.parametrize(("rung_count", "count"), [(3, 30), (6, 400)])
def test_neps_snippet(tmp_path: Path, neps_python: Path, rung_count: int, count: int) -> None:
    record = run_snippet(neps_python, "neps", rung_count, tmp_path, count=count, root_directory="neps")
    assert_budgets_are_the_rungs(record)
    assert_promotions_continue(record, from_the_rung_below=True)


def test_ray_snippet(tmp_path: Path) -> None:
    """Ray runs the trials in worker processes: the snippet's own report says which rungs it trained, and the
    checkpoints each rung reported say what each trial continued from."""
    output = run_snippet(sys.executable, "ray", 3, tmp_path)["stdout"]
    rungs = re.findall(r"rung budget (\d+): (\d+) trial\(s\) at z=(\d+), (\d+) continued from checkpoints", output)
    assert rungs == [("1", "9", "1", "0"), ("3", "3", "2", "3"), ("9", "1", "3", "1")], output
    states = {
        rung: sorted(
            pickle.loads(path.read_bytes())["continued_from"] or 0
            for path in (tmp_path / "layer_freezing_tune" / f"rung-{rung}").rglob("layer_freezing_state.pkl")
        )
        for rung in (1, 3, 9)
    }
    assert states == {1: [0] * 9, 3: [1, 1, 1], 9: [2]}, states


@pytest.mark.parametrize("rung_count", [3, 5, 6])
def test_configs_table_shows_the_brackets_neps_runs(neps_python: Path, rung_count: int) -> None:
    """The ladder's NePS brackets are NePS's own layout for the exported budget range."""
    costs = {z: 3.0 ** (z - 1) for z in range(1, rung_count + 1)}
    ladder = build_ladder(bare_profile_from(costs), eta=3, configs=27)
    from layerprof.outputs.exporters import library_max_budget

    code = (
        "import json, sys\n"
        "from neps.optimizers.utils.brackets import calculate_hb_bracket_layouts\n"
        f"_, layouts = calculate_hb_bracket_layouts((1, {library_max_budget(3, rung_count)}), 3)\n"
        "print(json.dumps([list(layout.values()) for layout in layouts]))\n"
    )
    done = subprocess.run([str(neps_python), "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    ours = [b.configs_per_rung for b in (ladder.hyperband_neps or ladder.hyperband)]
    assert ours == theirs


def bare_profile_from(costs: dict[int, float]):  # noqa: ANN201
    from layerprof.profile import Row

    rows = [
        Row(8, z, "ok", trainable_params=z, step_time_ms=c, flops=int(c * 1e9), peak_memory_bytes=z)
        for z, c in costs.items()
    ]
    return bare_profile(rows, max(costs))
