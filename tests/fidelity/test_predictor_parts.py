"""fidelity/predictor.py part by part (issue 40's mutation survivors): the constants come from the largest
measured GPU's profile, a step is priced with them, its GPU-busy share is the device's part of the step, and a
model this machine cannot build is never traced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from layerprof.devices import gpu_kind
from layerprof.fidelity.plan import ProfileSet
from layerprof.fidelity.predictor import PlanPredictor
from layerprof.predict.timemodel import DevicePeaks, Numerics, TimeModel
from layerprof.profile import load_profile
from tests.predict.test_timemodel import measured_like


def test_a_kind_nobody_measured_is_priced_with_the_largest_measured_gpus_constants(tmp_path: Path) -> None:
    h100 = load_profile(measured_like(tmp_path, "h100", "NVIDIA H100 80GB HBM3", 2.0))  # twice its estimate
    l4 = load_profile(measured_like(tmp_path, "l4", "NVIDIA L4", 3.0))
    predictor = PlanPredictor(ProfileSet("tiny", 2, 9, {"L4": l4, "H100": h100}, None), zs=(1, 5))
    assert predictor.basis == "calibrated on its H100 profile" and predictor.constants is not None
    step_ms, source, busy = predictor(5, gpu_kind("A10G"))
    trace = predictor.trace(5)
    assert trace is not None and set(predictor.traces) == {1, 5}  # both asked zs traced at the first question
    peaks = DevicePeaks.of_gpu(gpu_kind("A10G"))
    default = TimeModel.default(peaks, Numerics.of(h100.environment.numerics))
    predicted = TimeModel(peaks, predictor.constants, default.numerics).predict(trace)
    assert (step_ms, source) == (predicted.step_ms, "predicted for A10G (calibrated on its H100 profile)")
    assert step_ms == pytest.approx(2 * default.predict(trace).step_ms, rel=0.01)  # fitted: the host twice as slow
    assert busy == predicted.device_ms / predicted.step_ms and 0.0 < busy < 1.0


def test_a_model_this_machine_cannot_build_is_never_traced(tmp_path: Path) -> None:
    path = measured_like(tmp_path, "h100", "NVIDIA H100 80GB HBM3", 1.0)
    data = json.loads(path.read_text())
    data["model"]["spec"] = str(tmp_path / "elsewhere.py") + ":make"  # a user factory on another machine
    path.write_text(json.dumps(data))
    predictor = PlanPredictor(ProfileSet("tiny", 2, 9, {"H100": load_profile(path)}, None))
    assert (predictor.traceable, predictor.constants, predictor.basis) == (False, None, "default constants")
    assert predictor(1, gpu_kind("L4")) is None and predictor.traces == {1: None}
    # no measured profile: the estimate is the reference, and its model fails once, when first traced
    estimate_only = PlanPredictor(ProfileSet("tiny", 2, 9, {}, load_profile(path)))
    assert (estimate_only.traceable, estimate_only(1, gpu_kind("L4")), estimate_only.traceable) == (True, None, False)
