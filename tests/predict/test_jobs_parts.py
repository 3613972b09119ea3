"""predict/jobs.py part by part (issue 40's mutation survivors): an estimate job refuses --compile, and resumes an
interrupted estimate at its --out unless told to restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerprof.errors import LayerprofError
from layerprof.parsing import parse_layer_selection
from layerprof.predict.jobs import plan_estimate
from layerprof.profile import SweepSettings, save_profile
from layerprof.sources.models import ModelOptions
from tests.measure.test_resume import estimate_job, factory  # noqa: F401 - the fixture: a stack of 4 Linear(8, 8)


def test_an_estimate_refuses_compile(factory: str, tmp_path: Path) -> None:  # noqa: F811
    settings = SweepSettings((2,), (), target="cpu", compile_mode="default")
    with pytest.raises(LayerprofError, match=r"^--compile is measured only: an estimate traces the eager step"):
        plan_estimate(
            factory, ModelOptions(input_shape=(8,)), settings, parse_layer_selection("all"), tmp_path / "e.json"
        )


def test_an_interrupted_estimate_is_resumed_unless_restarted(factory: str, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "estimate.json"
    profile = estimate_job(factory, out, batch_sizes=(2,)).run()
    profile.complete = False
    profile.rows[-1].status = "unfinished"
    save_profile(profile, out)
    settings = SweepSettings((2,), (), target="cpu")
    resumed = plan_estimate(factory, ModelOptions(input_shape=(8,)), settings, parse_layer_selection("all"), out)
    assert resumed.resume is not None and [row.status for row in resumed.resume.rows][-1] == "unfinished"
    assert estimate_job(factory, out, batch_sizes=(2,), restart=True).resume is None
