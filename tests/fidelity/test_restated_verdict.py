"""The restated verdict of docs/research.md reproduces from the committed studies (benchmarks/results/
fidelity-2026-12-07/): held-out judging on three seeds, the noise floor, and the layer path's device seconds against
continued budget halving, which do not depend on the sampled repeats."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerprof.fidelity import tasks
from layerprof.fidelity.simulate import simulate
from layerprof.profile import load_profile

DATA = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "fidelity-2026-12-07"


@pytest.mark.parametrize(
    ("study", "profile", "floor_rho", "layers_vs_budget", "joint_vs_budget"),
    [
        ("study-pydoc12", "profile-pydoc.json", 0.96, 1.25, 0.65),
        ("study-digits12", "profile-digits.json", 0.89, 1.38, 0.69),
    ],
)
def test_the_committed_studies_give_the_documented_verdict(
    monkeypatch: pytest.MonkeyPatch,
    study: str,
    profile: str,
    floor_rho: float,
    layers_vs_budget: float,
    joint_vs_budget: float,
) -> None:
    monkeypatch.chdir(DATA)  # pydoc-lm's task is pydoc_lm_75.py there
    # that file sets tasks.LM_FULL_STEPS to 75 when imported: put back after the test, for the worker's later tests
    monkeypatch.setattr(tasks, "LM_FULL_STEPS", tasks.LM_FULL_STEPS)
    monkeypatch.syspath_prepend(str(DATA))
    result = simulate(
        DATA / study, eta=3, repeats=60, profile=load_profile(DATA / profile), paths=["layers", "budget", "diagonal"]
    )
    assert (result.configs, result.seeds, result.judge, result.judge_folds) == (12, 3, "held-out", 3)
    assert result.noise_floor is not None and round(result.noise_floor.spearman, 2) == floor_rho
    budget = result.path("budget").continued.successive_halving.gpu_seconds
    layers = result.path("layers").continued.successive_halving.gpu_seconds
    joint = result.path("diagonal").continued.successive_halving.gpu_seconds
    assert (round(layers / budget, 2), round(joint / budget, 2)) == (layers_vs_budget, joint_vs_budget)
